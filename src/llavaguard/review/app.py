"""The review page's HTTP side: one FastAPI app over one results folder or assess file.

    GET  /                      the page (review/page.html)
    GET  /api/rows?...          a page of rows (``Query``'s fields), each with its correction
    GET  /api/item/{id}         one row whole: rationale, category scores, correction
    GET  /api/image/{id}        the image, or ?thumb=1 a thumbnail (made once, cached)
    POST /api/corrections       {"id", "rating", "category", "seen"}: 409 with what is there
    POST /api/undo              {"id", "seen"}
    GET  /api/agreement         the model against the reviewers
    GET  /api/policy            the policy the results were judged by: categories and text
    POST /api/playground        {"id", "allow", "sensitive"}: the item judged again (--model)

Safety: images are found by row id, never by a path a request names, so nothing outside the
results' own sources is served; every write needs the header ``X-Review: 1`` (a cross-site
form cannot send one) and, when a token is set, every request needs it (``Authorization:
Bearer``, or the cookie a visit to ``/?token=...`` sets).
"""

from __future__ import annotations

import io
import mimetypes
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from llavaguard.errors import ConfigError, LlavaGuardError
from llavaguard.lru import LRU
from llavaguard.review.corrections import Conflict, Corrections
from llavaguard.review.export import judged_policy
from llavaguard.review.rows import Query, ReviewRows, read_key

PAGE = Path(__file__).with_name("page.html")
THUMB = 256  # px, the longer side


class Save(BaseModel):
    id: str
    rating: Literal["Safe", "Unsafe"]
    category: str | None = None
    seen: int = 0


class Undo(BaseModel):
    id: str
    seen: int


class Playground(BaseModel):
    """One image again, under the results' policy with categories declared otherwise."""

    id: str
    allow: list[str] = []
    sensitive: list[str] = []


def create_app(
    results: Path, token: str | None = None, reviewer: str = "reviewer", guard: Any = None
) -> FastAPI:
    """The app over ``results``; ``token``: required of every request when given; ``guard``:
    a loaded Guard for the policy playground (none: no playground)."""
    rows, notes = ReviewRows(results), Corrections(results)

    def checked(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token not in (given, request.cookies.get("review_token"),
                         request.query_params.get("token")):  # fmt: skip
            raise HTTPException(401, "a token is needed: open /?token=...")

    def writes(request: Request) -> None:
        if request.headers.get("x-review") != "1":
            raise HTTPException(403, "writes need the X-Review header (the page sends it)")

    app = FastAPI(title="llavaguard review", docs_url=None, redoc_url=None)
    policy = judged_policy(results)
    app.include_router(_reads(rows, notes, policy, token, guard is not None),
                       dependencies=[Depends(checked)])  # fmt: skip
    app.include_router(_writes(rows, notes, policy, reviewer),
                       dependencies=[Depends(checked), Depends(writes)])  # fmt: skip

    if guard is not None:
        app.include_router(_playground(rows, policy, guard),
                           dependencies=[Depends(checked), Depends(writes)])  # fmt: skip

    @app.exception_handler(ConfigError)
    async def config_error(_: Request, e: ConfigError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    return app


def _reads(
    rows: ReviewRows, notes: Corrections, policy: Any, token: str | None, playground: bool
) -> APIRouter:
    """The page and what it reads: rows, one item, images, the policy, the agreement."""
    api = APIRouter()
    thumbs: LRU[bytes] = LRU(2048)  # made on demand, kept while the page runs

    @api.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        resp = HTMLResponse(PAGE.read_text(encoding="utf-8"))
        if token is not None and request.query_params.get("token") == token:
            resp.set_cookie("review_token", token, httponly=True, samesite="strict")
        return resp

    @api.get("/api/policy")
    def policy_in_force() -> dict[str, Any]:
        return {"name": policy.name, "categories": policy.labels, "text": policy.render(),
                "none": policy.taxonomy.none_category, "playground": playground}  # fmt: skip

    @api.get("/api/rows")
    def page_rows(q: Query = Depends()) -> dict[str, Any]:
        found = rows.page(q, reviewed=notes.ids())
        known = notes.many([r["id"] for r in found.rows])  # one query for the page's rows
        return {"rows": [_with_review(r, known.get(r["id"])) for r in found.rows],
                "total": found.total, "offset": q.offset}  # fmt: skip

    @api.get("/api/item/{item:path}")
    def item(item: str) -> dict[str, Any]:
        return _with_review(_row(rows, item), notes.get(item))

    @api.get("/api/image/{item:path}")
    def image(item: str, thumb: bool = False) -> Response:
        key = _row(rows, item)["key"]
        if not thumb:
            return Response(read_key(key), media_type=mimetypes.guess_type(key)[0] or "image/*")
        small = thumbs.get(item)
        if small is None:
            small = _thumbnail(key)
            thumbs.put(item, small)
        return Response(small, media_type="image/jpeg")

    @api.get("/api/agreement")
    def agreement() -> dict[str, Any]:
        return _agreement(rows, notes)

    return api


def _writes(rows: ReviewRows, notes: Corrections, policy: Any, reviewer: str) -> APIRouter:
    """Saving a correction and taking one back; a stale version is a 409 with what is there."""
    api = APIRouter()

    @api.post("/api/corrections")
    def save(body: Save) -> JSONResponse:
        _row(rows, body.id)
        category = _category(body, policy)
        try:
            c = notes.save(body.id, body.rating, category, reviewer, seen=body.seen)
        except Conflict as e:
            return JSONResponse({"error": str(e), "current": _state(e.current)}, status_code=409)
        return JSONResponse(_state(c))

    @api.post("/api/undo")
    def undo(body: Undo) -> JSONResponse:
        try:
            c = notes.undo(body.id, reviewer, seen=body.seen)
        except Conflict as e:
            return JSONResponse({"error": str(e), "current": _state(e.current)}, status_code=409)
        return JSONResponse(_state(c))

    return api


def _playground(rows: ReviewRows, policy: Any, guard: Any) -> APIRouter:
    """The policy playground: an item judged again under the results' policy with some
    categories declared allowed or sensitive, beside the answer it had."""
    import threading

    api = APIRouter()
    lock = threading.Lock()  # one model, one request at a time

    @api.post("/api/playground")
    def again(body: Playground) -> dict[str, Any]:
        row = _row(rows, body.id)
        try:
            with lock:
                a = guard.assess(read_key(row["key"]), policy=policy, allow=body.allow or None,
                                 sensitive=body.sensitive or None, ids=[body.id])  # fmt: skip
        except LlavaGuardError as e:  # a code the policy does not have, an unreadable image
            raise HTTPException(422, str(e).splitlines()[0]) from None
        keys = ("rating", "category", "score", "rationale", "category_scores")
        return {"before": {k: row.get(k) for k in keys}, "after": {k: getattr(a, k) for k in keys},
                "policy": a.policy}  # fmt: skip

    return api


def _category(body: Save, policy: Any) -> str:
    """The policy's own label for the correction's category: Safe without one is none
    applying; Unsafe needs one of the policy's categories (422 otherwise)."""
    from llavaguard.policy import canonical_category

    none = policy.taxonomy.none_category
    found = canonical_category(body.category, policy) if body.category else None
    if body.rating == "Safe" and found in (None, none) and not (body.category and found is None):
        return none
    if found is None or (body.rating == "Unsafe" and found == none):
        raise HTTPException(422, f"{body.rating} needs one of the policy's categories, "
                                 f"not {body.category!r}")  # fmt: skip
    return found


def _with_review(row: dict[str, Any], c: Any) -> dict[str, Any]:
    """A row with its correction in force (or None) and the version a save must name."""
    return {**row, "correction": c.__dict__ if c and c.rating else None,
            "version": c.version if c else 0}  # fmt: skip


def _state(c: Any) -> dict[str, Any] | None:
    return None if c is None else {**c.__dict__, "version": c.version}


def _row(rows: ReviewRows, item: str) -> dict[str, Any]:
    found = rows.lookup([item]).get(item)
    if found is None:
        raise HTTPException(404, f"no item {item!r} in these results")
    return found


def _thumbnail(key: str) -> bytes:
    """A JPEG of at most THUMB px a side; a gray square where the image cannot be read."""
    from PIL import Image

    from llavaguard.inputs.images import load_image

    try:
        im = load_image(read_key(key), name=key)
    except (OSError, LlavaGuardError):  # ImageError, or a member that is not a file
        im = Image.new("RGB", (THUMB, THUMB), "gray")
    im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _agreement(rows: ReviewRows, notes: Corrections) -> dict[str, Any]:
    """The model's rating and category against the reviewers', over the reviewed items."""
    done = notes.all()
    model = rows.lookup([c.id for c in done])
    pairs = [(model[c.id].get("rating"), c.rating, model[c.id].get("category"), c.category)
             for c in done if c.id in model]  # fmt: skip
    rating = Counter(f"{m}->{r}" for m, r, _, _ in pairs)
    same = sum(m == r for m, r, _, _ in pairs)
    per_category: dict[str, dict[str, int]] = {}
    for _, _, mc, rc in pairs:
        entry = per_category.setdefault(str(mc), {"reviewed": 0, "kept": 0})
        entry["reviewed"] += 1
        entry["kept"] += int(rc in (None, mc))
    return {"reviewed": len(pairs), "rating_agreement": same / len(pairs) if pairs else None,
            "rating_confusion": dict(rating), "per_category": per_category}  # fmt: skip
