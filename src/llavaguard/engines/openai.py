"""An engine that talks to an OpenAI-compatible server: vLLM, SGLang or ``llavaguard serve``.

Each request is one chat completion: the image first (a ``data:`` URL), then the policy text,
under the system prompt when there is one. Structured output goes through ``response_format``
(a JSON schema). An answer prefix (teacher-forcing the start of the reply) is sent as a final
assistant message with ``continue_final_message``, which vLLM, SGLang and our server take.

Scores: the server's ``top_logprobs`` at the rating position give P(Unsafe). One position is
all a chat API gives, so whole category labels cannot be scored here (``scores_categories`` is
False); a server that returns no log-probabilities makes the Guard go without scores.

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
from typing import Any, ClassVar

from llavaguard.engines.base import Engine, GenerationConfig, VisionRequest
from llavaguard.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TOP_LOGPROBS = 20


def data_url(image: Any, fmt: str = "PNG") -> str:
    """A PIL image as a base64 ``data:`` URL (lossless PNG by default)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIEngine(Engine):
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``)."""

    name: ClassVar[str] = "openai"
    scores_categories: ClassVar[bool] = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        image_format: str = "PNG",
        **ignored: Any,
    ) -> None:
        import httpx

        if not base_url:
            raise ConfigError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        unknown = {k: v for k, v in ignored.items() if v is not None and v != "auto"}
        if unknown:
            raise ConfigError(f"the openai engine does not take {', '.join(sorted(unknown))}")
        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.image_format = image_format
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="llavaguard-http")
        self._no_logprobs = False

    # ---- payloads -------------------------------------------------------------------------
    def _messages(self, request: VisionRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(img, self.image_format)}}
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
    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /chat/completions with retries on 429, 5xx and connection errors."""
        import httpx

        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt * (0.5 + random.random())
            try:
                r = self._client.post("/chat/completions", json=body)
            except httpx.HTTPError as e:
                if attempt == self.max_retries:
                    raise EngineError(f"{self.base_url}: {e.__class__.__name__}: {e}") from e
                time.sleep(wait)
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError as e:
                    raise EngineError(f"{self.base_url}: reply is not JSON") from e
            if r.status_code in RETRY_STATUS and attempt < self.max_retries:
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
    ) -> list[list[float]]:
        """Log-probabilities of the continuations from the top log-probabilities the server
        gives for the one position after the prefix.

        A token counts toward a continuation when one is a prefix of the other (a label may be
        one token, or start with one); a continuation with no such token among the top ones
        gets the smallest log-probability shown (an upper bound). With none of them there,
        the request has no score (EngineError), though its answer still counts.
        """
        if self._no_logprobs:
            raise NotImplementedError("the server gives no log-probabilities")
        bodies = []
        for r in requests:
            body = self._payload(r, GenerationConfig(max_new_tokens=1))
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
            bodies.append(body)
        try:
            replies = self._map(bodies)
        except EngineError as e:
            if "HTTP 400" in str(e) or "HTTP 422" in str(e):  # the server refuses the options
                log.warning("no scores from %s: %s", self.base_url, e)
                self._no_logprobs = True
                raise NotImplementedError(str(e)) from e
            raise
        out = []
        for reply in replies:
            top = _top_logprobs(reply)
            if top is None:
                self._no_logprobs = True
                raise NotImplementedError("the server gives no log-probabilities")
            floor = min(lp for _, lp in top)
            row, found = [], 0
            for c in continuations:
                hits = [lp for tok, lp in top if tok and (c.startswith(tok) or tok.startswith(c))]
                found += bool(hits)
                row.append(_logsumexp(hits) if hits else floor)
            if not found:
                raise EngineError(
                    f"{self.base_url}: none of {', '.join(continuations)} is among the top "
                    f"{len(top)} tokens the server gives"
                )
            out.append(row)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _top_logprobs(reply: dict[str, Any]) -> list[tuple[str, float]] | None:
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return [(t["token"], float(t["logprob"])) for t in first["top_logprobs"]] or None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


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
