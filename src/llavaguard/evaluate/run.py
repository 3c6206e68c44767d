"""One evaluation: labels + predictions (from a file or a model) -> metrics -> report files.

``compute`` is pure (joined rows in, a JSON-ready dict out); ``evaluate`` does the reading,
the optional model run and the writing around it.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import ConfigError
from llavaguard.evaluate import metrics as M
from llavaguard.evaluate.data import Joined, Prediction, join, load_predictions
from llavaguard.guard.core import Guard
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.labels import LabelledSample, read_labels
from llavaguard.pipeline import FAILED, JsonlWriter, LocalExecutor, Result, Step, is_failed

SCHEMA_VERSION = 1


class EvalConfig(BaseModel):
    """Everything one evaluation needs; the same fields are the CLI's options."""

    model_config = ConfigDict(extra="forbid")

    labels: Path | None = Field(
        None, description="Labelled set: JSONL, CSV, Parquet or LLaVA JSON."
    )
    benchmark: str | None = Field(
        None,
        description="Or: a public benchmark read from --data: unsafebench, vlguard, safeeditbench "
        "or llavaguard (docs/evaluation.md, Public benchmarks).",
    )
    data: Path | None = Field(None, description="With --benchmark: the folder of its local copy.")
    split: str | None = Field(None, description="With --benchmark: the split (default: test).")
    label_map: Path | None = Field(
        None, description="With --benchmark: YAML/JSON {its category: O-code or NA}."
    )
    predictions: Path | None = Field(None, description="Predictions file to score.")
    guard: GuardSpec | None = Field(None, description="Or: the safeguard to predict with.")
    output: Path = Field(Path("eval-report"), description="Folder for the report files.")
    name: str | None = Field(None, description="Run name in reports (default: output folder).")
    variants: list[str] = Field(
        default_factory=list,
        description="Policy-generalisation variants to add to the labelled set (needs --model).",
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for 95% intervals.")
    seed: int = Field(0, description="Seed for bootstrap and variant generation.")
    bins: int = Field(10, ge=2, description="Calibration bins.")
    plots: bool = Field(True, description="Write PNG plots.")
    batch_size: int = Field(8, ge=1, description="With a guard: images per engine batch.")
    calibration: Path | None = Field(
        None, description="Report ECE and Brier before and after this calibration file."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvalConfig:
        self._one_labelled_set()
        if self.guard is not None and self.guard.calibration is not None:
            # judged raw; the report shows the scores before and after the calibration
            if self.calibration is None:
                self.calibration = Path(self.guard.calibration)
            self.guard = self.guard.model_copy(update={"calibration": None})
        if (self.predictions is None) == (self.guard is None):
            raise ConfigError("give either a predictions file or a model, not both or neither")
        if self.variants and self.guard is None:
            raise ConfigError(
                "policy variants need a model to judge them (or write them with "
                "'llavaguard evaluate variants' and predict them yourself)"
            )
        return self

    def _one_labelled_set(self) -> None:
        """A labels file, or a benchmark with its folder; the benchmark's options only with it."""
        from llavaguard.inputs.benchmarks import BENCHMARKS

        if self.benchmark is None:
            if self.labels is None:
                raise ConfigError(
                    "give a labelled set: a labels file, or --benchmark NAME --data PATH"
                )
            given = [n for n in ("data", "split", "label_map") if getattr(self, n) is not None]
            if given:
                raise ConfigError(f"--{given[0].replace('_', '-')} goes with --benchmark")
            return
        if self.labels is not None:
            raise ConfigError("give either a labels file or --benchmark, not both")
        BENCHMARKS.get(self.benchmark)  # an unknown name: the one line that lists them
        if self.data is None:
            raise ConfigError(f"--benchmark {self.benchmark} needs --data, its local copy's folder")

    @property
    def source(self) -> str:
        """What the labelled set is, as reports name it."""
        if self.benchmark is None:
            return str(self.labels)
        from llavaguard.inputs.benchmarks import DEFAULT_SPLIT

        return f"{self.benchmark} {self.split or DEFAULT_SPLIT} ({self.data})"


BENCHMARK_IMAGES = "benchmark-images"  # images a benchmark keeps as bytes, written for a model


def read_samples(cfg: EvalConfig) -> tuple[list[LabelledSample], list[str]]:
    """The labelled set of ``cfg``: its labels file, or its benchmark's split (whose images
    kept as bytes go to ``output/benchmark-images`` when a model will look), and notes."""
    if cfg.benchmark is None:
        assert cfg.labels is not None  # EvalConfig makes sure
        return read_labels(cfg.labels), []
    from llavaguard.inputs.benchmarks import read_benchmark

    assert cfg.data is not None
    images = cfg.output / BENCHMARK_IMAGES if cfg.guard is not None else None
    return read_benchmark(cfg.benchmark, cfg.data, cfg.split, cfg.label_map, images)


# ---- metrics over joined rows --------------------------------------------------------------


class Columns:
    """The joined rows as numpy arrays, read off the rows once: every slice is an index into
    them and every metric counts with numpy (a Python pass per slice and per resample took
    minutes on 100,000 rows)."""

    def __init__(self, rows: Sequence[Joined]) -> None:
        exception: dict[tuple[int, str], str | None] = {}  # per (policy, category), not per row

        def exc(s: LabelledSample) -> str | None:
            key = (id(s.policy), s.category + "\0" + (s.augmentation or ""))
            if key not in exception:
                exception[key] = s.exception
            return exception[key]

        def col(values: Any, dtype: Any = object) -> np.ndarray:
            return np.array(list(values), dtype=dtype)

        self.expected = col(r.sample.rating for r in rows)
        self.predicted = col(r.predicted_rating for r in rows)
        self.exception = col(exc(r.sample) for r in rows)
        self.category = col(r.sample.category for r in rows)
        self.predicted_category = col(r.predicted_category for r in rows)
        self.score = M.floats([r.score for r in rows])
        self.missing = col((r.prediction is None for r in rows), bool)
        self.incomplete = col((bool(r.prediction and not r.prediction.valid) for r in rows), bool)
        self.mismatch = col((r.policy_mismatch for r in rows), bool)
        self.augmentation = col(r.sample.augmentation for r in rows)
        self.variant = col(r.sample.variant for r in rows)

    def take(self, idx: np.ndarray) -> Columns:
        """The rows at ``idx``, as Columns."""
        out = object.__new__(Columns)
        out.__dict__ = {k: v[idx] for k, v in self.__dict__.items()}
        return out


def slice_metrics(c: Columns, bins: int = 10) -> dict[str, Any]:
    return {
        "n": len(c.expected),
        "missing": int(c.missing.sum()),
        "invalid": int(np.count_nonzero((c.predicted != "Safe") & (c.predicted != "Unsafe"))),
        "incomplete": int(c.incomplete.sum()),
        "policy_mismatch": int(c.mismatch.sum()),
        "rating": {how: M.rating_metrics(c.expected, c.predicted, how) for how in M.INVALID_AS},
        "per": {
            how: M.policy_exception_rate(c.exception, c.predicted, how) for how in M.INVALID_AS
        },
        "category": {
            how: M.category_accuracy(c.category, c.predicted_category, how) for how in M.INVALID_AS
        },
        "scores": M.score_metrics(c.expected, c.score, bins),
    }


def _groups(keys: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices by key, keys sorted; rows whose key is None belong to no group."""
    out: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k is not None:
            out[k].append(i)
    return {k: np.array(out[k], dtype=int) for k in sorted(out)}


def intervals(c: Columns, resamples: int, seed: int) -> dict[str, Any]:
    """95% bootstrap intervals of the headline metrics, both ways of counting invalid answers."""
    out: dict[str, Any] = {"resamples": resamples, "level": 0.95}
    for how in M.INVALID_AS:
        ci = M.rating_bootstrap(c.expected, c.predicted, how, resamples=resamples, seed=seed)
        ci["per"] = M.per_bootstrap(c.exception, c.predicted, how, resamples=resamples, seed=seed)
        out[how] = ci
    if np.isfinite(c.score).any():
        # a curve per resample once: kept to 300 resamples, as before it was vectorised
        out["roc_auc"] = M.roc_auc_bootstrap(c.expected, c.score, min(resamples, 300), seed)
    return out


def compute(
    rows: Sequence[Joined], *, bootstrap: int = 1000, seed: int = 0, bins: int = 10
) -> dict[str, Any]:
    """Every metric, overall and by slice. JSON-ready; undefined values are None.

    Generated policy variants are scored in ``by_variant`` only (beside ``original``, the
    default-policy samples they came from) and in ``variants`` (all of them pooled); every
    other figure is on the labelled set as given, so it stays comparable with the paper's.
    """
    everything = Columns(rows)
    made_at = np.flatnonzero(np.fromiter((bool(v) for v in everything.variant), bool))
    labelled = everything.take(np.setdiff1d(np.arange(len(rows)), made_at))
    made = everything.take(made_at)
    default = labelled.take(
        np.flatnonzero((labelled.augmentation == None) & (labelled.variant == None))  # noqa: E711
    )
    by_variant: dict[str, Any] = {}
    if len(made_at):
        by_variant["original"] = slice_metrics(default, bins)
        for k, idx in _groups(made.variant).items():
            by_variant[k] = slice_metrics(made.take(idx), bins)
    return {
        "overall": slice_metrics(labelled, bins),
        "default_policy": slice_metrics(default, bins),
        "by_augmentation": {
            k: slice_metrics(labelled.take(idx), bins)
            for k, idx in _groups(labelled.augmentation).items()
        },
        "by_category": {
            k: slice_metrics(labelled.take(idx), bins)
            for k, idx in _groups(labelled.category).items()
        },
        "variants": slice_metrics(made, bins) if len(made_at) else None,
        "by_variant": by_variant,
        "intervals": intervals(labelled, bootstrap, seed),
        "reliability": M.reliability(labelled.expected, labelled.score, bins),
    }


# ---- the whole run ---------------------------------------------------------------------------


PREDICTIONS_FILE = "predictions.jsonl"


class PredictStep(Step):
    """Labelled samples in, one prediction each: each sample judged under its own policy (a
    batch that spans policies runs as one engine call per policy)."""

    def __init__(self, spec: GuardSpec) -> None:
        self.spec = spec
        self.guard: Any = None
        self.made: dict[str, Prediction] = {}

    def id_of(self, item: LabelledSample) -> str:
        return item.id

    def setup(self) -> None:
        self.guard = Guard.from_spec(self.spec)

    def process(self, batch: Sequence[LabelledSample]) -> list[Result]:
        results = [_result(Prediction(id=s.id, valid=False, error="the sample has no image",
                                      policy_id=s.policy.id), {"error": "no image"})
                   for s in batch if s.image is None]  # fmt: skip
        groups: dict[str, list[LabelledSample]] = defaultdict(list)
        for s in batch:
            if s.image is not None:
                groups[s.policy.id].append(s)
        for group in groups.values():
            images, ids = [s.image for s in group], [s.id for s in group]
            answers = self.guard.assess(images, policy=group[0].policy, ids=ids,
                                        batch_size=len(group))  # fmt: skip
            for a in answers:
                p = Prediction(id=a.image, rating=a.rating, category=a.category, score=a.score,
                               valid=a.valid, error=a.error, policy_id=a.policy_id,
                               rationale=a.rationale, model=a.model)  # fmt: skip
                results.append(_result(p, a.model_dump()))
        self.made.update((r.row["id"], Prediction.model_validate(r.row)) for r in results)
        return results

    def close(self) -> None:
        if self.guard is not None:
            self.guard.close()


def _result(p: Prediction, record: dict[str, Any]) -> Result:
    return Result(p.model_dump(mode="json"), FAILED if is_failed(record) else "predicted")


def predict(
    samples: Sequence[LabelledSample],
    cfg: EvalConfig,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Prediction], dict[str, Any]]:
    """Judge every sample under its own policy with ``cfg.guard``, on the local executor.

    Samples are ordered by policy so batches share one. Each batch's answers are appended to
    ``output/predictions.jsonl`` as they come; a rerun keeps the answers already there (same
    sample id, same policy, a rating given) and judges only the rest, so an interrupted run
    loses at most a batch and a rerun retries what failed.
    """
    spec = cfg.guard
    assert spec is not None  # EvalConfig makes sure
    policy_of = {s.id: s.policy.id for s in samples}
    writer = JsonlWriter(
        {"predictions": cfg.output / PREDICTIONS_FILE},
        keep=lambda r: r.get("rating") is not None and r.get("policy_id") == policy_of.get(r["id"]),
    )  # a rerun retries what has no rating; a prediction under another policy is redone
    done = {str(r["id"]): Prediction.model_validate(r) for r in writer.rows()}
    reused = len(done)
    order = {pid: i for i, pid in enumerate(dict.fromkeys(policy_of.values()))}
    todo = sorted((s for s in samples if s.id not in done), key=lambda s: order[s.policy.id])
    step = PredictStep(spec)
    if todo and on_start is not None:
        on_start(len(todo))
    LocalExecutor(step, writer, batch_size=cfg.batch_size, workers=1, on_batch=on_batch).run(
        todo, set(done)
    )
    done.update(step.made)
    engine = step.guard.engine.name if step.guard is not None else None
    info = {"model": spec.model, "engine": engine, "mode": spec.mode, "reused": reused}
    return [done[s.id] for s in samples], info


def config_record(cfg: EvalConfig) -> dict[str, Any]:
    """The run's settings as reports store them: the guard by its record (secrets masked)."""
    data = cfg.model_dump(mode="json", exclude={"guard"})
    data["guard"] = cfg.guard.record() if cfg.guard is not None else None
    return data


def _check_matches(
    cfg: EvalConfig, rows: Sequence[Joined], predictions: Sequence[Prediction]
) -> list[str]:
    """No prediction matching any sample is an error (an id column misread, the wrong file:
    a report of 0 scored samples would pass for a result); some not matching is a warning."""
    matched = {r.prediction.id for r in rows if r.prediction is not None}
    if not matched:
        raise ConfigError(
            f"{cfg.predictions}: none of its {len(predictions)} predictions matches a sample "
            f"of {cfg.source} by id (or image path)"
        )
    unmatched = len(predictions) - len(matched)
    if not unmatched:
        return []
    return [f"{cfg.predictions}: {unmatched} prediction(s) match no labelled sample, ignored"]


def evaluate(
    cfg: EvalConfig | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Score predictions (from a file or from ``cfg.guard``) against labels and write
    report.json, report.md, samples.jsonl and plots/ to ``cfg.output``. Returns the report."""
    from llavaguard import __version__
    from llavaguard.evaluate.report import write_reports
    from llavaguard.evaluate.variants import make_variants

    cfg = cfg or EvalConfig(**kw)
    samples, notes = read_samples(cfg)
    if cfg.variants:
        samples = samples + make_variants(samples, cfg.variants, seed=cfg.seed)
    source: dict[str, Any]
    if cfg.guard is not None:
        predictions, source = predict(samples, cfg, on_start, on_batch)
    else:
        assert cfg.predictions is not None
        predictions = load_predictions(cfg.predictions, notes)
        source = {"predictions": str(cfg.predictions)}
    rows = join(samples, predictions)
    if cfg.guard is None:
        notes += _check_matches(cfg, rows, predictions)
    report = {
        "schema": SCHEMA_VERSION,
        "name": cfg.name or cfg.output.name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "llavaguard_version": __version__,
        "labels": cfg.source,
        **source,
        "policies": sorted(
            {p.describe() for p in {id(s.policy): s.policy for s in samples}.values()}
        ),
        "config": config_record(cfg),
        "warnings": notes,
        **compute(rows, bootstrap=cfg.bootstrap, seed=cfg.seed, bins=cfg.bins),
    }
    if cfg.calibration is not None:
        from llavaguard.evaluate.calibration import held_out

        report["calibration"] = held_out(rows, cfg.calibration, cfg.bins)
    write_reports(report, rows, cfg.output, plots=cfg.plots)
    return report
