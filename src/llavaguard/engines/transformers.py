"""Local engine: any image-text-to-text model that transformers can load.

Loads through ``AutoProcessor`` / ``AutoModelForImageTextToText`` (LLaVA-OneVision,
LLaVA-1.5, Qwen2.5-VL and whatever else transformers knows), chooses device and dtype, and
generates batches with left padding. The chat template of the model decides how the
conversation is laid out; this engine only supplies images first, then text.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import Field, SecretStr

from llavaguard.engines.base import (
    Capabilities,
    Engine,
    EngineOptions,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
    common_length,
)
from llavaguard.errors import ConfigError, EngineError, ModelLoadError
from llavaguard.models import ModelSpec, describe_model, resolve_model

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
    """bfloat16 on GPUs and CPUs that have it, float16 on other accelerators, else float32."""
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
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them bf16
    runs emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


_MIXED_ATTENTION = "llavaguard_sdpa"


def use_float32_decode_attention(model: Any) -> bool:
    """Run single-token (decoding) attention of the language model in float32.

    On CPUs PyTorch's bfloat16 attention kernel runs far below the matmul peak; for one query
    token the float32 kernel is faster and the answer is unchanged (it is computed in higher
    precision). Prefill stays in bfloat16. Registered through transformers' AttentionInterface.
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module: Any, query: Any, key: Any, value: Any, mask: Any, **kw: Any) -> Any:
        if query.shape[2] == 1 and query.dtype == torch.bfloat16:
            out, weights = sdpa_attention_forward(
                module, query.float(), key.float(), value.float(), mask, **kw
            )
            return out.to(query.dtype), weights
        return sdpa_attention_forward(module, query, key, value, mask, **kw)

    text = model.config.get_text_config()
    current = getattr(text, "_attn_implementation", None)
    if current == _MIXED_ATTENTION:
        return True
    if current != "sdpa":
        return False
    AttentionInterface.register(_MIXED_ATTENTION, attention)
    AttentionMaskInterface.register(_MIXED_ATTENTION, sdpa_mask)
    if text is model.config:
        model.set_attn_implementation(_MIXED_ATTENTION)
    else:
        model.set_attn_implementation({"text_config": _MIXED_ATTENTION})
    return True


class TransformersOptions(EngineOptions):
    """How to load a model with transformers."""

    device: str | None = Field(None, description="cuda, mps, cpu (default: the best there is).")
    dtype: str | None = Field(
        None, description="float32, bfloat16, float16 (default: by device; auto the same)."
    )
    token: SecretStr | None = Field(None, description="Hub token for gated weights.")
    revision: str | None = Field(None, description="Hub revision (branch, tag, commit).")
    local_files_only: bool | None = Field(None, description="Never download (default: HF env).")
    trust_remote_code: bool = Field(False, description="Run a model repository's own code.")


class TransformersEngine(Engine):
    name: ClassVar[str] = "transformers"
    Options: ClassVar[type[EngineOptions]] = TransformersOptions

    def __init__(self, model: Any, processor: Any, spec: ModelSpec) -> None:
        """An engine over a model already in memory, used as it is, on its own device and
        dtype (``load`` reads one from disk; training wraps the model it is training)."""
        self.model_id, self.spec = spec.id, spec
        self.family = spec.family
        self.model, self.processor = model, processor
        first = next(model.parameters())
        self.device, self.dtype = str(first.device), first.dtype
        self._attach()

    @classmethod
    def load(cls, model: str, options: EngineOptions | None = None) -> Self:
        opts = TransformersOptions.model_validate(options or {}, from_attributes=True)
        token = opts.token.get_secret_value() if opts.token else None
        path = resolve_model(
            model, token=token, revision=opts.revision, local_files_only=opts.local_files_only
        )
        spec = describe_model(model, path)
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one on stderr
        device = pick_device(opts.device)
        dtype = pick_dtype(device, opts.dtype)
        started = time.perf_counter()
        try:
            processor = AutoProcessor.from_pretrained(
                path, trust_remote_code=opts.trust_remote_code
            )
            loaded = AutoModelForImageTextToText.from_pretrained(
                path, dtype=dtype, trust_remote_code=opts.trust_remote_code
            )
        except Exception as e:
            raise ModelLoadError(f"{model}: cannot load ({_one_line(e)})") from e
        engine = cls(loaded.to(device), processor, spec)
        log.info(
            "loaded %s (%s) on %s as %s in %.1fs",
            model, spec.family, device, str(dtype).removeprefix("torch."),
            time.perf_counter() - started,
        )  # fmt: skip
        return engine

    def _attach(self) -> None:
        """Put the model in inference shape and find what this transformers calls things."""
        import torch

        self.model.eval()
        if self.device == "cpu" and self.dtype == torch.bfloat16:
            use_float32_decode_attention(self.model)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.model_id}: its processor has no tokenizer")
        self.tokenizer.padding_side = "left"
        self._torch = torch
        # transformers 5.2x renamed past_key_values to cache (the old name warns); take
        # whichever name this version's model takes (a PEFT wrapper hides it: look inside)
        inner = getattr(self.model, "get_base_model", lambda: self.model)()
        takes = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in takes else "past_key_values"
        self._grammar_cache: Any = None
        self._grammar_lock = threading.Lock()
        # batched prefill pays on accelerators only (see score())
        self.capabilities = Capabilities(
            scores=ScoreKind.EXACT, batch_prefill=self.device != "cpu", top_logprobs=True
        )
        self.generated_tokens = 0  # a running count, for benchmarks

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
            # with a grammar, the processor holds the answer open instead (see constrain.py)
            "min_new_tokens": None if config.json_schema else config.min_new_tokens,
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
        if (
            len(requests) > 1
            and self.device == "cpu"
            and all(r.prefill is not None for r in requests)
        ):
            # On a CPU, skipping each prefill saves more than batching the decode steps does.
            return [text for r in requests for text in self.generate([r], config)]
        torch = self._torch
        kwargs = self._generation_kwargs(config)
        try:
            if config.json_schema is not None:
                if config.num_beams > 1:
                    raise EngineError("constrained answers need num_beams=1 (no beam search)")
                kwargs["logits_processor"] = [
                    self._grammars().processor(
                        config.json_schema,
                        [r.prefix for r in requests],
                        config.max_new_tokens,
                        config.min_new_tokens or 0,
                    )
                ]
            inputs = self._inputs(requests)
            cache = _reusable(requests[0], inputs) if len(requests) == 1 else None
            if cache is not None:  # the image and policy are already in the cache
                inputs = {
                    "input_ids": inputs["input_ids"],
                    "attention_mask": inputs["attention_mask"],
                }
                kwargs[self._cache_kw] = cache
            if config.seed is not None:
                torch.manual_seed(config.seed)
            with torch.inference_mode():
                out = self.model.generate(**inputs, **kwargs)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_id}: generation failed ({_one_line(e)})") from e
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        pad = kwargs["pad_token_id"]
        self.generated_tokens += (
            int((new_tokens != pad).sum()) if pad is not None else new_tokens.numel()
        )
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _inputs(self, requests: Sequence[VisionRequest]) -> Any:
        texts = [self._prompt(r) for r in requests]
        images = [list(r.images) for r in requests]
        return self.processor(
            images=images if any(images) else None, text=texts, padding=True, return_tensors="pt"
        ).to(self.device, dtype=self.dtype)

    def _grammars(self) -> Any:
        with self._grammar_lock:  # built once, whichever thread asks first
            if self._grammar_cache is None:
                from llavaguard.engines.constrain import GrammarCache

                vocab = self.model.get_output_embeddings().weight.shape[0]
                self._grammar_cache = GrammarCache(self.tokenizer, vocab)
        return self._grammar_cache

    def prepare(self, config: GenerationConfig) -> Any:
        """The compiled grammar of ``config.json_schema`` (None without one), compiled here
        rather than in the model's thread."""
        if config.json_schema is None:
            return None
        return self._grammars().compile(config.json_schema)

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
    ) -> list[Scored]:
        """One prefill per request, then every continuation at once on the shared KV cache.

        One request is prefilled alone and its cache handed back (``Scored.prefill``) for the
        answer that follows; several are prefilled as one left-padded batch (triage: no answer
        follows) where that pays (``capabilities.batch_prefill``: accelerators). On a CPU a
        long prefill is compute-bound at batch 1 already, and padding rows to the longest makes
        a batch slower than its parts (measured: 0.7x on the 0.5B architecture), so there
        requests go one at a time.
        """
        try:
            if len(requests) > 1 and self.capabilities.batch_prefill:
                return [Scored(row) for row in self._score_batch(requests, continuations)]
            return [self._score_one(r, continuations) for r in requests]
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_id}: scoring failed ({_one_line(e)})") from e

    def _score_one(self, request: VisionRequest, continuations: Sequence[str]) -> Scored:
        """Prefill once; then every continuation in one more forward pass, as a token tree.

        Continuations that start with the same token usually share more (the rating, then
        '",\n    "category": "'): each group's shared tokens appear once, followed by every
        member's own tail, all in one sequence on the same KV cache. A 4D attention mask lets
        each token see the prompt, its group's shared tokens and its own tail only, so no
        cache is copied per continuation.
        """
        torch = self._torch
        options = self._continuation_tokens(request.prefix, continuations)
        with torch.inference_mode():
            inputs = self._inputs([request])
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            cache = getattr(out, self._cache_kw)
            prefill = _Prefill(request.prefix, inputs["input_ids"], inputs.get("pixel_values"),
                               copy.deepcopy(cache))  # fmt: skip
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            totals = [first[o[0]].item() for o in options]
            multi = [i for i, o in enumerate(options) if len(o) > 1]
            if not multi:
                return Scored(totals, prefill)
            tree = _TokenTree(options, multi)
            logp = self._extend_tree(cache, tree, inputs["attention_mask"])[0]
        for i, targets in tree.targets.items():
            totals[i] += sum(logp[pos, tok].item() for pos, tok in targets)
        return Scored(totals, prefill)

    def _score_batch(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[list[float]]:
        torch = self._torch
        prefixes = {r.prefix for r in requests}
        if len(prefixes) > 1:  # continuations are tokenized after the prefix: one at a time
            return [self._score_one(r, continuations).logprobs for r in requests]
        options = self._continuation_tokens(requests[0].prefix, continuations)
        with torch.inference_mode():
            inputs = self._inputs(requests)
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            totals = [[row[o[0]].item() for o in options] for row in first]
            multi = [i for i, o in enumerate(options) if len(o) > 1]
            if not multi:
                return totals
            tree = _TokenTree(options, multi)
            logp = self._extend_tree(getattr(out, self._cache_kw), tree, inputs["attention_mask"])
        for b, row in enumerate(totals):
            for i, targets in tree.targets.items():
                row[i] += sum(logp[b, pos, tok].item() for pos, tok in targets)
        return totals

    def score_shared(
        self, requests: Sequence[VisionRequest], continuations: Sequence[Sequence[str]]
    ) -> list[Scored]:
        """Prefill what the requests share (the image and the policy text up to where they
        part) once, then walk the rest as a prefix tree on the same cache
        (``engines.prefix_tree``). The first request's prefill is handed back."""
        if len(requests) < 2:
            return super().score_shared(requests, continuations)
        try:
            return self._score_shared(requests, continuations)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"{self.model_id}: scoring failed ({_one_line(e)})") from e

    def _score_shared(
        self, requests: Sequence[VisionRequest], continuations: Sequence[Sequence[str]]
    ) -> list[Scored]:
        from llavaguard.engines.prefix_tree import PrefixTree, Walk

        torch = self._torch
        shared = self._shared_ids(requests)
        if shared is None:  # nothing worth sharing: each prompt on its own
            pairs = zip(requests, continuations, strict=True)
            return [self._score_one(r, list(c)) for r, c in pairs]
        inputs, ids = shared
        start = min(common_length(ids), min(len(i) for i in ids) - 1)
        tree, spans = PrefixTree(), []
        for k, (request, conts) in enumerate(zip(requests, continuations, strict=True)):
            suffix = ids[k][start:]
            options = self._continuation_tokens(request.prefix, conts)
            keep_at = len(suffix) if k == 0 else None
            spans.append([tree.add(suffix + o, len(suffix), keep_at) for o in options])
        with torch.inference_mode():
            width = inputs["input_ids"].shape
            head = {key: v[:, :start] if _per_token(v, width) else v for key, v in inputs.items()}
            out = self.model(**head, use_cache=True, logits_to_keep=1)
            cache = getattr(out, self._cache_kw)
            walk = Walk(
                forward=lambda tokens, at, keep: self._forward_run(cache, tokens, at, keep),
                cut=lambda n: _cut(cache, n),
                copy=lambda n: _cut(copy.deepcopy(cache), n),
            )
            totals = walk.run(tree, start, torch.log_softmax(out.logits[0, -1].float(), -1))
        self.shared_tokens = (start, walk.forwarded)  # what was computed, for benchmarks
        first = _Prefill(requests[0].prefix, inputs["input_ids"], inputs.get("pixel_values"),
                         walk.kept[0])  # fmt: skip
        return [
            Scored([totals[s] for s in span], first if k == 0 else None)
            for k, span in enumerate(spans)
        ]

    def _shared_ids(self, requests: Sequence[VisionRequest]) -> tuple[Any, list[list[int]]] | None:
        """The processor's inputs of the first request and every request's token ids as
        the processor would give them (image placeholders expanded), without preparing the
        image again for each; None unless all share their images and part after them."""
        first = requests[0]
        if any(r.system != first.system or not _same_images(r, first) for r in requests):
            return None
        inputs = self._inputs([first])
        expanded = inputs["input_ids"][0].tolist()
        plain = [self.tokenizer(self._prompt(r))["input_ids"] for r in requests]
        common = common_length(plain)
        extra = len(expanded) - len(plain[0])
        image = getattr(self.model.config, "image_token_id", None)
        marks = [j for j, t in enumerate(plain[0]) if t == image]
        if (first.images and not marks) or (marks and marks[-1] >= common) or extra < 0:
            return None
        if expanded[extra + common :] != plain[0][common:]:
            return None  # the processor tokenizes differently: do not guess
        return inputs, [expanded[: extra + common] + p[common:] for p in plain]

    def _forward_run(self, cache: Any, tokens: list[int], start: int, keep: int) -> Any:
        """One run of new tokens on the cache at ``start``; log-probabilities after its last
        ``keep`` tokens."""
        torch = self._torch
        n = len(tokens)
        text = torch.arange(start, start + n, device=self.device).view(1, 1, n)
        deltas = getattr(getattr(self.model, "model", None), "rope_deltas", None)
        pos = (
            text[0]
            if deltas is None
            else torch.cat([text, text.expand(3, -1, -1) + deltas.view(1, -1, 1)[:, :1]], 0)
        )  # Qwen-VL: a text row and 3 rope rows, shifted as in generation
        out = self.model(
            input_ids=torch.tensor([tokens], device=self.device),
            position_ids=pos,
            cache_position=torch.arange(start, start + n, device=self.device),
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_kw: cache},
        )
        return torch.log_softmax(out.logits[0].float(), dim=-1)

    def top_logprobs(
        self, requests: Sequence[VisionRequest], k: int
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely next tokens after each request's prompt and prefix, with
        their log-probabilities: what an OpenAI-style ``top_logprobs`` reports for one
        position. One prefill per request (see ``score`` for why not a batch on CPUs)."""
        return [self._top_one(r, k) for r in requests]

    def _top_one(self, request: VisionRequest, k: int) -> list[tuple[str, float]]:
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self.model(**self._inputs([request]), logits_to_keep=1)
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                values, ids = logp.topk(max(1, min(k, logp.shape[-1])))
        except Exception as e:
            raise EngineError(f"{self.model_id}: scoring failed ({_one_line(e)})") from e
        return [
            (self.tokenizer.decode([i]), v)
            for i, v in zip(ids.tolist(), values.tolist(), strict=True)
        ]

    def _extend_tree(self, cache: Any, tree: _TokenTree, attention_mask: Any) -> Any:
        """One forward over the tree's tokens for every row of a (left-padded) batch;
        log-probabilities after each of them, [rows, tree tokens, vocab]."""
        torch = self._torch
        rows, width = attention_mask.shape
        n = len(tree.tokens)
        ids = torch.tensor([tree.tokens] * rows, device=self.device)
        mask = torch.zeros(rows, 1, n, width + n, dtype=torch.bool, device=self.device)
        mask[:, 0, :, :width] = attention_mask.bool()[:, None, :]
        for i, seen in enumerate(tree.visible):
            mask[:, 0, i, [width + j for j in seen]] = True
        # positions continue the prefill's: a plain forward places a left-padded row's tokens
        # after its padding, while Qwen-VL's multimodal rope counts real tokens only and
        # shifts them by its rope deltas
        depths = torch.tensor(tree.depths, device=self.device).view(1, -1)
        rope_deltas = getattr(getattr(self.model, "model", None), "rope_deltas", None)
        if rope_deltas is None:
            pos = (width + depths).expand(rows, -1)
        else:  # a text row and 3 rope rows
            text = (attention_mask.long().sum(-1, keepdim=True) + depths).view(1, rows, n)
            shift = rope_deltas.view(1, -1, 1)[:, :rows]
            pos = torch.cat([text, text.expand(3, -1, -1) + shift], 0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache_position=torch.arange(width, width + n, device=self.device),
            **{self._cache_kw: cache},
        )
        return torch.log_softmax(out.logits.float(), dim=-1)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


@dataclass(frozen=True)
class _Prefill:
    """A scored prompt's KV cache, handed to the caller by ``score`` and back by the request
    that continues it; checked against the request's tokens and pixels before it is used
    (image placeholders are the same tokens for any image of one size)."""

    prefix: str
    input_ids: Any
    pixel_values: Any
    cache: Any


def _reusable(request: VisionRequest, inputs: Any) -> Any:
    """The cache of the prefill this request carries, when it is one of this very prompt
    (same tokens and pixels, the answer continuing the scored prefix); None otherwise."""
    handle = request.prefill
    if not isinstance(handle, _Prefill):
        return None
    input_ids = inputs["input_ids"]
    n = handle.input_ids.shape[1]
    if not request.prefix.startswith(handle.prefix) or input_ids.shape[1] <= n:
        return None
    if not bool((input_ids[:, :n] == handle.input_ids).all()):
        return None
    pixels = inputs.get("pixel_values")
    same = (pixels is None) == (handle.pixel_values is None) and (
        pixels is None
        or (
            pixels.shape == handle.pixel_values.shape
            and bool((pixels == handle.pixel_values).all())
        )
    )
    return copy.deepcopy(handle.cache) if same else None  # generation extends it in place


def _same_images(a: VisionRequest, b: VisionRequest) -> bool:
    return len(a.images) == len(b.images) and all(
        x is y for x, y in zip(a.images, b.images, strict=True)
    )


def _per_token(value: Any, shape: Any) -> bool:
    """A tensor with one entry per prompt token (ids, mask, token types)."""
    return hasattr(value, "shape") and value.dim() >= 2 and value.shape[:2] == shape


def _cut(cache: Any, n: int) -> Any:
    """The cache cut back to its first ``n`` tokens (in place), returned."""
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)
    return cache


class _TokenTree:
    """Continuations laid out as one token sequence: per first token, the group's shared
    tokens once, then each member's tail. ``visible[i]`` lists the new tokens token i may
    attend to; ``targets[k]`` the (position, token) pairs whose log-probabilities add up to
    continuation k after its first token."""

    def __init__(self, options: list[list[int]], multi: list[int]) -> None:
        groups: dict[int, list[int]] = {}
        for i in multi:
            groups.setdefault(options[i][0], []).append(i)
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self.visible: list[list[int]] = []
        self.targets: dict[int, list[tuple[int, int]]] = {}
        for first_token, members in groups.items():
            shared = common_length([options[i][1:] for i in members])
            head = [first_token, *options[members[0]][1 : 1 + shared]]
            head_at = [self._add(tok, depth, []) for depth, tok in enumerate(head)]
            for j in range(1, len(head_at)):
                self.visible[head_at[j]] = head_at[: j + 1]
            self.visible[head_at[0]] = head_at[:1]
            for i in members:
                o = options[i]
                targets = [(head_at[j], o[j + 1]) for j in range(shared)]
                tail = o[1 + shared :]
                if tail:
                    targets.append((head_at[-1], tail[0]))
                seen = list(head_at)
                for j, tok in enumerate(tail[:-1]):
                    at = self._add(tok, len(head) + j, [])
                    seen = [*seen, at]
                    self.visible[at] = seen
                    targets.append((at, tail[j + 1]))
                self.targets[i] = targets

    def _add(self, token: int, depth: int, visible: list[int]) -> int:
        self.tokens.append(token)
        self.depths.append(depth)
        self.visible.append(visible)
        return len(self.tokens) - 1


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__
