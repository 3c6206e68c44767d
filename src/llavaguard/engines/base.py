"""The engine interface: a batch of (images, text) requests in, a list of texts out.

Engines know nothing about policies, ratings or parsing; the Guard renders the prompt and
reads the answer around them, once, for every engine. A new runtime (an OpenAI-compatible
server, another library) declares its ``Options`` and ``Capabilities``, implements ``load``
and ``generate`` (and ``score`` where it can), and registers a name, nothing more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import ConfigError, EngineError
from llavaguard.models import ModelSpec

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class VisionRequest:
    """One user turn: the images first, then the text, as the LlavaGuard models were trained."""

    text: str
    images: tuple[Image.Image, ...] = field(default_factory=tuple)
    system: str | None = None
    prefix: str = ""  # the start of the assistant's answer, taken as given (teacher-forced)
    # a handle from ``Engine.score`` on this prompt: the engine may continue from it
    prefill: Any = field(default=None, compare=False, repr=False)


class GenerationConfig(BaseModel):
    """How to decode. Greedy and deterministic unless a temperature is given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(500, ge=1, description="Room for a full rationale.")
    min_new_tokens: int | None = Field(
        None, ge=1, description="Generate at least this many tokens (fixed-length benchmarks)."
    )
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    num_beams: int = Field(1, ge=1)
    seed: int | None = Field(None, description="Seed for sampling; makes it repeatable.")
    json_schema: dict[str, Any] | None = Field(
        None, description="Constrain the answer to this JSON schema (structured output)."
    )

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    @model_validator(mode="after")
    def _sampling_options_need_sampling(self) -> GenerationConfig:
        if not self.do_sample and (self.top_p != 1.0 or self.top_k is not None):
            raise ValueError("top_p/top_k need temperature > 0 (sampling)")
        return self


MODEL_CARD_RECIPE = GenerationConfig(
    max_new_tokens=200, temperature=0.2, top_p=0.95, top_k=50, num_beams=2
)


class ScoreKind(StrEnum):
    """What an engine can score after a prefix."""

    NONE = "none"  # text only
    RATING = "rating"  # the rating position's top log-probabilities (one position)
    EXACT = "exact"  # any continuation, every token of it (whole category labels)


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do beyond generating text; callers ask this, never the class."""

    scores: ScoreKind = ScoreKind.NONE
    batch_prefill: bool = False  # several prompts prefilled in one pass pays off
    top_logprobs: bool = False  # top-k next-token log-probabilities (the server's chat API)


@dataclass(frozen=True)
class Scored:
    """One request's continuation log-probabilities, and the prefill that produced them.

    ``prefill`` is an engine-private handle: hand it back on the request that continues the
    same prompt (``VisionRequest.prefill``) and the engine skips that prompt's prefill. The
    caller owns it, so no engine keeps caches keyed by anything that could be reused.
    """

    logprobs: list[float]
    prefill: Any = None


class EngineOptions(BaseModel):
    """An engine's own options; each engine declares a strict subclass as ``Options``.

    Fields typed ``SecretStr`` (keys, tokens) are left out of every record written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class Engine(ABC):
    """A loaded model that answers batches of vision requests.

    The contract, after lm-evaluation-harness's ``LM``: batches in, lists out, in order.
    ``generate`` is required; ``score`` and ``top_logprobs`` exist where ``capabilities`` says
    so. ``load`` builds an engine from a model id and the engine's declared ``Options``.
    """

    name: ClassVar[str]
    Options: ClassVar[type[EngineOptions]] = EngineOptions
    model_id: str
    # what is known about the model (family, the system prompt it was trained with); None
    # for an engine that knows nothing, e.g. a scripted one in a test
    spec: ModelSpec | None = None
    capabilities: Capabilities = Capabilities()

    @classmethod
    def load(cls, model: str, options: EngineOptions) -> Engine:
        """Build the engine for a model (hub id, folder, or served name); what the registry
        and the Guard spec call. An engine built in memory only need not have it."""
        raise ConfigError(f"engine {cls.name} cannot be loaded by name")

    @abstractmethod
    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        """Answer every request, in order. Raises EngineError if the batch as a whole fails."""

    def score(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[Scored]:
        """Log-probability of each continuation right after each request's prefix.

        A continuation's log-probability is the sum over its tokens, so labels that split into
        several tokens compare fairly. With ``ScoreKind.RATING`` only the first position is
        known. Raises EngineError where the engine cannot score (see ``capabilities``).
        """
        raise EngineError(f"engine {self.name} gives no scores")

    def score_shared(
        self, requests: Sequence[VisionRequest], continuations: Sequence[Sequence[str]]
    ) -> list[Scored]:
        """``score`` for requests that share their images and part of their text (one image
        under several policies), each with its own continuations.

        An engine may compute what the requests share once: the local engine prefills the
        image once and walks the rest as a token tree; a vLLM server's prefix cache does the
        same on its side, so the default (the requests grouped by continuations, each group
        one ``score`` call) is what a server-backed engine needs. Only the first request's
        ``Scored.prefill`` need be usable.
        """
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, conts in enumerate(continuations):
            groups.setdefault(tuple(conts), []).append(i)
        out: list[Scored | None] = [None] * len(requests)
        for conts, members in groups.items():
            scored = self.score([requests[i] for i in members], conts)
            for i, s in zip(members, scored, strict=True):
                out[i] = s
        return [s for s in out if s is not None]

    def top_logprobs(
        self, requests: Sequence[VisionRequest], k: int
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely next tokens after each request's prompt and prefix, with
        their log-probabilities: what an OpenAI-style ``top_logprobs`` reports."""
        raise EngineError(f"engine {self.name} gives no top log-probabilities")

    def prepare(self, config: GenerationConfig) -> Any:
        """Do ahead, in the calling thread, what ``generate`` with ``config`` would otherwise
        do first in the model's thread (compile a JSON schema's grammar), so a slow step
        holds no batch up; ConfigError for options it cannot use. Returns a handle that keeps
        the prepared work alive while the caller holds it; default: nothing to prepare."""
        return None

    def close(self) -> None:
        """Release memory or connections; the engine is unusable afterwards."""
        return None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def common_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token lists (where continuations part)."""
    n = min(len(s) for s in seqs)
    for j in range(n):
        if any(s[j] != seqs[0][j] for s in seqs):
            return j
    return n


def generate_isolated(
    engine: Engine, requests: Sequence[VisionRequest], config: GenerationConfig
) -> list[str | EngineError]:
    """Answers for a batch; if the batch fails as a whole, each request is tried alone, so a
    bad request costs only its own answer (its EngineError takes its place)."""
    if not requests:
        return []
    try:
        return list(engine.generate(requests, config))
    except EngineError as e:
        if len(requests) == 1:
            return [e]
    out: list[str | EngineError] = []
    for r in requests:
        try:
            out.extend(engine.generate([r], config))
        except EngineError as e:
            out.append(e)
    return out
