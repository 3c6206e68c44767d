"""POST /v1/moderations: OpenAI's moderation endpoint for images.

One result per image part, judged under the server's policy through the assess handler (so
moderation and assess requests batch together); OpenAI's fields are derived from each
assessment, which each result also carries in full. A request's images are admitted whole or
not at all (parts, memory, queue), and a failure on one drops the others' queued work.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from llavaguard.serve.errors import ApiError
from llavaguard.serve.handlers.base import Handler
from llavaguard.serve.protocol.moderations import (
    ModerationRequest,
    ModerationResponse,
    ModerationResult,
)

if TYPE_CHECKING:
    from llavaguard.guard import Assessment
    from llavaguard.policy import Policy
    from llavaguard.serve.handlers.assess import AssessHandler
    from llavaguard.serve.runtime import Runtime


class ModerationHandler(Handler):
    def __init__(self, runtime: Runtime, assess: AssessHandler) -> None:
        super().__init__(runtime)
        self.assess = assess

    async def create(self, body: ModerationRequest) -> ModerationResponse:
        parts = body.input if isinstance(body.input, list) else [body.input]
        urls = [p.image_url.url for p in parts if not isinstance(p, str) and p.image_url]
        if not urls:
            raise ApiError(400, "llavaguard moderates images: give image_url input parts")
        self.check_parts(len(urls))
        policy, _ = await self.policy()
        files = [await self.image_bytes(url=u) for u in urls]
        async with self.images(files) as images:  # admitted whole, or refused whole
            ids = [f"input-{i}" for i in range(len(images))]
            assessments = await self.assess.judge(images, policy, ids)
        return ModerationResponse(
            id=f"modr-{uuid.uuid4().hex}",
            model=self.guard.engine.model_id,
            results=[moderation_result(a, policy, self.guard.threshold) for a in assessments],
        )


def moderation_result(
    a: Assessment, policy: Policy, threshold: float | None = None
) -> ModerationResult:
    """OpenAI's fields from an assessment. With ``--multi-label`` (``a.violations``), a
    category's score is P(the image violates it), each asked on its own, so several
    categories can be flagged at once (score >= the threshold, 0.5 by default; a category
    declared allowed scores 0). Otherwise, with scores, P(Unsafe) x P(category | the answered
    rating): for an Unsafe answer the probability of "unsafe, for this category"; without
    scores, 1 for the flagged category, else 0."""
    flagged = a.rating == "Unsafe"
    labels = [c.label for c in policy.categories]
    if a.violations is not None:
        cut = 0.5 if threshold is None else threshold
        scores = {c.label: a.violations.get(c.code, 0.0) for c in policy.categories}
        named = {label: p >= cut for label, p in scores.items()}
        return _result(flagged or any(named.values()), named, scores, a)
    named = {label: flagged and a.category == label for label in labels}
    if a.score is not None and a.category_scores:
        scores = {label: a.score * a.category_scores.get(label, 0.0) for label in labels}
    else:
        scores = {label: float(named[label]) for label in labels}
    return _result(flagged, named, scores, a)


def _result(
    flagged: bool, named: dict[str, bool], scores: dict[str, float], a: Assessment
) -> ModerationResult:
    return ModerationResult(
        flagged=flagged,
        categories=named,
        category_scores=scores,
        category_applied_input_types={label: ["image"] for label in named},
        assessment=a.model_dump(mode="json"),
    )
