"""``llavaguard train``: fine-tune a VLM into a safeguard (TRL SFTTrainer, PEFT, accelerate)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llavaguard.cli.common import err_console
from llavaguard.cli.options import shared_option
from llavaguard.models import DEFAULT_MODEL


def train(
    model: str | None = shared_option("model"),
    data: Path = typer.Option(..., "--data", help="Folder written by `llavaguard dataset build`."),
    output: Path = typer.Option(Path("llavaguard-model"), "--output", "-o"),
    method: str = typer.Option("full", "--method", help="full (the reference recipe) or lora."),
    epochs: float = typer.Option(3.0, "--epochs"),
    learning_rate: float | None = typer.Option(None, "--lr", help="Default: 1e-5 full, 2e-4 LoRA."),
    batch_size: int = typer.Option(4, "--batch-size", help="Per device."),
    effective_batch_size: int = typer.Option(
        128, "--effective-batch-size", help="Reached by gradient accumulation."
    ),
    warmup_ratio: float = typer.Option(0.03, "--warmup-ratio"),
    scheduler: str = typer.Option("cosine", "--scheduler"),
    train_vision: bool = typer.Option(False, "--train-vision", help="Also train the vision tower."),
    train_projector: bool = typer.Option(
        False, "--train-projector", help="Also train the projector."
    ),
    lora_r: int = typer.Option(128, "--lora-r"),
    lora_alpha: int = typer.Option(256, "--lora-alpha"),
    eval_steps: int | None = typer.Option(None, "--eval-steps", help="Default: ten per run."),
    eval_samples: int = typer.Option(
        128, "--eval-samples", help="Test samples scored for rating accuracy and PER."
    ),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Default: as --eval-steps."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    dtype: str | None = shared_option("dtype"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    merge: bool = typer.Option(False, "--merge", help="Also write OUTPUT/merged, a model folder."),
    seed: int = typer.Option(0, "--seed"),
    report_to: str = typer.Option("", "--report-to", help="e.g. tensorboard or wandb."),
) -> None:
    """Fine-tune MODEL (by default the released LlavaGuard v1.2 0.5B) on a built dataset: loss
    on the answer only, vision tower frozen, the reference recipe's defaults. Writes
    checkpoints, OUTPUT/final, train_summary.json, and with --merge a standalone
    OUTPUT/merged that `llavaguard assess` and `serve` load."""
    from llavaguard.train import TrainConfig
    from llavaguard.train import train as run

    cfg = TrainConfig(
        model=model or DEFAULT_MODEL, data=data, output=output, method=method, epochs=epochs,
        learning_rate=learning_rate, batch_size=batch_size,
        effective_batch_size=effective_batch_size, warmup_ratio=warmup_ratio,
        scheduler=scheduler, train_vision=train_vision, train_projector=train_projector,
        lora_r=lora_r, lora_alpha=lora_alpha, eval_steps=eval_steps, eval_samples=eval_samples,
        save_steps=save_steps, gradient_checkpointing=gradient_checkpointing, dtype=dtype or "auto",
        resume=resume, merge=merge, seed=seed,
        report_to=[r for r in report_to.split(",") if r],
    )  # fmt: skip
    summary = run(cfg)
    final = {k: summary[k] for k in ("steps", "train_loss", "final_eval", "final") if k in summary}
    if "merged" in summary:
        final["merged"] = summary["merged"]
    typer.echo(json.dumps(final, indent=2))
    err_console.print(f"model: {summary.get('merged', summary['final'])}")
