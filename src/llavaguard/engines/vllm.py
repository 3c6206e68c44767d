"""An engine for a vLLM server: the OpenAI engine's HTTP, plus what only vLLM offers.

Why a separate engine: through the plain chat API a server gives the top-20 tokens of one
position, so multi-token category labels cannot be scored and a random or weak model can
emit whitespace until the token limit. vLLM's own request fields fix both:

- answers: the answer schema goes out as an EBNF grammar (``structured_outputs.grammar``)
  that xgrammar builds here with the trained layout (indent 4, no free whitespace), the same
  grammar the local engine uses, so every answer parses;
- scores: the continuations' tokens (read from the server's ``/tokenize`` once per prefix)
  make a tree; each inner node is one request that ends the assistant's message there and
  asks for its children's log-probabilities (``logprob_token_ids``). Summed along each
  continuation they are exact. The root goes first, so the image and policy are computed
  once and the other nodes read them from vLLM's prefix cache.

Why not ``prompt_logprobs`` (one request per continuation, simpler): vLLM 0.32 does not read
its prefix cache for a request that asks for them (``skip_reading_prefix_cache``), so each
continuation cost a whole prefill, 22 prefills an image under the default policy. It stays as
the fallback for a continuation whose tokens change when cut (a tokenizer that merges across
the cut): the whole continuation is sent and its tokens from where the tokenizations of prefix
and prefix+continuation part are summed. (The local engine appends the continuation's own
tokens there instead, which a text API cannot send; no released model's tokenizer merges
across the Guard's prefixes.)

HTTP, retries, concurrency and error lines are the OpenAI engine's (this class extends it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from llavaguard.engines.base import (
    Capabilities,
    EngineOptions,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
    common_length,
)
from llavaguard.engines.openai import OpenAIEngine, OpenAIOptions
from llavaguard.errors import ConfigError, EngineError
from llavaguard.lru import LRU

log = logging.getLogger(__name__)


class VLLMOptions(OpenAIOptions):
    """Where the vLLM server is and how hard to try (as for the openai engine)."""


class VLLMEngine(OpenAIEngine):
    """Chat completions against a vLLM server, with grammars and exact scores."""

    name: ClassVar[str] = "vllm"
    Options: ClassVar[type[EngineOptions]] = VLLMOptions

    def __init__(self, model: str, options: OpenAIOptions) -> None:
        super().__init__(model, options)
        self.root = self.base_url.removesuffix("/v1")
        exact = ScoreKind.EXACT if options.logprobs else ScoreKind.NONE  # logprobs=False: none
        self.capabilities = Capabilities(scores=exact, top_logprobs=options.logprobs)
        self._plans: LRU[_Plan] = LRU(16)
        self._grammars: LRU[str] = LRU(32)

    @classmethod
    def load(cls, model: str, options: EngineOptions | None = None) -> VLLMEngine:
        if options is None or not getattr(options, "base_url", None):
            raise ConfigError("the vllm engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        engine = cls(model, VLLMOptions.model_validate(options, from_attributes=True))
        try:
            engine.check_server()
        except BaseException:
            engine.close()
            raise
        return engine

    def check_server(self) -> None:
        """One clear line when the server is not a vLLM, is not there, or serves another
        model: found at the start rather than as an error on every image."""
        version = self._get(self.root + "/version", "is it a vLLM server?")
        if not isinstance(version, dict) or "version" not in version:
            raise ConfigError(f"{self.root} is not a vLLM server (its /version says no version)")
        models = self._get(self.base_url + "/models", "")
        listed = models.get("data") if isinstance(models, dict) else None
        served = [m.get("id") for m in listed or [] if isinstance(m, dict)]
        if self.model_id not in served:
            raise ConfigError(
                f"the vLLM server at {self.root} serves {', '.join(map(str, served)) or 'nothing'}"
                f", not {self.model_id} (pass --model with the served name)"
            )
        log.info("vLLM %s at %s serves %s", version["version"], self.root, self.model_id)

    def _get(self, url: str, hint: str) -> Any:
        import httpx

        try:
            r = self._client.get(url)
        except httpx.HTTPError as e:
            raise ConfigError(f"cannot reach {url}: {e.__class__.__name__}: {e}") from None
        if r.status_code != 200:
            raise ConfigError(f"{url}: HTTP {r.status_code}" + (f" ({hint})" if hint else ""))
        try:
            return r.json()
        except ValueError:
            raise ConfigError(
                f"{url}: reply is not JSON" + (f" ({hint})" if hint else "")
            ) from None

    # ---- answers --------------------------------------------------------------------------
    def _payload(self, request: VisionRequest, config: GenerationConfig) -> dict[str, Any]:
        """The chat body; a schema goes out as a grammar. A vLLM grammar starts at the first
        generated token, so it cannot follow an answer prefix: with both, the grammar pins
        what the prefix says and the prefix is not sent (``generate`` cuts it off again)."""
        from llavaguard.engines.constrain import pin_prefix

        schema = config.json_schema
        if schema is not None and request.prefix:
            schema = pin_prefix(schema, request.prefix)
            request = replace(request, prefix="")
        body = super()._payload(request, config.model_copy(update={"json_schema": None}))
        if schema is not None:
            body["structured_outputs"] = {"grammar": self._grammar(schema, config)}
        return body

    def _grammar(self, schema: dict[str, Any], config: GenerationConfig) -> str:
        """EBNF for the schema, its free strings capped to fit ``max_new_tokens``."""
        from llavaguard.engines.constrain import fit_strings, json_ebnf

        fitted = fit_strings(schema, config.max_new_tokens)
        key = json.dumps(fitted)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = json_ebnf(fitted)
            self._grammars.put(key, grammar)
        return grammar

    def prepare(self, config: GenerationConfig) -> Any:
        """The grammar of ``config.json_schema``, made here rather than with the first batch."""
        return None if config.json_schema is None else self._grammar(config.json_schema, config)

    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        config = config or GenerationConfig()
        texts = super().generate(requests, config)
        if config.json_schema is None:
            return texts
        out = []
        for request, text in zip(requests, texts, strict=True):
            if request.prefix:  # written under the pinned grammar: cut it off
                if not text.startswith(request.prefix):
                    raise EngineError(f"{self.base_url}: the answer does not start as pinned")
                text = text[len(request.prefix) :]
            out.append(text)
        return out

    # ---- scores ---------------------------------------------------------------------------
    def score(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[Scored]:
        """Exact log-probabilities of whole continuations, summed over their tokens.

        The continuations' tokens make a tree; each inner node is one request that ends the
        assistant's message at that node and asks vLLM for the log-probabilities of the
        node's children (``logprob_token_ids``, any tokens, not only the top 20). The tree's
        root goes first, alone, so its prompt (image and policy) is computed once and every
        other node reads it from vLLM's prefix cache; the other nodes then go out at once.
        A continuation whose tokens do not re-tokenize along the tree is scored from prompt
        log-probabilities instead (exact too, but a whole prefill: vLLM does not read its
        cache for those)."""
        plans = {p: self._plan(p, continuations) for p in {r.prefix for r in requests}}
        bases = [self._payload(r, GenerationConfig(max_new_tokens=1)) for r in requests]
        work = list(enumerate(zip(bases, requests, strict=True)))
        roots = [_node_body(b, r.prefix, plans[r.prefix].root) for _, (b, r) in work]
        found = [{(): reply} for reply in self._map(roots)]
        asks = [(i, path, _node_body(b, r.prefix, node)) for i, (b, r) in work
                for path, node in plans[r.prefix].nodes.items() if path]  # fmt: skip
        asks += [(i, k, _direct_body(b, r.prefix + continuations[k])) for i, (b, r) in work
                 for k in plans[r.prefix].direct]  # fmt: skip
        for (i, key, _), reply in zip(asks, self._map([a[2] for a in asks]), strict=True):
            found[i][key] = reply
        return [
            Scored(plans[r.prefix].logprobs(self.base_url, found[i]))
            for i, r in enumerate(requests)
        ]

    def _plan(self, prefix: str, continuations: Sequence[str]) -> _Plan:
        """The token tree of the continuations after ``prefix`` (once per prefix)."""
        key = repr((prefix, tuple(continuations)))
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan.make(prefix, continuations, self._tokenize, self._detokenize)
            self._plans.put(key, plan)
        return plan

    def _tokenize(self, text: str) -> list[int]:
        body = {"model": self.model_id, "prompt": text, "add_special_tokens": False}
        tokens = self._post(body, self.root + "/tokenize").get("tokens")
        if not isinstance(tokens, list):
            raise EngineError(f"{self.root}/tokenize: reply has no tokens")
        return tokens

    def _detokenize(self, tokens: list[int]) -> str:
        body = {"model": self.model_id, "tokens": tokens}
        text = self._post(body, self.root + "/detokenize").get("prompt")
        if not isinstance(text, str):
            raise EngineError(f"{self.root}/detokenize: reply has no text")
        return text


@dataclass(frozen=True)
class _Node:
    text: str  # what follows the prefix at this node
    path: tuple[int, ...]  # its tokens
    children: tuple[int, ...]  # the tokens whose log-probabilities are asked for


@dataclass
class _Plan:
    """How the continuations after one prefix are scored: tree nodes, and the few that are
    scored directly (``direct``: indices into the continuations)."""

    tails: list[tuple[int, ...]]
    nodes: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    direct: list[int] = field(default_factory=list)

    @property
    def root(self) -> _Node:
        return self.nodes[()]

    @classmethod
    def make(
        cls, prefix: str, continuations: Sequence[str], tokenize: Any, detokenize: Any
    ) -> _Plan:
        base = tokenize(prefix)
        plan = cls(tails=[])
        children: dict[tuple[int, ...], set[int]] = {(): set()}
        texts: dict[tuple[int, ...], str] = {(): ""}
        for k, c in enumerate(continuations):
            full = tokenize(prefix + c)
            tail = tuple(full[common_length([base, full]) :])  # where the two part
            plan.tails.append(tail)
            if not tail:
                raise EngineError(f"continuation {c!r} has no tokens")
            paths = [tail[:n] for n in range(len(tail))]
            for path in paths:
                if path not in texts:
                    texts[path] = detokenize(list(path))
            if full[: len(base)] != base or not all(c.startswith(texts[p]) for p in paths):
                plan.direct.append(k)  # the tokens merge across the boundary: no tree
                continue
            for n, path in enumerate(paths):
                children.setdefault(path, set()).add(tail[n])
        plan.nodes = {p: _Node(texts[p], p, tuple(sorted(ch))) for p, ch in children.items()}
        return plan

    def logprobs(self, where: str, replies: dict[Any, dict[str, Any]]) -> list[float]:
        """Each continuation's log-probability from the replies (keyed by node path, or by
        the index of a directly scored continuation)."""
        asked = {path: _children(where, replies[path], node) for path, node in self.nodes.items()}
        out = []
        for k, tail in enumerate(self.tails):
            if k in self.direct:
                out.append(_tail_logprob(where, replies[k], list(tail)))
            else:
                out.append(sum(asked[tail[:n]][tail[n]] for n in range(len(tail))))
        return out


def _node_body(base: dict[str, Any], prefix: str, node: _Node) -> dict[str, Any]:
    """The request for one tree node: the answer so far ends at the node, and the reply is
    one token with the log-probabilities of the node's children."""
    body = {**base, "messages": _ending_with(base["messages"], prefix + node.text)}
    body.update(
        continue_final_message=True, add_generation_prompt=False, logprobs=True,
        logprob_token_ids=list(node.children), return_tokens_as_token_ids=True,
        return_token_ids=True,
    )  # fmt: skip
    return body


def _direct_body(base: dict[str, Any], answer: str) -> dict[str, Any]:
    body = {**base, "messages": _ending_with(base["messages"], answer)}
    body.update(
        continue_final_message=True, add_generation_prompt=False, prompt_logprobs=0,
        return_token_ids=True,
    )  # fmt: skip
    return body


def _children(where: str, reply: dict[str, Any], node: _Node) -> dict[int, float]:
    """The log-probabilities of a node's children, after checking that the prompt vLLM saw
    ends with the node's tokens (a re-tokenization that differs would score other text)."""
    ids = reply.get("prompt_token_ids")
    if node.path and (not isinstance(ids, list) or tuple(ids[-len(node.path) :]) != node.path):
        raise EngineError(f"{where}: the prompt does not end with the continuation's tokens")
    try:
        top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        got = {int(t["token"].removeprefix("token_id:")): float(t["logprob"]) for t in top}
    except (KeyError, IndexError, TypeError, ValueError):
        raise EngineError(f"{where}: the reply has no log-probabilities (is it vLLM?)") from None
    missing = [t for t in node.children if t not in got]
    if missing:
        raise EngineError(f"{where}: no log-probability for token {missing[0]}")
    return got


def _ending_with(messages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    """The request's messages with ``answer`` as the assistant's final message (a shallow
    copy: the user turn, image included, is shared, not re-encoded)."""
    out = [m for m in messages if m["role"] != "assistant"]
    return [*out, {"role": "assistant", "content": answer}]


def _tail_logprob(where: str, reply: dict[str, Any], tail: list[int]) -> float:
    """The summed log-probability of the prompt's last tokens, which must be ``tail``."""
    ids, logprobs = reply.get("prompt_token_ids"), reply.get("prompt_logprobs")
    if not isinstance(ids, list) or not isinstance(logprobs, list) or len(ids) != len(logprobs):
        raise EngineError(f"{where}: the reply has no prompt log-probabilities (is it vLLM?)")
    if ids[-len(tail) :] != tail:
        raise EngineError(f"{where}: the prompt does not end with the continuation's tokens")
    total = 0.0
    for token, position in zip(tail, logprobs[-len(tail) :], strict=True):
        try:
            total += float(position[str(token)]["logprob"])
        except (KeyError, TypeError, ValueError):
            raise EngineError(f"{where}: no log-probability for prompt token {token}") from None
    return total


__all__ = ["VLLMEngine", "VLLMOptions"]
