"""JSON-schema constrained decoding for the local engine, on xgrammar.

Why xgrammar: it compiles a JSON schema for a tokenizer in milliseconds, masks logits on the
CPU at well under a millisecond a step, accepts a forced answer prefix, and lays the JSON out
with a fixed indent, so constrained answers look exactly like the training targets
(``json.dumps(..., indent=4)``). outlines took seconds on its first call in a process and
lm-format-enforcer does not work with transformers 5 (see docs/scores.md).
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from llavaguard.errors import ConfigError, EngineError, one_line
from llavaguard.lru import LRU

GRAMMAR_CACHE_SIZE = 32  # compiled grammars kept; each is up to a few MB for a large vocabulary
# the trained answer layout, json.dumps(..., indent=4): no whitespace left to the model
LAYOUT: dict[str, Any] = {"any_whitespace": False, "indent": 4, "separators": (",", ": ")}


def check_schema_size(schema: dict[str, Any], max_bytes: int, max_enum_values: int) -> None:
    """ConfigError when a schema is too large to compile for a client: over ``max_bytes`` of
    JSON, or more than ``max_enum_values`` enum values in all (compiling costs grow with
    both: a 20,000-value enum took seconds and a hundred MB)."""
    try:
        size = len(json.dumps(schema))
    except RecursionError:
        raise ConfigError("JSON schema nested too deeply") from None
    if size > max_bytes:
        raise ConfigError(f"JSON schema of {size} bytes; this server takes at most {max_bytes}")
    values, stack = 0, [schema]
    while stack:  # iterative: a deeply nested schema must not exhaust the stack
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("enum"), list):
                values += len(node["enum"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if values > max_enum_values:
        raise ConfigError(
            f"JSON schema with {values} enum values; this server takes at most {max_enum_values}"
        )


def json_ebnf(schema: dict[str, Any]) -> str:
    """The schema's grammar as EBNF text, in the trained layout: what a vLLM server takes as
    ``structured_outputs.grammar`` (its own JSON-schema option would let whitespace run on
    or lay the answer out unlike the training targets). ConfigError for a bad schema."""
    import xgrammar as xgr

    try:
        return str(xgr.Grammar.from_json_schema(json.dumps(schema), **LAYOUT))
    except (RuntimeError, ValueError, TypeError) as e:
        reason = one_line(str(e)) or type(e).__name__
        raise ConfigError(f"invalid JSON schema: {reason}") from None


def pin_prefix(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The schema with the properties a forced answer prefix has written pinned to their
    values, for servers whose grammars cannot start after a prefix: generating under it
    writes the prefix first, then goes on where the prefix stops.

    ``prefix`` must be the trained layout of an object up to the opening quote of a string
    property's value (what ``answer_prefix(rating, category)`` gives); EngineError otherwise.
    """
    try:
        written = json.loads(prefix + '"\n}')
    except ValueError:
        written = None
    props = schema.get("properties") if isinstance(schema, dict) else None
    if (
        not isinstance(written, dict)
        or not written
        or list(written.values())[-1] != ""
        or json.dumps(written, indent=4) != prefix + '"\n}'
        or not isinstance(props, dict)
        or list(props)[: len(written)] != list(written)
    ):
        raise EngineError("cannot pin this answer prefix to the answer schema")
    pinned = {**schema, "properties": dict(props)}
    for name in list(written)[:-1]:
        pinned["properties"][name] = {"enum": [written[name]]}
    return pinned


def fit_strings(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """The schema with its free strings (no enum) capped so that the whole answer fits in
    ``max_tokens`` tokens at one character a token or more: a server stops at the token
    limit, and a cut answer is no answer. Only a flat object's strings are capped."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return schema
    free = [k for k, v in props.items() if v.get("type") == "string" and "enum" not in v]
    fixed = {k: max(map(str, v.get("enum", [""])), key=len) for k, v in props.items()}
    room = max_tokens - len(json.dumps({**fixed, **dict.fromkeys(free, "")}, indent=4)) - 4
    if not free or room <= 0:
        return schema
    capped = {**schema, "properties": dict(props)}
    for k in free:
        limit = room // len(free)
        current = props[k].get("maxLength")
        capped["properties"][k] = {**props[k], "maxLength": min(current or limit, limit)}
    return capped


class GrammarCache:
    """Compiled grammars per schema, for one tokenizer: the one place schemas are compiled,
    for the Guard's constrained answers and for the server's structured output alike.

    Compiling is slow for a large schema, so callers that can (the server) ``compile`` before
    queueing work, off the thread that runs the model; the model thread then finds the grammar
    here. At most ``size`` grammars are kept (least recently used first out), plus any that a
    caller still holds: a grammar compiled for queued work is not compiled twice.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, size: int = GRAMMAR_CACHE_SIZE) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # xgrammar's own cache has no bound by default: ours replaces it
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self._compiled: LRU[Any] = LRU(size)
        self._held: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def compile(self, schema: dict[str, Any]) -> Any:
        """The compiled grammar of ``schema``; ConfigError (one line) for a schema that cannot
        be compiled. Safe to call from any thread."""
        key = json.dumps(schema)  # property order matters: it is the order of the keys
        compiled = self._compiled.get(key) or self._held.get(key)
        if compiled is None:
            try:
                compiled = self.compiler.compile_json_schema(key, **LAYOUT)
            except (RuntimeError, ValueError, TypeError) as e:
                reason = one_line(str(e)) or type(e).__name__
                raise ConfigError(f"invalid JSON schema: {reason}") from None
            self._held[key] = compiled
        self._compiled.put(key, compiled)
        return compiled

    def processor(
        self,
        schema: dict[str, Any],
        prefixes: list[str],
        max_new_tokens: int,
        min_new_tokens: int = 0,
    ) -> JsonLogitsProcessor:
        return JsonLogitsProcessor(
            self._xgr,
            self.compile(schema),
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
