"""An engine that talks to an OpenAI-compatible server: vLLM, SGLang or ``llavaguard serve``.

Each request is one chat completion: the image first (a ``data:`` URL), then the policy text,
under the system prompt when there is one. Structured output goes through ``response_format``
(a JSON schema). An answer prefix (teacher-forcing the start of the reply) is sent as a final
assistant message with ``continue_final_message``, which vLLM, SGLang and our server take.

Scores: the server's ``top_logprobs`` at the rating position give P(Unsafe). One position is
all a chat API gives, so whole category labels cannot be scored here (``ScoreKind.RATING``);
a server that returns no log-probabilities makes the Guard go without scores.

This module knows HTTP, retries and payloads; nothing about policies or answers.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from llavaguard.engines.base import (
    Capabilities,
    Engine,
    EngineOptions,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
)
from llavaguard.errors import ConfigError, EngineError
from llavaguard.models import describe_model

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TOP_LOGPROBS = 20
# after a request gave up on a server that does not answer, the requests of the next seconds
# fail at once with its reason instead of each retrying for as long: a run whose server died
# records its failures in seconds, not hours, and a rerun does them again
DOWN_SECONDS = 10.0


def data_url(image: Any, fmt: str = "PNG") -> str:
    """A PIL image as a base64 ``data:`` URL (lossless PNG by default)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIOptions(EngineOptions):
    """Where the server is and how hard to try."""

    base_url: str = Field(description="The server, e.g. http://127.0.0.1:8000/v1.")
    api_key: SecretStr | None = Field(None, description="The server's API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout: float = Field(300.0, gt=0, description="Seconds for one request.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and lost connections.")
    backoff: float = Field(0.5, ge=0, description="First retry's wait; doubles each retry.")
    image_format: str = Field("PNG", description="How images are encoded in data URLs.")
    logprobs: bool = Field(True, description="Ask for log-probabilities (rating scores).")


class OpenAIEngine(Engine):
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``)."""

    name: ClassVar[str] = "openai"
    Options: ClassVar[type[EngineOptions]] = OpenAIOptions

    def __init__(self, model: str, options: OpenAIOptions) -> None:
        import httpx

        self.model_id = model
        self.spec = describe_model(model)
        self.options = options
        self.base_url = options.base_url.rstrip("/")
        key = options.api_key.get_secret_value() if options.api_key else None
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(options.timeout, connect=10.0),
            limits=httpx.Limits(max_connections=options.concurrency),
        )
        self._pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="llavaguard-http")
        self._down: tuple[float, str] | None = None
        self.capabilities = Capabilities(
            scores=ScoreKind.RATING if options.logprobs else ScoreKind.NONE
        )

    @classmethod
    def load(cls, model: str, options: EngineOptions | None = None) -> OpenAIEngine:
        if options is None or not getattr(options, "base_url", None):
            raise ConfigError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return cls(model, OpenAIOptions.model_validate(options, from_attributes=True))

    # ---- payloads -------------------------------------------------------------------------
    def _messages(self, request: VisionRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(img, self.options.image_format)}}
            for img in request.images
        ]
        content.append({"type": "text", "text": request.text})
        messages.append({"role": "user", "content": content})
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
        return messages

    def _payload(self, request: VisionRequest, config: GenerationConfig) -> dict[str, Any]:
        if config.num_beams > 1:
            raise ConfigError("beam search is not available through the openai engine")
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": self._messages(request),
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
        }
        if request.prefix:
            body.update(continue_final_message=True, add_generation_prompt=False)
        if config.do_sample:
            body["top_p"] = config.top_p
            if config.top_k is not None:
                body["top_k"] = config.top_k
        if config.seed is not None:
            body["seed"] = config.seed
        if config.min_new_tokens:
            body["min_tokens"] = config.min_new_tokens
        if config.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "assessment", "schema": config.json_schema},
            }
        return body

    # ---- HTTP -----------------------------------------------------------------------------
    def _post(self, body: dict[str, Any], url: str = "/chat/completions") -> dict[str, Any]:
        """POST ``url`` (under ``base_url`` unless absolute) with retries on 429, 5xx and
        connection errors."""
        import httpx

        down = self._down  # (until, why): the server was not there a moment ago
        if down is not None and time.monotonic() < down[0]:
            raise EngineError(down[1])
        for attempt in range(self.options.max_retries + 1):
            wait = self.options.backoff * 2**attempt * (0.5 + random.random())
            try:
                r = self._client.post(url, json=body)
            except httpx.HTTPError as e:
                if attempt == self.options.max_retries:
                    why = f"{self.base_url}: {e.__class__.__name__}: {e}"
                    self._down = (time.monotonic() + DOWN_SECONDS, why)
                    raise EngineError(why) from e
                time.sleep(wait)
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError as e:
                    raise EngineError(f"{self.base_url}: reply is not JSON") from e
            if r.status_code in RETRY_STATUS and attempt < self.options.max_retries:
                retry_after = r.headers.get("retry-after", "")
                time.sleep(float(retry_after) if retry_after.isdigit() else wait)
                continue
            raise EngineError(f"{self.base_url}: HTTP {r.status_code}: {_message(r)}")
        raise AssertionError("unreachable")

    def _map(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._pool.map(self._post, bodies))

    # ---- the interface --------------------------------------------------------------------
    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        config = config or GenerationConfig()
        replies = self._map([self._payload(r, config) for r in requests])
        out = []
        for reply in replies:
            try:
                out.append(reply["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError) as e:
                raise EngineError(f"{self.base_url}: reply has no message content") from e
        return out

    def score(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[Scored]:
        """Log-probabilities of the continuations from the top log-probabilities the server
        gives for the one position after the prefix.

        A token counts toward a continuation when one is a prefix of the other (a label may be
        one token, or start with one); a continuation with no such token among the top ones
        gets the smallest log-probability shown (an upper bound). With none of them there,
        the request has no score (EngineError), though its answer still counts. A server
        that refuses log-probabilities narrows ``capabilities`` to no scores, once.
        """
        if self.capabilities.scores is ScoreKind.NONE:
            raise EngineError(f"{self.base_url}: gives no log-probabilities")
        try:
            tops = self._top(requests, TOP_LOGPROBS)
        except EngineError as e:
            if "HTTP 400" in str(e) or "HTTP 422" in str(e):  # the server refuses the options
                self._no_scores(str(e))
            raise
        return [Scored(_continuation_logprobs(self.base_url, top, continuations)) for top in tops]

    def top_logprobs(
        self, requests: Sequence[VisionRequest], k: int
    ) -> list[list[tuple[str, float]]]:
        return self._top(requests, k)

    def _top(self, requests: Sequence[VisionRequest], k: int) -> list[list[tuple[str, float]]]:
        bodies = []
        for r in requests:
            body = self._payload(r, GenerationConfig(max_new_tokens=1))
            body.update(logprobs=True, top_logprobs=k)
            bodies.append(body)
        out = []
        for reply in self._map(bodies):
            top = _top_logprobs(reply)
            if top is None:
                self._no_scores("the reply carries no log-probabilities")
                raise EngineError(f"{self.base_url}: gives no log-probabilities")
            out.append(top)
        return out

    def _no_scores(self, why: str) -> None:
        log.warning("no scores from %s: %s", self.base_url, why)
        self.capabilities = replace(self.capabilities, scores=ScoreKind.NONE)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _top_logprobs(reply: dict[str, Any]) -> list[tuple[str, float]] | None:
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return [(t["token"], float(t["logprob"])) for t in first["top_logprobs"]] or None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _continuation_logprobs(
    where: str, top: list[tuple[str, float]], continuations: Sequence[str]
) -> list[float]:
    floor = min(lp for _, lp in top)
    row, found = [], 0
    for c in continuations:
        hits = [lp for tok, lp in top if tok and (c.startswith(tok) or tok.startswith(c))]
        found += bool(hits)
        row.append(_logsumexp(hits) if hits else floor)
    if not found:
        raise EngineError(
            f"{where}: none of {', '.join(continuations)} is among the top {len(top)} tokens "
            "the server gives"
        )
    return row


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _message(r: Any) -> str:
    """The server's error message, on one line."""
    try:
        body = r.json()
        msg = body.get("error", body)
        msg = msg.get("message", msg) if isinstance(msg, dict) else msg
        if not isinstance(msg, str):
            msg = str(body.get("detail", body))
    except ValueError:
        msg = r.text
    return " ".join(str(msg).split())[:300]
