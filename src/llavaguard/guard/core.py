"""The Guard joins a policy and an engine: images in, assessments out.

It renders the policy, loads the images, asks the engine in batches, and reads the answers.
Whatever goes wrong with one input (an unreadable file, a batch the engine chokes on) ends
up on that input's record; the rest of the batch goes on, and results keep input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, overload

from llavaguard.engines import (
    Engine,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
    generate_isolated,
)
from llavaguard.errors import ConfigError, EngineError, ImageError
from llavaguard.guard.assessment import Assessment
from llavaguard.guard.calibration import Calibration
from llavaguard.guard.scoring import RATINGS, Scores, continuations, scores_from_logprobs
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.images import ImageLimits, fit_pixels, load_image, source_id
from llavaguard.policy import Policy, answer_prefix, parse_answer


@dataclass(frozen=True)
class _Judged:
    """What scoring one image gave: its scores, the engine's handle on the scored prompt
    (for the answer that follows), and with ``multi_label`` P(violates c) per category."""

    scores: Scores
    handle: Scored | None = None
    violations: dict[str, float] | None = None
    raw_score: float | None = None  # P(Unsafe) before calibration, when calibrated


class Mode(StrEnum):
    FULL = "full"  # rating, category, rationale and scores
    TRIAGE = "triage"  # rating, category and scores from forward passes only


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


@dataclass(frozen=True)
class FilterResult:
    """``keep[i]`` says whether ``images[i]`` passed; ``kept`` are those images, in order."""

    keep: list[bool]
    assessments: list[Assessment]
    images: list[Any]

    @property
    def kept(self) -> list[Any]:
        return [img for img, ok in zip(self.images, self.keep, strict=True) if ok]

    @property
    def rejected(self) -> list[Assessment]:
        return [a for a, ok in zip(self.assessments, self.keep, strict=True) if not ok]


class Guard:
    """A safeguard: one engine, a default policy, and how to decode."""

    def __init__(
        self,
        engine: Engine,
        *,
        policy: Policy | str | Path | None = None,
        generation: GenerationConfig | None = None,
        image_limits: ImageLimits | None = None,
        mode: str = "full",
        threshold: float | None = None,
        constrained: bool = True,
        scores: bool = True,
        rationale_max_chars: int = 2000,
        image_max_pixels: int | None = None,
        multi_label: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        """Wrap an engine. Build Guards from options with ``GuardSpec``; this constructor
        takes objects that already exist (an engine, a policy)."""
        self.engine = engine
        try:
            self.mode = Mode(mode)
        except ValueError:
            raise ConfigError(f"unknown mode {mode!r} (valid: full, triage)") from None
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        if self.mode is Mode.TRIAGE and not (
            scores and engine.capabilities.scores is ScoreKind.EXACT
        ):
            raise ConfigError(
                f"triage mode needs rating and category scores, which engine {engine.name} "
                "cannot give"
            )
        if multi_label and not (scores and engine.capabilities.scores is not ScoreKind.NONE):
            raise ConfigError(
                f"--multi-label needs rating scores, which engine {engine.name} cannot give"
            )
        self.multi_label = multi_label
        self.generation = generation or GenerationConfig()
        if constrained and self.generation.num_beams > 1:
            raise ConfigError(
                "constrained answers need num_beams=1; turn constraints off to use beam search"
            )
        self.threshold = threshold
        self.constrained = constrained
        self.scores = scores
        self.rationale_max_chars = rationale_max_chars
        if image_max_pixels is not None and image_max_pixels < 28 * 28:
            raise ConfigError(f"image_max_pixels must be at least 784, got {image_max_pixels}")
        self.image_max_pixels = image_max_pixels
        self.policy = Policy.load(policy)
        self.image_limits = image_limits or ImageLimits()
        self.calibration = calibration
        self.check_calibrated(self.policy)
        if threshold is None and calibration is not None and calibration.threshold is not None:
            self.threshold = calibration.threshold.threshold  # chosen for its target

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, *, engine: str = "transformers", **options: Any
    ) -> Guard:
        """A Guard from a model and keyword options, as the CLI builds one: the spec's fields
        (policy, mode, threshold, ...), decoding (max_new_tokens, ...) and the engine's own
        options (base_url, device, ...) in one call, e.g.
        ``Guard.from_pretrained("m", engine="vllm", base_url="http://127.0.0.1:8000/v1")``.
        An option no part takes is refused by the engine's options, in one line."""
        taken = set(GuardSpec.model_fields) - {"model", "engine", "engine_options", "generation"}
        fields = {k: options.pop(k) for k in list(options) if k in taken}
        decoding = {k: options.pop(k) for k in list(options) if k in GenerationConfig.model_fields}
        if model is not None:
            fields["model"] = model
        spec = GuardSpec(engine=engine, engine_options=options, generation=decoding, **fields)
        return cls.from_spec(spec)

    @classmethod
    def from_spec(cls, spec: GuardSpec, engine: Engine | None = None) -> Guard:
        """The Guard a spec describes: its engine (loaded now, or ``engine`` when one is
        already in memory, e.g. the model being trained) under its policy and settings.
        Every Guard built from options is built here."""
        policy = spec.load_policy()
        loaded = engine is None
        engine = spec.load_engine() if engine is None else engine
        try:
            return cls(
                engine,
                policy=policy,
                generation=spec.generation,
                image_limits=spec.image_limits,
                mode=spec.mode,
                threshold=spec.threshold,
                constrained=spec.constrained,
                scores=spec.scores,
                image_max_pixels=spec.image_max_pixels,
                multi_label=spec.multi_label,
                calibration=Calibration.load(spec.calibration) if spec.calibration else None,
            )
        except Exception:
            if loaded:
                engine.close()
            raise

    @property
    def system_prompt(self) -> str | None:
        """The system prompt the model was trained with (its spec's), if any."""
        spec = self.engine.spec
        return spec.system_prompt if spec is not None else None

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
        self.check_calibrated(active)
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

    def filter(
        self,
        images: Sequence[Any],
        *,
        threshold: float | None = None,
        keep_failed: bool = False,
        **kw: Any,
    ) -> FilterResult:
        """Which images to keep, e.g. after a text-to-image pipeline, and why.

        An image is kept when it is judged Safe (or, with ``threshold``, when P(Unsafe) is
        below it). An image that could not be judged is dropped unless ``keep_failed``:
        a safeguard fails closed. Other keywords go to ``assess`` (policy, allow, ...).
        """
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        assessments = self.assess(list(images), **kw)
        keep = []
        for a in assessments:
            if a.rating is None:
                keep.append(keep_failed)
            elif threshold is not None and a.score is not None:
                keep.append(a.score < threshold)
            else:
                keep.append(a.rating == "Safe")
        return FilterResult(keep=keep, assessments=assessments, images=list(images))

    def resolve_policy(
        self,
        policy: Policy | str | Path | None = None,
        *,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
    ) -> Policy:
        base = self.policy if policy is None else Policy.load(policy)
        return base.with_states(allow=allow, sensitive=sensitive)

    def check_calibrated(self, policy: Policy) -> None:
        """ConfigError when a calibration is applied and ``policy`` is not the one it was
        fitted under: its map means nothing for scores under another prompt."""
        if self.calibration is not None:
            self.calibration.check(self.engine.model_id, policy.id, policy.describe())

    # ------------------------------------------------------------------------------------
    def _load_batch(self, batch: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """(id, image or ImageError) for each input; decoding errors stay with their input."""
        out: list[tuple[str, Any]] = []
        for image_id, src in batch:
            try:
                image = load_image(src, limits=self.image_limits, name=image_id)
                if self.image_max_pixels is not None:
                    image = fit_pixels(image, self.image_max_pixels)
                out.append((image_id, image))
            except ImageError as e:
                out.append((image_id, e))
        return out

    def _assess_loaded(self, loaded: list[tuple[str, Any]], policy: Policy) -> list[Assessment]:
        """Records for a decoded batch, in order: scores first, then the answers."""
        results: dict[int, Assessment] = {
            i: self._record(image_id, policy, error=str(img))
            for i, (image_id, img) in enumerate(loaded)
            if isinstance(img, Exception)
        }
        ok = [i for i in range(len(loaded)) if i not in results]
        base = [
            VisionRequest(text=policy.text, images=(loaded[i][1],), system=self.system_prompt)
            for i in ok
        ]
        to_generate: list[tuple[int, VisionRequest, _Judged | None, str | None]] = []
        for i, request, scored in zip(ok, base, self._scores(base, policy), strict=True):
            image_id = loaded[i][0]
            if isinstance(scored, Exception) and self.mode is Mode.TRIAGE:
                results[i] = self._record(image_id, policy, error=str(scored))
            elif isinstance(scored, Exception):  # the answer is still worth having
                to_generate.append((i, request, None, f"no score: {scored}"))
            elif self.mode is Mode.TRIAGE:
                results[i] = self._triage_record(image_id, policy, scored)
            else:
                score, handle = (scored.scores, scored.handle) if scored else (None, None)
                to_generate.append((i, self._answer_request(request, score, handle), scored, None))
        answers = self._generate([r for _, r, _, _ in to_generate], policy)
        for (i, request, score, unscored), answer in zip(to_generate, answers, strict=True):
            results[i] = self._answer_record(loaded[i][0], policy, request, answer, score, unscored)
        return [results[i] for i in range(len(loaded))]

    def _answer_record(
        self,
        image_id: str,
        policy: Policy,
        request: VisionRequest,
        answer: str | Exception,
        score: _Judged | None,
        unscored: str | None,
    ) -> Assessment:
        if isinstance(answer, Exception):
            return self._record(image_id, policy, error=str(answer))
        record = self._full_record(image_id, policy, request.prefix + answer, score)
        if unscored is not None and record.error is None:
            record = record.model_copy(update={"error": unscored})
        return record

    # ---- scores ----------------------------------------------------------------------------
    def _scores(self, requests: list[VisionRequest], policy: Policy) -> list[Any]:
        """Judged per request (None without scores, or the error the engine raised)."""
        kind = self.engine.capabilities.scores
        if not self.scores or kind is ScoreKind.NONE:
            return [None] * len(requests)
        rated = [replace(r, prefix=answer_prefix()) for r in requests]
        conts = continuations(policy) if kind is ScoreKind.EXACT else list(RATINGS)
        if self.mode is Mode.TRIAGE and len(rated) > 1 and not self.multi_label:
            try:  # no answer follows: one batch
                return [self._judged(policy, s) for s in self.engine.score(rated, conts)]
            except EngineError:
                pass  # find the request at fault: one at a time below
        out: list[Any] = []
        for r in rated:  # the engine prefills once per request anyway; errors stay per image
            try:
                out.append(self._judge_one(r, policy, conts))
            except EngineError as e:
                if self.engine.capabilities.scores is ScoreKind.NONE:  # the server refused
                    return [None] * len(requests)
                out.append(e)
        return out

    def _judge_one(self, request: VisionRequest, policy: Policy, conts: list[str]) -> _Judged:
        """One image's scores; with ``multi_label``, also P(violates c) for each category c
        in force, asked under the policy in which only c is in force, in one engine call
        that shares the image (and the policy text up to where the variants part)."""
        if not self.multi_label:
            (scored,) = self.engine.score([request], conts)
            return self._judged(policy, scored)
        codes = policy.in_force()
        variants = [replace(request, text=policy.only(c).text) for c in codes]
        scored, *asked = self.engine.score_shared(
            [request, *variants], [conts] + [list(RATINGS)] * len(variants)
        )
        violations = {c: scores_from_logprobs(policy, s.logprobs).p_unsafe
                      for c, s in zip(codes, asked, strict=True)}  # fmt: skip
        return self._judged(policy, scored, violations)

    def _judged(
        self, policy: Policy, scored: Scored, violations: dict[str, float] | None = None
    ) -> _Judged:
        """Scores from the engine's log-probabilities, P(Unsafe) calibrated if asked (the
        model's own kept beside it)."""
        scores = scores_from_logprobs(policy, scored.logprobs)
        if self.calibration is None:
            return _Judged(scores, scored, violations)
        calibrated = replace(scores, p_unsafe=self.calibration.apply(scores.p_unsafe))
        return _Judged(calibrated, scored, violations, raw_score=scores.p_unsafe)

    def _decided(self, score: Scores) -> tuple[str, str]:
        rating = score.rating(self.threshold if self.threshold is not None else 0.5)
        return rating, score.best_category(rating)

    def _answer_request(
        self, request: VisionRequest, score: Scores | None, scored: Scored | None
    ) -> VisionRequest:
        """Greedy, constrained and scored: rating and category are the scores' choice (the
        whole-label argmax), and the model writes the rationale for them, continuing from the
        scored prefill where the engine handed one back."""
        greedy = not self.generation.do_sample and self.generation.num_beams == 1
        if score is not None and score.category_scores and self.constrained and greedy:
            prefill = scored.prefill if scored is not None else None
            return replace(request, prefix=answer_prefix(*self._decided(score)), prefill=prefill)
        return request

    # ---- generation ------------------------------------------------------------------------
    def prepare(self, policy: Policy) -> Any:
        """Compile ahead what judging under ``policy`` needs (its answer grammar, when answers
        are constrained), in the calling thread: the server does it before queueing, so a new
        policy holds no batch up. Returns a handle to keep while that work waits."""
        if self.mode is Mode.TRIAGE:  # no answer is generated
            return None
        return self.engine.prepare(self._generation_config(policy))

    def _generation_config(self, policy: Policy) -> GenerationConfig:
        config = self.generation
        if self.constrained:
            schema = policy.answer_schema(self.rationale_max_chars)
            config = config.model_copy(update={"json_schema": schema})
        return config

    def _generate(self, requests: list[VisionRequest], policy: Policy) -> list[str | Exception]:
        """Answers for a batch; if the batch fails, each request is tried alone."""
        if not requests:
            return []
        config = self._generation_config(policy)
        return list(generate_isolated(self.engine, requests, config))

    # ---- records ---------------------------------------------------------------------------
    def _record(self, image_id: str, policy: Policy, **fields: Any) -> Assessment:
        return Assessment(
            image=image_id,
            policy=policy.describe(),
            policy_id=policy.id,
            model=self.engine.model_id,
            engine=self.engine.name,
            mode=self.mode.value,
            **fields,
        )

    def _triage_record(self, image_id: str, policy: Policy, judged: _Judged | None) -> Assessment:
        assert judged is not None  # triage needs scores; checked when the Guard is built
        score = judged.scores
        rating, category = self._decided(score)
        return self._record(
            image_id,
            policy,
            rating=rating,
            category=category,
            score=score.p_unsafe,
            category_scores=score.category_scores[rating],
            violations=judged.violations,
            raw_score=judged.raw_score,
            valid=True,
        )

    def _full_record(
        self, image_id: str, policy: Policy, answer: str, judged: _Judged | None
    ) -> Assessment:
        parsed = parse_answer(answer, policy)
        score = judged.scores if judged is not None else None
        rating = parsed.rating
        if score is not None and self.threshold is not None:
            rating = score.rating(self.threshold)  # the threshold decides, not the text
        fields: dict[str, Any] = {}
        if score is not None:
            fields["score"] = score.p_unsafe
            if rating is not None and score.category_scores is not None:
                fields["category_scores"] = score.category_scores[rating]
            fields["violations"] = judged.violations
            fields["raw_score"] = judged.raw_score
        return self._record(
            image_id,
            policy,
            rating=rating,
            category=parsed.category,
            rationale=parsed.rationale,
            valid=parsed.valid,
            error=parsed.error,
            raw=answer,
            **fields,
        )

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
