"""Everything one training run needs, in one place: the CLI's options are these fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import ConfigError
from llavaguard.guard.spec import GuardSpec
from llavaguard.models import DEFAULT_MODEL

# The reference recipe (section 6): the language model fully fine-tuned, vision tower and
# projector frozen, lr 1e-5, 3 epochs, cosine, 3 % warm-up, effective batch about 125.
FULL_LR = 1e-5
# LoRA needs a larger step; 2e-4 is the LLaVA LoRA recipe's rate. r 128 / alpha 256 is the
# LoRA recipe the reference mentions.
LORA_LR = 2e-4
LANGUAGE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Model id or folder to fine-tune.")
    data: Path = Field(description="Dataset folder written by `llavaguard dataset build`.")
    output: Path = Field(Path("llavaguard-model"), description="Folder for checkpoints and model.")
    method: Literal["full", "lora"] = Field("full", description="full (the reference) or lora.")
    epochs: float = Field(3.0, gt=0)
    learning_rate: float | None = Field(None, gt=0, description="Default: 1e-5 full, 2e-4 LoRA.")
    scheduler: str = Field("cosine", description="A transformers scheduler name.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(4, ge=1, description="Per device.")
    effective_batch_size: int = Field(128, ge=1, description="Reached by gradient accumulation.")
    weight_decay: float = Field(0.0, ge=0)
    train_vision: bool = Field(False, description="Also train the vision tower (full only).")
    train_projector: bool = Field(False, description="Also train the projector.")
    lora_r: int = Field(128, ge=1)
    lora_alpha: int = Field(256, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(list(LANGUAGE_LINEARS), description="Language-model linears.")
    eval_steps: int | None = Field(None, ge=1, description="Default: about 10 per run.")
    eval_samples: int = Field(128, ge=0, description="Test samples scored for rating accuracy.")
    evaluation: GuardSpec = Field(
        default_factory=lambda: GuardSpec(mode="triage"),
        description="How the in-loop evaluation judges the test samples (its model is the one "
        "being trained; model and engine fields are not used).",
    )
    save_steps: int | None = Field(None, ge=1, description="Default: as eval_steps.")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    resume: bool = Field(False, description="Continue from the last checkpoint in output.")
    merge: bool = Field(False, description="Write output/merged, a standalone model folder.")
    seed: int = 0
    system_prompt: str | None = Field("auto", description="auto: the base model's own.")
    report_to: list[str] = Field(default_factory=list, description="e.g. tensorboard, wandb.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.method == "lora" and self.train_vision:
            raise ConfigError("--train-vision needs --method full (LoRA adapts the language model)")
        if not self.data.is_dir():
            raise ConfigError(f"{self.data}: no such dataset folder")
        return self

    @property
    def lr(self) -> float:
        return self.learning_rate or (LORA_LR if self.method == "lora" else FULL_LR)
