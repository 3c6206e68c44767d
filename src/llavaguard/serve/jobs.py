"""Typed jobs: what the model thread is asked to do, one class per kind of work.

A job is a frozen dataclass and the batcher's grouping key: requests whose jobs compare equal
(same policy, same decoding options, same k) run as one engine batch. Each job knows how to
run a batch of payloads on the Guard, so adding a kind of work means adding a class here, not
a branch in a dispatcher. Jobs run in the model thread and know nothing about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from llavaguard.engines import GenerationConfig, VisionRequest
    from llavaguard.errors import EngineError
    from llavaguard.guard import Assessment, Guard
    from llavaguard.policy import Policy


class Job(Protocol):
    """Hashable; equal jobs share a batch. ``run`` answers every payload, in order; an
    Exception in the list is that payload's own failure."""

    def run(self, guard: Guard, payloads: Sequence[Any]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class AssessJob:
    """Judge images under one policy. Payloads: ``(image id, decoded image)``.

    The policy travels with the job, so no registry of policies grows with the requests; jobs
    compare by the policy's id (the hash of its rendered prompt), which a policy is not.
    """

    policy: Policy = field(compare=False, repr=False)
    # what ``Guard.prepare`` compiled for the policy: held while the job waits
    prepared: Any = field(default=None, compare=False, repr=False)
    policy_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_id", self.policy.id)

    def run(
        self, guard: Guard, payloads: Sequence[tuple[str, Image.Image]]
    ) -> list[Assessment | EngineError]:
        """An assessment the model failed on is that payload's EngineError, so a request's
        other jobs are dropped rather than run for an answer that is already a failure."""
        from llavaguard.errors import EngineError

        assessments = guard.assess(
            [image for _, image in payloads],
            policy=self.policy,
            ids=[image_id for image_id, _ in payloads],
            batch_size=len(payloads),
        )
        return [
            EngineError(f"the model failed on this image: {a.error}") if a.failed else a
            for a in assessments
        ]


@dataclass(frozen=True)
class ChatJob:
    """Generate text with these decoding options. Payloads: ``VisionRequest``.

    Compared by the options' JSON, since the options (which may hold a JSON schema) are not
    hashable themselves. A request that fails alone fails alone (``generate_isolated``).
    """

    config: GenerationConfig = field(compare=False, repr=False)
    # what ``Engine.prepare`` compiled for the config (a grammar): held while the job waits
    prepared: Any = field(default=None, compare=False, repr=False)
    options: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", self.config.model_dump_json())

    def run(self, guard: Guard, payloads: Sequence[VisionRequest]) -> list[str | EngineError]:
        from llavaguard.engines import generate_isolated

        return generate_isolated(guard.engine, payloads, self.config)


@dataclass(frozen=True)
class TopLogprobsJob:
    """The ``k`` most likely next tokens after each prompt. Payloads: ``VisionRequest``."""

    k: int

    def run(self, guard: Guard, payloads: Sequence[VisionRequest]) -> list[list[tuple[str, float]]]:
        return guard.engine.top_logprobs(payloads, self.k)
