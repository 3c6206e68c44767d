"""The result of judging one image against one policy: the record every consumer reads.

CLI output, the Python API, and (later) the server and dataset writers all emit this one
model, so a record means the same thing wherever it was produced.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Rating = Literal["Safe", "Unsafe"]


class Assessment(BaseModel):
    """One image judged under one policy by one model."""

    model_config = ConfigDict(frozen=True)

    image: str = Field(description="The input's id: its path as given, or bytes-N / image-N.")
    rating: Rating | None = Field(None, description="Safe or Unsafe; None when not recovered.")
    category: str | None = Field(None, description="A category label of the policy, or None.")
    rationale: str | None = Field(None, description="The model's justification.")
    score: float | None = Field(
        None, description="P(Unsafe), when the engine gives scores (calibrated with --calibration)."
    )
    raw_score: float | None = Field(
        None, description="With --calibration: P(Unsafe) as the model gave it."
    )
    category_scores: dict[str, float] | None = Field(
        None, description="P(category | rating) for each category of the policy."
    )
    violations: dict[str, float] | None = Field(
        None,
        description="With --multi-label: for each category code in force, P(the image "
        "violates it), asked under the policy in which only that category is in force.",
    )
    valid: bool = Field(False, description="The answer was read completely and is consistent.")
    error: str | None = Field(
        None,
        description="Why the record is incomplete. With raw=None the input failed before the "
        "model answered (bad image, engine error); otherwise the answer was not fully readable.",
    )
    raw: str | None = Field(None, description="The model's text as generated.")
    policy: str = Field(description="The policy's name and declared exceptions.")
    policy_id: str = Field(description="sha256 of the rendered policy prompt.")
    model: str = Field(description="The model id or folder that answered.")
    engine: str = Field(description="The engine that ran the model.")
    mode: str = Field("full", description="full (with rationale) or triage (scores only).")

    @property
    def failed(self) -> bool:
        """The input never reached an answer (as opposed to an unreadable answer)."""
        return self.error is not None and self.raw is None

    @property
    def unsafe(self) -> bool:
        return self.rating == "Unsafe"
