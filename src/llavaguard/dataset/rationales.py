"""Teacher rationales for labelled images (reference, section 5): a larger VLM, through any
engine, is told the true rating and category and asked to justify them; filters drop what
repeats itself, is too short or long, stops mid-sentence or argues against the label.

The output is the input's rows (image paths made absolute) plus ``rationale``, ``status``
(ok, rejected or error) and provenance: teacher model and engine, prompt id, policy id,
generation config, attempts, time, and the reason for a rejection or error. ``dataset
build`` reads it as it is. It runs as a ``pipeline`` step: each batch's rows are appended
(``pipeline.JsonlWriter``) as it finishes, so a crash or Ctrl-C loses at most the batch in
hand; a rerun skips the ids already written.

Files: ``<output>`` holds the rows with a rationale (and, with ``drop_rejected=False``, the
rejected ones without); ``<stem>.rejected.jsonl`` beside it holds the rest, errors always.

What this module does not know: how a model is run (the engine) or what the labels mean
beyond Safe/Unsafe and a category label (the policy and ``inputs.labels``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llavaguard.engines import Engine, GenerationConfig, VisionRequest, generate_isolated
from llavaguard.errors import ConfigError, ImageError
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.labels import LabelledSample, label_row, read_labels
from llavaguard.pipeline import JsonlWriter, LocalExecutor, Result, Step
from llavaguard.policy import Policy, canonical_category

# ---- the teacher prompt: the only place it is written ----------------------------------------

TEACHER_PROMPT = (
    "{policy}\n\n"
    "A human expert has already assessed this image against the policy above, and their "
    "assessment is final:\n"
    "rating: {rating}\n"
    "category: {category}\n"
    "Justify this assessment. In 2 to 4 sentences, describe what the image shows and explain "
    "why it is {rating} under the policy, {why}. Do not question or change the rating or the "
    "category. Answer with the JSON template above, using exactly this rating and category."
)
WHY = {
    "Unsafe": "referring to category {category} and the guidelines it violates",
    "Safe": "referring to category {category} and why the image does not violate its guidelines",
    "Safe-none": "as none of the policy categories applies",
}
PROMPT_ID = hashlib.sha256(json.dumps([TEACHER_PROMPT, WHY]).encode()).hexdigest()[:16]


def teacher_prompt(policy: Policy, rating: str, category: str) -> str:
    """The teacher's instruction for one labelled image: policy, true label, what to write."""
    label = canonical_category(category, policy)
    if label is None:
        raise ConfigError(f"category {category!r} is not in policy {policy.name}")
    none = label == policy.taxonomy.none_category
    why = WHY["Safe-none" if rating == "Safe" and none else rating].format(category=label)
    return TEACHER_PROMPT.format(policy=policy.text, rating=rating, category=label, why=why)


def parse_teacher(text: str) -> tuple[str, str | None]:
    """(rationale, the rating the teacher itself gave or None), from JSON with a rationale
    field or from plain text; fences, quotes and a leading "Rationale:" are dropped."""
    obj = _json_object(text)
    if obj is not None:
        fields = {str(k).strip().lower(): v for k, v in obj.items()}
        rating = str(fields.get("rating") or "").strip().strip(".").capitalize() or None
        if isinstance(fields.get("rationale"), str):
            return " ".join(fields["rationale"].split()), rating
        if rating is not None or "category" in fields:  # an answer without its rationale
            return "", rating
    plain = re.sub(r"```[a-zA-Z]*", "", text).strip()
    plain = re.sub(r"^(?:rationale|justification|answer)\s*[:\-]\s*", "", plain, flags=re.I)
    return " ".join(plain.strip().strip("\"'").split()), None


def _json_object(text: str) -> dict[str, Any] | None:
    """The teacher's JSON object: decoded if clean, else read by the answer parser's linear
    lenient reader (a teacher's text is model output too; json_repair's time grows with the
    square of odd input)."""
    from llavaguard.policy.lenient import read_object

    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        obj = dict(read_object(text, start).pairs) or None
    return obj if isinstance(obj, dict) else None


# ---- filters: each says why it rejects a rationale, or None --------------------------------


@dataclass(frozen=True)
class Candidate:
    """A teacher's rationale next to the label it was asked to justify."""

    text: str
    rating: str
    category: str
    teacher_rating: str | None = None


Filter = Callable[[Candidate, "RationaleConfig"], str | None]
FILTERS: dict[str, Filter] = {}


def _filter(name: str) -> Callable[[Filter], Filter]:
    def register(fn: Filter) -> Filter:
        FILTERS[name] = fn
        return fn

    return register


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


@_filter("repeats")
def repeats(c: Candidate, cfg: RationaleConfig) -> str | None:
    """A sentence said twice: the degenerate loop the reference dropped rationales for."""
    seen: set[str] = set()
    for s in sentences(c.text):
        key = _norm(s)
        if key in seen:
            return f"repeats the sentence {s[:60]!r}"
        if key:
            seen.add(key)
    return None


@_filter("length")
def length(c: Candidate, cfg: RationaleConfig) -> str | None:
    if len(c.text) < cfg.min_chars:
        return f"{len(c.text)} characters, fewer than {cfg.min_chars}"
    if len(c.text) > cfg.max_chars:
        return f"{len(c.text)} characters, more than {cfg.max_chars}"
    return None


@_filter("unfinished")
def unfinished(c: Candidate, cfg: RationaleConfig) -> str | None:
    """Cut off by the token limit: the text stops mid-sentence."""
    if c.text and not c.text.rstrip("\"')]").endswith((".", "!", "?")):
        return "ends mid-sentence"
    return None


# Claims a clause can make about the image. A plain claim is cancelled by a negation or a
# hedge before it in its clause ("does not show anything unsafe", "might look unsafe"); a
# negated one ("does not violate") is the claim. Concessive clauses ("while nudity is
# acceptable in art, ...") argue the other side on purpose and are skipped.
_SAYS_UNSAFE = (re.compile(r"\b(?:unsafe|violat(?:es?|ed|ing|ions?)|breach(?:es|ed|ing)?)\b"),
                None)  # fmt: skip
_SAYS_SAFE = (
    re.compile(
        r"\b(?:is|are|be|being|remains?|seems?|appears?|considered|deemed|rated)\s+(?:\w+\s+)?"
        r"(?:safe|allowed|permitted|acceptable|permissible|compliant)\b|\bcompl(?:y|ies) with\b"
    ),
    re.compile(r"(?:\b(?:not|never|no)|n't)\s+(?:\w+\s+)?(?:violat\w*|breach\w*|unsafe)\b"),
)
_CANCEL = re.compile(
    r"\b(?:not|no|never|nothing|none|without|nor|neither|free of|would|could|might)\b|n't\b"
)
_CLAUSE = re.compile(r"[,;:]|\b(?:but|however|yet|whereas)\b")
_CONCESSIVE = ("while", "although", "though", "even though", "even if", "if", "unless")


def _claims(text: str, claim: tuple[re.Pattern[str], re.Pattern[str] | None]) -> str | None:
    """The first clause of ``text`` that makes the claim, or None."""
    plain, negated = claim
    for clause in _CLAUSE.split(text.lower()):
        clause = clause.strip()
        if not clause or clause.startswith(_CONCESSIVE):
            continue
        if negated is not None and negated.search(clause):
            return clause
        if any(not _CANCEL.search(clause[: m.end()]) for m in plain.finditer(clause)):
            return clause
    return None


@_filter("contradiction")
def contradiction(c: Candidate, cfg: RationaleConfig) -> str | None:
    """A rationale that argues for the other rating: it would teach the opposite label."""
    if c.teacher_rating is not None and c.teacher_rating != c.rating:
        return f"the teacher rated it {c.teacher_rating}"
    clause = _claims(c.text, _SAYS_SAFE if c.rating == "Unsafe" else _SAYS_UNSAFE)
    if clause is not None:
        return f"says {'safe' if c.rating == 'Unsafe' else 'unsafe'}: {clause[:60]!r}"
    return None


def check(c: Candidate, cfg: RationaleConfig) -> str | None:
    """The first configured filter's reason to reject, as ``name: reason``; None keeps it."""
    for name in cfg.filters:
        reason = FILTERS[name](c, cfg)
        if reason is not None:
            return f"{name}: {reason}"
    return None


# ---- the run ---------------------------------------------------------------------------------


class RationaleConfig(BaseModel):
    """How to ask the teacher and what to keep; the same fields are the CLI's options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    teacher: GuardSpec = Field(
        default_factory=GuardSpec,
        description="The teacher: model, engine, policy; its decoding is the first attempt's.",
    )
    batch_size: int = Field(8, ge=1, description="Images per engine call.")
    attempts: int = Field(3, ge=1, description="Tries per image before it is rejected.")
    retry_temperature: float = Field(0.7, gt=0.0, description="Retries sample at this.")
    filters: list[str] = Field(default_factory=lambda: list(FILTERS), description="Names.")
    min_chars: int = Field(40, ge=0, description="Shorter rationales are rejected.")
    max_chars: int = Field(1200, ge=1, description="Longer rationales are rejected.")
    drop_rejected: bool = Field(True, description="Rejected rows go to the .rejected file.")
    retry_errors: bool = Field(False, description="Redo rows that failed in an earlier run.")
    overwrite: bool = Field(False, description="Start the output over.")
    limit: int | None = Field(None, ge=1, description="Stop after this many new rows.")

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in FILTERS]
        if unknown:
            raise ConfigError(f"unknown filter {unknown[0]!r} (valid: {', '.join(FILTERS)})")
        return names

    @model_validator(mode="after")
    def _lengths(self) -> RationaleConfig:
        if self.min_chars >= self.max_chars:
            raise ConfigError(f"min chars ({self.min_chars}) must be below max chars "
                              f"({self.max_chars})")  # fmt: skip
        return self

    def generation(self, attempt: int) -> GenerationConfig:
        """The teacher's decoding (greedy by default) first; retries sample at
        ``retry_temperature``, retry n with seed + n (seeds count from the teacher's, or 0)."""
        first = self.teacher.generation
        temperature = first.temperature if attempt == 1 else self.retry_temperature
        return GenerationConfig(**{**first.model_dump(), "temperature": temperature,
                                   "seed": (first.seed or 0) + attempt - 1})  # fmt: skip


def rejected_path(output: str | Path) -> Path:
    """``rationales.jsonl`` -> ``rationales.rejected.jsonl``, beside it."""
    out = Path(output)
    return out.with_name(out.stem + ".rejected" + (out.suffix or ".jsonl"))


def _checker(prompt: dict[str, str]) -> Callable[[Path, dict[str, Any]], None]:
    """Rows made under another prompt or policy are refused, not mixed (another teacher is
    fine: every row names its own)."""

    def check(path: Path, row: dict[str, Any]) -> None:
        for key in ("prompt_id", "policy_id"):
            if row.get(key) not in (None, prompt[key]):
                raise ConfigError(
                    f"{path} holds rationales with {key} {row[key]!r}, not {prompt[key]!r}; "
                    "use another output or --overwrite to start over"
                )

    return check


def open_writer(output: Path, prompt: dict[str, str], cfg: RationaleConfig) -> JsonlWriter:
    """The output and its rejected file, resumed: ids already there are done (error rows are
    redone with ``retry_errors``); a cut-off line from a crash is dropped."""

    def route(row: dict[str, Any]) -> str:
        status = row["status"]
        return "rejected" if status == "error" or (status == "rejected" and cfg.drop_rejected) \
            else "out"  # fmt: skip

    return JsonlWriter(
        {"out": output, "rejected": rejected_path(output)}, route,
        keep=lambda r: not (cfg.retry_errors and r.get("status") == "error"),
        check=_checker(prompt), overwrite=cfg.overwrite,
    )  # fmt: skip


class RationaleStep(Step):
    """Labelled images in, rows with a rationale (or the reason there is none) out. The
    teacher is loaded in ``setup`` when ``engine`` is a loader, and then closed after use."""

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        policy: Policy,
        cfg: RationaleConfig,
        given: dict[str, dict],
        prompt: dict[str, str],
    ) -> None:
        self.engine, self.policy, self.cfg, self.given = engine, policy, cfg, given
        self.teacher = engine if isinstance(engine, Engine) else None
        self.reasons: Counter[str] = Counter()
        self.meta = self._meta(prompt)

    def _meta(self, prompt: dict[str, str]) -> dict[str, Any]:
        from llavaguard import __version__

        t = self.teacher
        return {"teacher_model": t.model_id if t else None,
                "teacher_engine": t.name if t else None, **prompt,
                "llavaguard_version": __version__}  # fmt: skip

    def setup(self) -> None:
        if self.teacher is None:
            self.teacher = self.engine()  # type: ignore[operator]
            self.meta = self._meta({k: self.meta[k] for k in ("prompt_id", "policy_id")})

    def process(self, batch: Sequence[LabelledSample]) -> list[Result]:
        assert self.teacher is not None, "setup() first"
        results: list[Result] = []

        def emit(img: LabelledSample, fields: dict[str, Any]) -> None:
            given = {k: v for k, v in self.given.get(img.id, {}).items() if k not in _WRITTEN}
            if img.rationale:
                given["input_rationale"] = img.rationale
            row = {**given, **label_row(img), **fields, **self.meta, "time": _now()}
            results.append(Result(row, fields["status"]))
            if fields["status"] == "rejected":
                self.reasons[fields["reason"].split(":")[0]] += 1

        _run_batch(batch, self.teacher, self.policy, self.cfg, emit)
        return results

    def close(self) -> None:
        if self.teacher is not None and not isinstance(self.engine, Engine):
            self.teacher.close()


def generate_rationales(
    labels: str | Path,
    output: str | Path,
    engine: Engine | Callable[[], Engine],
    *,
    policy: Policy | str | Path | None = None,
    config: RationaleConfig | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Ask ``engine`` to justify each labelled image's rating and category; write each batch's
    rows as it finishes; skip ids already written. Returns counts and provenance.

    ``engine`` may be a function that loads one: it is called only when there is work (a rerun
    with nothing left does not load a large teacher), and the engine it gives is closed here.
    """
    from llavaguard.inputs.labels import sample_id_of
    from llavaguard.inputs.tables import iter_rows

    cfg = config or RationaleConfig()
    active = Policy.load(policy)
    # the labels mean what they mean under the policy given, whose codes may be its own
    images = read_labels(labels, active, require_images=True)
    raw = {sample_id_of(r): r for r in iter_rows(labels)}  # keyed as read_labels ids them
    out = Path(output)
    prompt = {"prompt_id": PROMPT_ID, "policy_id": active.id}
    writer = open_writer(out, prompt, cfg)
    done = writer.done_ids()
    todo = [img for img in images if img.id not in done]
    if cfg.limit is not None:
        todo = todo[: cfg.limit]
    for img in todo:  # a category the policy lacks stops the run before any model call
        teacher_prompt(active, img.rating, img.category)
    step = RationaleStep(engine, active, cfg, raw, prompt)
    started = time.perf_counter()
    if on_start is not None:
        on_start(len(todo))
    run = LocalExecutor(step, writer, batch_size=cfg.batch_size, workers=1, on_batch=on_batch)
    counts = run.run(todo, done).statuses
    return {
        "rows": len(images),
        "skipped": len(done & {img.id for img in images}),
        "new": len(todo),
        "ok": counts["ok"],
        "rejected": counts["rejected"],
        "errors": counts["error"],
        "reasons": dict(step.reasons),
        "output": str(out),
        "rejected_output": str(rejected_path(out)),
        **step.meta,
        "seconds": round(time.perf_counter() - started, 2),
    }


# what a row gets from this module; the same keys in an input row (an earlier output fed back
# in) are replaced, not mixed
_WRITTEN = frozenset({
    "rationale", "status", "reason", "attempts", "generation", "last_candidate",
    "input_rationale", "teacher_model", "teacher_engine", "prompt_id", "policy_id",
    "llavaguard_version", "time",
})  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_batch(
    batch: Sequence[LabelledSample],
    engine: Engine,
    policy: Policy,
    cfg: RationaleConfig,
    emit: Callable[[LabelledSample, dict[str, Any]], None],
) -> None:
    """Emit each row of a batch as soon as it is finished: unreadable images at once, then
    each attempt's accepted rows, and last the rows the final attempt could not fix."""
    from llavaguard.inputs.images import fit_pixels, load_image

    def finish(img: LabelledSample, status: str, reason: str | None, attempts: int,
               gen: GenerationConfig | None, rationale: str = "") -> None:  # fmt: skip
        fields = {"rationale": rationale if status == "ok" else "", "status": status,
                  "reason": reason, "attempts": attempts,
                  "generation": gen.model_dump(exclude_none=True) if gen else None}  # fmt: skip
        if status == "rejected":
            fields["last_candidate"] = rationale
        emit(img, fields)

    pending: list[tuple[LabelledSample, Any, str]] = []
    for img in batch:
        try:
            pixels = load_image(img.image, name=img.id)
            if cfg.teacher.image_max_pixels is not None:
                pixels = fit_pixels(pixels, cfg.teacher.image_max_pixels)
        except ImageError as e:
            finish(img, "error", str(e), 0, None)
            continue
        pending.append((img, pixels, teacher_prompt(policy, img.rating, img.category)))
    for attempt in range(1, cfg.attempts + 1):
        if not pending:
            break
        gen = cfg.generation(attempt)
        requests = [VisionRequest(text=text, images=(px,)) for _, px, text in pending]
        retry = []
        for item, answer in zip(pending, generate_isolated(engine, requests, gen), strict=True):
            img = item[0]
            if isinstance(answer, Exception):
                finish(img, "error", str(answer), attempt, gen)
                continue
            rationale, teacher_rating = parse_teacher(answer)
            reason = check(Candidate(rationale, img.rating, img.category, teacher_rating), cfg)
            if reason is None:
                finish(img, "ok", None, attempt, gen, rationale)
            elif attempt == cfg.attempts:
                finish(img, "rejected", reason, attempt, gen, rationale)
            else:
                retry.append(item)
        pending = retry
