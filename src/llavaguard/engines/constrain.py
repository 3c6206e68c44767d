"""JSON-schema constrained decoding for the local engine, on xgrammar.

Why xgrammar: it compiles a JSON schema for a tokenizer in milliseconds, masks logits on the
CPU at well under a millisecond a step, accepts a forced answer prefix, and lays the JSON out
with a fixed indent, so constrained answers look exactly like the training targets
(``json.dumps(..., indent=4)``). outlines took seconds on its first call in a process and
lm-format-enforcer does not work with transformers 5 (see docs/scores.md).
"""

from __future__ import annotations

import json
from typing import Any


class GrammarCache:
    """Compiled grammars per schema, for one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info)
        self._compiled: dict[str, Any] = {}

    def processor(
        self,
        schema: dict[str, Any],
        prefixes: list[str],
        max_new_tokens: int,
        min_new_tokens: int = 0,
    ) -> JsonLogitsProcessor:
        key = json.dumps(schema)  # property order matters: it is the order of the keys
        if key not in self._compiled:
            self._compiled[key] = self.compiler.compile_json_schema(
                key, any_whitespace=False, indent=4, separators=(",", ": ")
            )
        return JsonLogitsProcessor(
            self._xgr,
            self._compiled[key],
            self.info,
            prefixes,
            max_new_tokens,
            self._closers(),
            min_new_tokens,
        )

    def _closers(self) -> tuple[Any, Any]:
        """Token masks: text starting with a double quote (ends a string at once), and text
        containing one anywhere (may end a string)."""
        if not hasattr(self, "_closing"):
            import torch

            vocab = list(self.info.decoded_vocab)
            vocab += [b""] * (self.info.vocab_size - len(vocab))
            vocab = vocab[: self.info.vocab_size]
            self._closing = (
                torch.tensor([t[:1] == b'"' for t in vocab]),
                torch.tensor([b'"' in t for t in vocab]),
            )
        return self._closing


class JsonLogitsProcessor:
    """A transformers logits processor that only lets schema-valid tokens through.

    Each row starts its matcher from that row's forced prefix (the text already placed after
    the generation prompt), then follows the tokens the model picks. In the last few steps of
    the token budget an open string is closed as soon as the grammar allows, so an answer
    that would run out of tokens still ends as valid JSON; with ``min_new_tokens`` strings
    are kept open until then (fixed-length runs for benchmarks).
    """

    RESERVE = 8  # tokens kept for closing the rationale, the object and the turn

    def __init__(
        self,
        xgr: Any,
        compiled: Any,
        info: Any,
        prefixes: list[str],
        max_new_tokens: int,
        closers: Any,
        min_new_tokens: int = 0,
    ) -> None:
        self.xgr = xgr
        self.closing_from = max(0, max_new_tokens - self.RESERVE)
        self.open_until = min(self.closing_from, max(0, min_new_tokens - self.RESERVE))
        self.closers = closers
        self.step = 0
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in prefixes]
        for matcher, prefix in zip(self.matchers, prefixes, strict=True):
            if prefix and not matcher.accept_string(prefix):
                raise ValueError(f"forced prefix does not fit the schema: {prefix!r}")
        self.bitmask = xgr.allocate_token_bitmask(len(prefixes), info.vocab_size)
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        rows = input_ids.shape[0]
        if rows != len(self.matchers):
            raise ValueError("constrained decoding supports one sequence per request (no beams)")
        for i, matcher in enumerate(self.matchers):
            if self.started and not matcher.is_terminated():
                matcher.accept_token(int(input_ids[i, -1]))
            if matcher.is_terminated():
                self.bitmask[i].fill_(-1)  # finished rows are padded by generate anyway
            else:
                matcher.fill_next_token_bitmask(self.bitmask, i)
        self.started = True
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        if self.step >= self.closing_from or self.step < self.open_until:
            starts, contains = (m.to(scores.device)[: scores.shape[1]] for m in self.closers)
            keep = starts if self.step >= self.closing_from else ~contains
            for i in range(rows):
                narrowed = scores[i].masked_fill(~keep, float("-inf"))
                if narrowed.isfinite().any():  # only where the grammar leaves a choice
                    scores[i] = narrowed
        self.step += 1
        return scores
