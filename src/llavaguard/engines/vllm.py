"""An engine for a vLLM server: the OpenAI engine's HTTP, plus what only vLLM offers.

Why a separate engine: through the plain chat API a server gives the top-20 tokens of one
position, so multi-token category labels cannot be scored and a random or weak model can
emit whitespace until the token limit. vLLM's own request fields fix both:

- answers: the answer schema goes out as an EBNF grammar (``structured_outputs.grammar``)
  that xgrammar builds here with the trained layout (indent 4, no free whitespace), the same
  grammar the local engine uses, so every answer parses;
- scores: each continuation is sent as the end of the assistant's message with
  ``prompt_logprobs``; the log-probabilities of its own tokens, summed, are exact. Which
  tokens are the continuation's is read from the server's ``/tokenize`` once per prefix.

vLLM 0.32 does not read its prefix cache for a request that asks for prompt log-probabilities
(``SamplingParams.skip_reading_prefix_cache``), so each continuation costs a whole prefill:
exact, but not cheap. See docs/serving.md for what that means for triage.

HTTP, retries, concurrency and error lines are the OpenAI engine's (this class extends it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
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
        self.capabilities = Capabilities(scores=ScoreKind.EXACT, top_logprobs=True)
        self._tails: LRU[list[list[int]]] = LRU(16)
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
        served = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)]
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
        """Exact log-probabilities: every continuation is the end of the assistant's message,
        and the log-probabilities vLLM gives for its tokens as part of the prompt are summed.
        All requests go out at once (up to ``concurrency``), so vLLM batches them."""
        tails = {
            p: self._continuation_tokens(p, continuations) for p in {r.prefix for r in requests}
        }
        bodies = []
        for r in requests:
            messages = self._messages(r)  # the image is encoded once per request
            for c in continuations:
                body = self._payload(r, GenerationConfig(max_new_tokens=1))
                body["messages"] = _ending_with(messages, r.prefix + c)
                body.update(
                    continue_final_message=True,
                    add_generation_prompt=False,
                    prompt_logprobs=0,
                    return_token_ids=True,
                )
                bodies.append(body)
        replies = iter(self._map(bodies))
        out = []
        for r in requests:
            row = [_tail_logprob(self.base_url, next(replies), t) for t in tails[r.prefix]]
            out.append(Scored(row))
        return out

    def _continuation_tokens(self, prefix: str, continuations: Sequence[str]) -> list[list[int]]:
        """Each continuation's token ids as the server tokenizes it after the prefix: the
        tokens of prefix+continuation past those it shares with the prefix alone."""
        key = repr((prefix, tuple(continuations)))
        found = self._tails.get(key)
        if found is not None:
            return found
        base = self._tokenize(prefix)
        tails = []
        for c in continuations:
            full = self._tokenize(prefix + c)
            shared = common_length([base, full])
            if shared == len(full):
                raise EngineError(f"continuation {c!r} has no tokens")
            tails.append(full[shared:])
        self._tails.put(key, tails)
        return tails

    def _tokenize(self, text: str) -> list[int]:
        body = {"model": self.model_id, "prompt": text, "add_special_tokens": False}
        reply = self._post(body, self.root + "/tokenize")
        tokens = reply.get("tokens")
        if not isinstance(tokens, list):
            raise EngineError(f"{self.root}/tokenize: reply has no tokens")
        return tokens


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
