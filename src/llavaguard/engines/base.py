"""The engine interface: a batch of (images, text) requests in, a list of texts out.

Engines know nothing about policies, ratings or parsing; the Guard renders the prompt and
reads the answer around them, once, for every engine. A new runtime (an OpenAI-compatible
server, another library) implements ``generate`` and registers a name, nothing more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import EngineError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class VisionRequest:
    """One user turn: the images first, then the text, as the LlavaGuard models were trained."""

    text: str
    images: tuple[Image.Image, ...] = field(default_factory=tuple)
    system: str | None = None
    prefix: str = ""  # the start of the assistant's answer, taken as given (teacher-forced)


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


class Engine(ABC):
    """A loaded model that answers batches of vision requests."""

    name: ClassVar[str]
    model_id: str
    # False where an engine can score the rating but not whole category labels (a remote
    # server gives top log-probabilities of one position only); the Guard then asks for
    # the two ratings alone and leaves category_scores empty.
    scores_categories: ClassVar[bool] = True

    @abstractmethod
    def generate(
        self, requests: Sequence[VisionRequest], config: GenerationConfig | None = None
    ) -> list[str]:
        """Answer every request, in order. Raises EngineError if the batch as a whole fails."""

    def score(
        self, requests: Sequence[VisionRequest], continuations: Sequence[str]
    ) -> list[list[float]]:
        """Log-probability of each continuation right after each request's prefix.

        A continuation's log-probability is the sum over its tokens, so labels that split into
        several tokens compare fairly. Engines that cannot score raise NotImplementedError,
        and callers then go without scores.
        """
        raise NotImplementedError(f"engine {self.name} gives no scores")

    @property
    def can_score(self) -> bool:
        return type(self).score is not Engine.score

    def close(self) -> None:
        """Release memory or connections; the engine is unusable afterwards."""
        return None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
