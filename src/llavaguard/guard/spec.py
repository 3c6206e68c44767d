"""The Guard spec: everything needed to build a Guard, as one typed, recordable config.

Every command that judges images (assess, annotate, evaluate, serve, dataset rationales,
train's in-loop evaluation) embeds a ``GuardSpec`` and asks it for the engine or the Guard;
nothing else turns options into engines. Its fields are the CLI's shared options
(``llavaguard.cli.options``), so names, defaults and help cannot drift between commands, and
``record()`` is what artifacts store about the safeguard that made them (secrets left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llavaguard.engines import ENGINES, Engine, EngineOptions, GenerationConfig
from llavaguard.errors import ConfigError
from llavaguard.inputs.limits import ImageLimits
from llavaguard.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from llavaguard.policy import Policy


class GuardSpec(BaseModel):
    """A model in an engine, a policy with its exceptions, and how to decode and judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="Hub id, local folder, or served model name.")
    engine: str = Field(
        "transformers",
        description="transformers (local), vllm (a vLLM server: exact scores, triage) or "
        "openai (any OpenAI-compatible server: SGLang, llavaguard).",
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="The engine's own options (see its Options)."
    )
    policy: str | dict[str, Any] | None = Field(
        None, description="Built-in policy name, a YAML/JSON policy file, or policy data."
    )
    allow: list[str] = Field(
        default_factory=list, description="Category codes declared allowed, e.g. O3,O6."
    )
    sensitive: list[str] = Field(
        default_factory=list, description="Category codes declared sensitive (forbidden in full)."
    )
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    mode: Literal["full", "triage"] = Field(
        "full", description="full: rating, category, rationale, scores. triage: no rationale."
    )
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Decide the rating as P(Unsafe) >= T instead of argmax."
    )
    constrained: bool = Field(True, description="Constrain answers to the policy's JSON schema.")
    scores: bool = Field(True, description="Score ratings and categories where the engine can.")
    image_max_pixels: int | None = Field(
        None,
        ge=28 * 28,
        description="Downscale images to at most this many pixels before the model (fewer "
        "image tokens, faster); e.g. 147456 = one 384x384 tile.",
    )
    image_limits: ImageLimits = Field(default_factory=ImageLimits)
    calibration: str | None = Field(
        None,
        description="A calibration file from 'llavaguard calibrate': scores become calibrated "
        "probabilities (and its threshold decides, unless --threshold is given).",
    )
    multi_label: bool = Field(
        False,
        description="Also give P(violates c) for every category c in force (asked under a "
        "policy where only c is in force; costs about one more prompt's text per category).",
    )

    @field_validator("allow", "sensitive", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        from llavaguard.policy import parse_codes

        return parse_codes(value) if isinstance(value, str) or value is None else value

    @model_validator(mode="after")
    def _check(self) -> GuardSpec:
        options = self.options()  # the engine's own model refuses what it does not take
        object.__setattr__(self, "engine_options", _set_fields(options))
        self.load_policy()  # a bad policy or code fails here, before any model is loaded
        if self.calibration is not None:  # and a bad calibration file
            from llavaguard.guard.calibration import Calibration

            Calibration.load(self.calibration)
        if self.constrained and self.generation.num_beams > 1:
            raise ConfigError(
                "constrained answers need num_beams=1; turn constraints off to use beam search"
            )
        return self

    # ---- what it builds --------------------------------------------------------------------
    def engine_class(self) -> type[Engine]:
        return ENGINES.get(self.engine)

    def options(self) -> EngineOptions:
        """The engine's options, validated by the engine's own strict model."""
        from pydantic import ValidationError

        cls = self.engine_class().Options
        try:
            return cls.model_validate(self.engine_options)
        except ValidationError as e:
            raise ConfigError(_options_error(self.engine, e)) from None

    def load_policy(self) -> Policy:
        from llavaguard.policy import Policy

        base = Policy.from_data(self.policy) if isinstance(self.policy, dict) else self.policy
        return Policy.load(base, allow=self.allow, sensitive=self.sensitive)

    def load_engine(self) -> Engine:
        """The engine alone (a teacher for rationales needs no Guard around it)."""
        return self.engine_class().load(self.model, self.options())

    def record(self) -> dict[str, Any]:
        """What artifacts store about the safeguard: every field, secrets masked."""
        data = self.model_dump(mode="json", exclude={"engine_options"})
        data["engine_options"] = self.options().model_dump(mode="json", exclude_defaults=True)
        if isinstance(self.policy, str) and Path(self.policy).is_file():
            data["policy_id"] = self.load_policy().id
        return data


def _set_fields(options: EngineOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.model_fields_set}


def _options_error(engine: str, e: Any) -> str:
    first = e.errors()[0]
    name = ".".join(str(x) for x in first.get("loc", ())) or "options"
    flag = "--" + name.replace("_", "-")
    if first.get("type") == "extra_forbidden":
        return f"the {engine} engine does not take {name} ({flag})"
    if first.get("type") == "missing":
        return f"the {engine} engine needs {name} ({flag})"
    return f"{engine} engine option {name}: {first.get('msg', e)}"
