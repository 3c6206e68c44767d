"""Fine-tune a VLM into a safeguard with TRL's SFTTrainer (PEFT for LoRA, accelerate for many
devices): a dataset folder from ``llavaguard dataset build`` in, a model folder out that
``llavaguard assess`` and ``llavaguard serve`` load.

What we add to TRL: the reference recipe as defaults, the vision tower frozen by name for every
family, the prompt rendered the way the engine renders it at inference (system prompt
included), rating accuracy and PER measured during training with the same scoring code that
``assess`` uses, and a merged, standalone output folder that remembers how it is prompted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, ClassVar

from llavaguard.errors import ConfigError
from llavaguard.guard.core import Guard
from llavaguard.guard.spec import GuardSpec
from llavaguard.models import MODEL_CARD_FILE, ModelSpec, describe_model, resolve_model
from llavaguard.train.config import TrainConfig

log = logging.getLogger(__name__)

# Parameter-name pieces of the vision side, across LLaVA, LLaVA-OneVision and Qwen2.5-VL.
VISION_PARTS = ("vision_tower", "visual.", "vision_model")
PROJECTOR_PARTS = ("multi_modal_projector", "visual.merger", "image_newline")
MERGED = "merged"


def _has(name: str, parts: tuple[str, ...]) -> bool:
    return any(p in name for p in parts)


def _part(name: str) -> str:
    """The projector check comes first: Qwen2.5-VL's merger lives inside ``visual``."""
    if _has(name, PROJECTOR_PARTS):
        return "projector"
    return "vision" if _has(name, VISION_PARTS) else "language"


def freeze(model: Any, train_vision: bool, train_projector: bool) -> None:
    """Freeze the vision tower and projector unless asked."""
    for name, p in model.named_parameters():
        p.requires_grad = {"vision": train_vision, "projector": train_projector}.get(
            _part(name), True
        )


def trainable_parameters(model: Any) -> dict[str, int]:
    """Parameters that train, by part, counted on the model the trainer holds (so LoRA
    counts its adapters, not the frozen weights under them)."""
    tally = {"language": 0, "vision": 0, "projector": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tally[_part(name)] += p.numel()
    return tally


def load_splits(data: Path, system_prompt: str | None) -> tuple[Any, Any | None]:
    """(train, test) in TRL's conversational prompt/completion form with PIL images: from the
    ``hf`` folder when the build wrote one, else from the TRL JSONL beside it."""
    from datasets import Image, List, load_dataset, load_from_disk

    if (data / "hf").is_dir():
        dd = load_from_disk(str(data / "hf"))
    else:
        files = {s: str(data / f"{s}.trl.jsonl") for s in ("train", "test")}
        files = {s: f for s, f in files.items() if Path(f).is_file()}
        if "train" not in files:
            raise ConfigError(f"{data}: no hf/ folder and no train.trl.jsonl (run dataset build)")
        dd = load_dataset("json", data_files=files)
        dd = dd.cast_column("images", List(Image()))
    keep = ["images", "prompt", "completion"]
    system = {"role": "system", "content": [{"type": "text", "text": system_prompt or ""}]}
    out = []
    for split in ("train", "test"):
        if split not in dd:
            out.append(None)
            continue
        ds = dd[split].select_columns(keep)
        if system_prompt:
            ds = ds.map(lambda r: {"prompt": [system, *r["prompt"]]})
        out.append(ds)
    if out[0] is None or len(out[0]) == 0:
        raise ConfigError(f"{data}: the train split is empty")
    return out[0], out[1]


def _dtype(name: str) -> Any:
    import torch

    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU and MPS train in float32: bf16 steps are slow there


def _eval_samples(data: Path, n: int, seed: int) -> list[Any]:
    from llavaguard.inputs.labels import read_labels

    path = data / "test.labels.jsonl"
    if n == 0 or not path.is_file():
        return []
    samples = read_labels(path, empty_ok=True)  # --test-fraction 0 writes it empty
    random.Random(seed).shuffle(samples)
    return samples[:n]


def guard_metrics(guard: Any, samples: list[Any], batch_size: int = 8) -> dict[str, float]:
    """Rating accuracy, balanced accuracy, PER and category accuracy of ``guard`` on labelled
    samples, each under its own policy (the same code path as ``assess``)."""
    from collections import defaultdict

    from llavaguard.evaluate import metrics as M

    by_policy: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        by_policy[s.policy.id].append(s)
    rating: dict[str, str | None] = {}
    category: dict[str, str | None] = {}
    for group in by_policy.values():
        for a in guard.assess_iter(
            [s.image for s in group], policy=group[0].policy, ids=[s.id for s in group],
            batch_size=batch_size,
        ):  # fmt: skip
            rating[a.image], category[a.image] = a.rating, a.category
    expected = [s.rating for s in samples]
    predicted = [rating.get(s.id) for s in samples]
    r = M.rating_metrics(expected, predicted)
    per = M.policy_exception_rate([s.exception for s in samples], predicted)
    cat = M.category_accuracy([s.category for s in samples], [category.get(s.id) for s in samples])
    out = {"rating_accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
           "per": per["per"], "category_accuracy": cat["exact"]}  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


def _trainer_class() -> type:
    from trl import SFTTrainer

    class GuardTrainer(SFTTrainer):
        """SFTTrainer that also scores held-out samples as a safeguard at each evaluation."""

        guard_samples: ClassVar[list[Any]] = []
        guard_spec: GuardSpec | None = None  # how to judge; set by train()
        guard_model: ModelSpec | None = None  # the trained model's family and system prompt

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            metrics = super().evaluate(*args, **kwargs)
            if not self.guard_samples or self.args.world_size > 1 or self.guard_spec is None:
                return metrics  # the scorer runs one process on one unwrapped model
            from llavaguard.engines.transformers import TransformersEngine

            model = self.accelerator.unwrap_model(self.model)
            engine = TransformersEngine(model, self.processing_class, self.guard_model)
            guard = Guard.from_spec(self.guard_spec, engine=engine)
            try:
                extra = {
                    f"eval_{k}": v for k, v in guard_metrics(guard, self.guard_samples).items()
                }
            finally:
                model.train()
            self.log(extra)
            metrics.update(extra)
            return metrics

    return GuardTrainer


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training; returns a summary (paths, steps, last metrics) also written to
    ``output/train_summary.json``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base_path = resolve_model(cfg.model)
    spec = describe_model(cfg.model, base_path)
    system = spec.system_prompt if cfg.system_prompt == "auto" else (cfg.system_prompt or None)
    train_ds, test_ds = load_splits(cfg.data, system)
    dtype = _dtype(cfg.dtype)
    processor = AutoProcessor.from_pretrained(base_path)
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype)
    freeze(model, cfg.train_vision, cfg.train_projector)
    plan = _plan(cfg, len(train_ds), test_ds)
    if plan["has_eval"] and len(test_ds) > cfg.eval_samples:  # the loss on a sample, as the scores
        test_ds = test_ds.shuffle(seed=cfg.seed).select(range(cfg.eval_samples))
    trainer = _trainer_class()(
        model=model,
        args=_sft_args(cfg, dtype, plan),
        train_dataset=train_ds,
        eval_dataset=test_ds if plan["has_eval"] else None,
        processing_class=processor,
        peft_config=_lora_config(cfg),
    )
    trainable = trainable_parameters(trainer.model)
    trainer.guard_samples = _eval_samples(cfg.data, cfg.eval_samples, cfg.seed)
    trainer.guard_spec = cfg.evaluation
    trainer.guard_model = ModelSpec(id="training", family=spec.family, size="",
                                    system_prompt=system)  # fmt: skip
    resume = _resume_point(cfg)
    log.info("trainable parameters: %s; %d optimiser steps", trainable, plan["steps"])
    result = trainer.train(resume_from_checkpoint=resume)
    final = (
        _evaluation_at(trainer.state.log_history, result.global_step) if plan["has_eval"] else {}
    )
    if plan["has_eval"] and not final:  # the last step was not an evaluation step
        final = trainer.evaluate()
    card = {"base": cfg.model, "family": spec.family, "system_prompt": system,
            "method": cfg.method, "size": spec.size}  # fmt: skip
    summary = {"config": json.loads(cfg.model_dump_json()), "steps": result.global_step,
               "train_loss": result.training_loss, "final_eval": final,
               "trainable_parameters": trainable, "resumed_from": resume}  # fmt: skip
    return _save(cfg, trainer, processor, card, summary, plan["world"])


def _plan(cfg: TrainConfig, n_train: int, test_ds: Any) -> dict[str, Any]:
    """Processes, accumulation, optimiser steps and evaluation cadence for this run."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    accum = max(1, math.ceil(cfg.effective_batch_size / (cfg.batch_size * world)))
    steps = math.ceil(n_train / (cfg.batch_size * world * accum) * cfg.epochs)
    has_eval = test_ds is not None and len(test_ds) > 0 and cfg.eval_samples > 0
    return {"world": world, "accum": accum, "steps": steps, "has_eval": has_eval,
            "eval_steps": cfg.eval_steps or max(1, steps // 10)}  # fmt: skip


def _lora_config(cfg: TrainConfig) -> Any:
    """LoRA on the language model's linears only (the vision tower has q/k/v names too)."""
    if cfg.method != "lora":
        return None
    from peft import LoraConfig

    targets = "|".join(cfg.lora_targets)
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=rf".*language_model.*\.({targets})",
        modules_to_save=["multi_modal_projector"] if cfg.train_projector else None,
        task_type="CAUSAL_LM",
    )  # fmt: skip


def _sft_args(cfg: TrainConfig, dtype: Any, plan: dict[str, Any]) -> Any:
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(cfg.output),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=plan["accum"],
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if plan["has_eval"] else "no",
        eval_steps=plan["eval_steps"],
        save_strategy="steps",
        save_steps=cfg.save_steps or plan["eval_steps"],
        save_total_limit=cfg.save_total_limit,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}),
        max_length=None,  # never cut a sample: a cut answer teaches a broken JSON
        completion_only_loss=True,  # loss on the answer only
        seed=cfg.seed,
        report_to=cfg.report_to or "none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
        save_only_model=False,
    )


def _resume_point(cfg: TrainConfig) -> str | None:
    if not cfg.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    resume = get_last_checkpoint(str(cfg.output)) if cfg.output.is_dir() else None
    if resume is None:
        log.warning("no checkpoint in %s: starting from the beginning", cfg.output)
    return resume


def _save(
    cfg: TrainConfig,
    trainer: Any,
    processor: Any,
    card: dict[str, Any],
    summary: dict[str, Any],
    world: int,
) -> dict[str, Any]:
    """final/ (weights, processor, model card), merged/ when asked, train_summary.json."""
    adapter_dir = cfg.output / "final"
    trainer.save_model(str(adapter_dir))
    processor.save_pretrained(str(adapter_dir))
    (adapter_dir / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    summary = {**summary, "final": str(adapter_dir), "log_history": trainer.state.log_history}
    if cfg.merge and trainer.is_world_process_zero():
        # one process holds the whole model; sharded (ZeRO-3, FSDP) it is read back from final/
        in_memory = trainer.model if world == 1 else None
        summary["merged"] = str(merge(adapter_dir, cfg.output / MERGED, card, in_memory))
    if trainer.is_world_process_zero():
        (cfg.output / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _evaluation_at(history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """What an evaluation at ``step`` already logged (its loss and its safeguard figures are
    two entries), so the run does not evaluate the same weights twice; {} if none did."""
    out: dict[str, Any] = {}
    for entry in history:
        if entry.get("step") == step:
            out.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return out if "eval_loss" in out else {}


def merge(src: Path, out: Path, card: dict[str, Any], model: Any | None = None) -> Path:
    """A standalone model folder: LoRA weights folded into the base, or the fine-tuned model
    as it is, with the processor and the model card that says how it is prompted."""
    from transformers import AutoProcessor

    if model is None:
        from transformers import AutoModelForImageTextToText

        if (src / "adapter_config.json").is_file():
            from peft import PeftModel

            base = AutoModelForImageTextToText.from_pretrained(resolve_model(card["base"]))
            model = PeftModel.from_pretrained(base, str(src))
        else:
            model = AutoModelForImageTextToText.from_pretrained(src)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    AutoProcessor.from_pretrained(src).save_pretrained(str(out))
    (out / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out
