"""The Guard joins a policy and an engine: images in, assessments out.

It renders the policy, loads the images, asks the engine in batches, and reads the answers.
Whatever goes wrong with one input (an unreadable file, a batch the engine chokes on) ends
up on that input's record; the rest of the batch goes on, and results keep input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, overload

from llavaguard.assessment import Assessment
from llavaguard.engines import Engine, GenerationConfig, VisionRequest, load_engine
from llavaguard.errors import ConfigError, EngineError, ImageError
from llavaguard.images import ImageLimits, load_image, source_id
from llavaguard.models import DEFAULT_MODEL, spec_for
from llavaguard.policy import Policy, parse_answer

_AUTO: Any = object()


def _numbered(images: Iterable[Any], ids: Iterable[str] | None) -> Iterator[tuple[str, Any]]:
    if ids is None:
        yield from ((source_id(src, i), src) for i, src in enumerate(images))
        return
    id_iter = iter(ids)
    for src in images:
        image_id = next(id_iter, None)
        if image_id is None:
            raise ConfigError("fewer ids than images")
        yield str(image_id), src


def _is_single(images: Any) -> bool:
    return isinstance(images, str | bytes | os.PathLike) or hasattr(images, "getpixel")


class Guard:
    """A safeguard: one engine, a default policy, and how to decode."""

    def __init__(
        self,
        engine: Engine,
        *,
        policy: Policy | str | Path | None = None,
        generation: GenerationConfig | None = None,
        system_prompt: str | None = _AUTO,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.engine = engine
        self.policy = Policy.load(policy)
        self.generation = generation or GenerationConfig()
        if system_prompt is _AUTO:
            spec = spec_for(engine.model_id)
            system_prompt = spec.system_prompt if spec else None
        self.system_prompt = system_prompt
        self.image_limits = image_limits or ImageLimits()

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        engine: str = "transformers",
        policy: Policy | str | Path | None = None,
        generation: GenerationConfig | None = None,
        system_prompt: str | None = _AUTO,
        image_limits: ImageLimits | None = None,
        **engine_options: Any,
    ) -> Guard:
        """Load a model (hub id or folder) into the named engine and wrap it."""
        return cls(
            load_engine(engine, model, **engine_options),
            policy=policy,
            generation=generation,
            system_prompt=system_prompt,
            image_limits=image_limits,
        )

    # ------------------------------------------------------------------------------------
    @overload
    def assess(self, images: Sequence[Any], **kw: Any) -> list[Assessment]: ...
    @overload
    def assess(self, images: Any, **kw: Any) -> Assessment: ...

    def assess(
        self,
        images: Any,
        *,
        policy: Policy | str | Path | None = None,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
        batch_size: int = 8,
        ids: Iterable[str] | None = None,
    ) -> Assessment | list[Assessment]:
        """Judge one image (returns one Assessment) or a sequence (returns a list, in order)."""
        single = _is_single(images)
        results = list(
            self.assess_iter(
                [images] if single else images,
                policy=policy,
                allow=allow,
                sensitive=sensitive,
                batch_size=batch_size,
                ids=ids,
            )
        )
        return results[0] if single else results

    def assess_iter(
        self,
        images: Iterable[Any],
        *,
        policy: Policy | str | Path | None = None,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
        batch_size: int = 8,
        ids: Iterable[str] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[Assessment]:
        """Stream assessments in input order; images are decoded a batch ahead of the model."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        active = self.resolve_policy(policy, allow=allow, sensitive=sensitive)
        numbered = _numbered(images, ids)
        batches = iter(lambda: list(islice(numbered, batch_size)), [])
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llavaguard-images") as pool:
            pending = pool.submit(self._load_batch, next(batches, []))
            while True:
                loaded = pending.result()
                if not loaded:
                    return
                pending = pool.submit(self._load_batch, next(batches, []))
                yield from self._assess_loaded(loaded, active)
                if on_batch is not None:
                    on_batch(len(loaded))

    def resolve_policy(
        self,
        policy: Policy | str | Path | None = None,
        *,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
    ) -> Policy:
        base = self.policy if policy is None else Policy.load(policy)
        return base.with_states(allow=allow, sensitive=sensitive)

    # ------------------------------------------------------------------------------------
    def _load_batch(self, batch: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """(id, image or ImageError) for each input; decoding errors stay with their input."""
        out: list[tuple[str, Any]] = []
        for image_id, src in batch:
            try:
                out.append((image_id, load_image(src, limits=self.image_limits, name=image_id)))
            except ImageError as e:
                out.append((image_id, e))
        return out

    def _assess_loaded(self, loaded: list[tuple[str, Any]], policy: Policy) -> list[Assessment]:
        ok = [(i, img) for i, (_, img) in enumerate(loaded) if not isinstance(img, Exception)]
        requests = [
            VisionRequest(text=policy.text, images=(img,), system=self.system_prompt)
            for _, img in ok
        ]
        answers: dict[int, str | Exception] = dict(
            zip([i for i, _ in ok], self._generate(requests), strict=True)
        )
        results = []
        for i, (image_id, img) in enumerate(loaded):
            outcome: Any = img if isinstance(img, Exception) else answers[i]
            results.append(self._record(image_id, outcome, policy))
        return results

    def _generate(self, requests: list[VisionRequest]) -> list[str | Exception]:
        """Answers for a batch; if the batch fails, each request is tried alone."""
        if not requests:
            return []
        try:
            return list(self.engine.generate(requests, self.generation))
        except EngineError as e:
            if len(requests) == 1:
                return [e]
        out: list[str | Exception] = []
        for r in requests:
            try:
                out.extend(self.engine.generate([r], self.generation))
            except EngineError as e:
                out.append(e)
        return out

    def _record(self, image_id: str, outcome: str | Exception, policy: Policy) -> Assessment:
        common = {
            "image": image_id,
            "policy": policy.describe(),
            "policy_id": policy.id,
            "model": self.engine.model_id,
            "engine": self.engine.name,
        }
        if isinstance(outcome, Exception):
            return Assessment(**common, error=str(outcome))
        parsed = parse_answer(outcome, policy)
        return Assessment(
            **common,
            rating=parsed.rating,
            category=parsed.category,
            rationale=parsed.rationale,
            valid=parsed.valid,
            error=parsed.error,
            raw=outcome,
        )

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
