"""Local engine: any image-text-to-text model that transformers can load.

Loads through ``AutoProcessor`` / ``AutoModelForImageTextToText`` (LLaVA-OneVision,
LLaVA-1.5, Qwen2.5-VL and whatever else transformers knows), chooses device and dtype, and
generates batches with left padding. The chat template of the model decides how the
conversation is laid out; this engine only supplies images first, then text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from llavaguard.engines.base import Engine, GenerationConfig, VisionRequest
from llavaguard.errors import ConfigError, EngineError, ModelLoadError
from llavaguard.models import family_from_config, resolve_model, spec_for

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


def pick_device(device: str | None = None) -> str:
    """cuda, then mps, then cpu, unless told otherwise."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> Any:
    """bfloat16 on GPUs that have it, float16 on other accelerators, float32 on the CPU."""
    import torch

    if dtype and dtype != "auto":
        try:
            return getattr(torch, _DTYPES[dtype.lower()])
        except KeyError:
            valid = ", ".join(sorted(set(_DTYPES.values())))
            raise ConfigError(f"unknown dtype {dtype!r} (valid: auto, {valid})") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


class TransformersEngine(Engine):
    name: ClassVar[str] = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        token: str | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_id = model
        path = resolve_model(
            model, token=token, revision=revision, local_files_only=local_files_only
        )
        spec = spec_for(model)
        self.family = spec.family if spec else family_from_config(path)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one on stderr

        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        started = time.perf_counter()
        try:
            self.processor = AutoProcessor.from_pretrained(
                path, trust_remote_code=trust_remote_code
            )
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=self.dtype, trust_remote_code=trust_remote_code
            )
        except Exception as e:
            raise ModelLoadError(f"{model}: cannot load ({_one_line(e)})") from e
        self.model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ModelLoadError(f"{model}: its processor has no tokenizer")
        self.tokenizer.padding_side = "left"
        self._torch = torch
        self._grammar_cache: Any = None
        log.info(
            "loaded %s (%s) on %s as %s in %.1fs",
            model, self.family, self.device, str(self.dtype).removeprefix("torch."),
            time.perf_counter() - started,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------
    def _prompt(self, request: VisionRequest) -> str:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": request.system}]}
            )
        content = [{"type": "image"} for _ in request.images]
        content.append({"type": "text", "text": request.text})
        messages.append({"role": "user", "content": content})
        prompt = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return prompt + request.prefix

    def _generation_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        gen = self.model.generation_config
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "num_beams": config.num_beams,
            "do_sample": config.do_sample,
            "pad_token_id": gen.pad_token_id
            if gen.pad_token_id is not None
            else self.tokenizer.pad_token_id,
        }
        if config.do_sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        else:  # clear sampling defaults a model ships, so greedy is greedy and quiet
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        if not requests:
            return []
        config = config or GenerationConfig()
        torch = self._torch
        kwargs = self._generation_kwargs(config)
        try:
            if config.json_schema is not None:
                if config.num_beams > 1:
                    raise EngineError("constrained answers need num_beams=1 (no beam search)")
                kwargs["logits_processor"] = [
                    self._grammars().processor(
                        config.json_schema, [r.prefix for r in requests], config.max_new_tokens
                    )
                ]
            inputs = self._inputs(requests)
            if config.seed is not None:
                torch.manual_seed(config.seed)
            with torch.inference_mode():
                out = self.model.generate(**inputs, **kwargs)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_id}: generation failed ({_one_line(e)})") from e
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _inputs(self, requests: Sequence[VisionRequest]) -> Any:
        texts = [self._prompt(r) for r in requests]
        images = [list(r.images) for r in requests]
        return self.processor(
            images=images if any(images) else None, text=texts, padding=True, return_tensors="pt"
        ).to(self.device, dtype=self.dtype)

    def _grammars(self) -> Any:
        if self._grammar_cache is None:
            from llavaguard.engines.constrain import GrammarCache

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._grammar_cache = GrammarCache(self.tokenizer, vocab)
        return self._grammar_cache

    # ---- scores -------------------------------------------------------------------------
    def _continuation_tokens(self, prefix: str, continuations: Sequence[str]) -> list[list[int]]:
        """Token ids of each continuation as it is tokenized after the prefix.

        Tokenizing prefix+continuation and cutting off the prefix's tokens keeps the
        boundary exactly as the model would see it in a generated answer.
        """
        encode = self.tokenizer.encode
        base = encode(prefix, add_special_tokens=False)
        out = []
        for c in continuations:
            full = encode(prefix + c, add_special_tokens=False)
            ids = (
                full[len(base) :]
                if full[: len(base)] == base
                else encode(c, add_special_tokens=False)
            )
            if not ids:
                raise EngineError(f"continuation {c!r} has no tokens")
            out.append(ids)
        return out

    def score(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[list[float]]:
        """One prefill per request, then every continuation at once on the shared KV cache."""
        try:
            return [self._score_one(r, continuations) for r in requests]
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_id}: scoring failed ({_one_line(e)})") from e

    def _score_one(self, request: VisionRequest, continuations: Sequence[str]) -> list[float]:
        torch = self._torch
        options = self._continuation_tokens(request.prefix, continuations)
        with torch.inference_mode():
            inputs = self._inputs([request])
            length = inputs["input_ids"].shape[1]
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            totals = [first[ids[0]].item() for ids in options]
            longest = max(len(ids) for ids in options)
            if longest == 1:
                return totals
            n = len(options)
            cache = out.past_key_values
            cache.batch_repeat_interleave(n)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor(
                [o + [pad] * (longest - len(o)) for o in options], device=self.device
            )
            positions = torch.arange(length, length + longest, device=self.device)
            extra: dict[str, Any] = {}
            rope_deltas = getattr(getattr(self.model, "model", None), "rope_deltas", None)
            if rope_deltas is not None:  # Qwen-VL multimodal rope: text row + 3 rope rows
                text = positions.view(1, 1, -1).expand(1, n, -1)
                rope = text.expand(3, -1, -1) + rope_deltas.repeat_interleave(n, 0).view(1, n, 1)
                extra["position_ids"] = torch.cat([text, rope], dim=0)
            out2 = self.model(
                input_ids=ids,
                attention_mask=torch.ones(
                    n, length + longest, dtype=torch.long, device=self.device
                ),
                past_key_values=cache,
                cache_position=positions,
                **extra,
            )
            logp = torch.log_softmax(out2.logits.float(), dim=-1)
        for i, o in enumerate(options):
            totals[i] += sum(logp[i, j - 1, o[j]].item() for j in range(1, len(o)))
        return totals

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__
