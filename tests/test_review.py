"""Review's data layer: rows queried where they lie (filters, orders, pages that never
overlap), and corrections that are never lost (a second reviewer's stale save is refused),
with undo."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from llavaguard.errors import ConfigError
from llavaguard.review import Conflict, Corrections, Query, ReviewRows

CATEGORIES = ("NA: None applying", "O2: Violence")


def results(folder: Path, n: int = 40) -> list[dict]:
    """A results folder of n rows in two shards, as annotate writes them (no model)."""
    from llavaguard.annotate.store import ResultStore

    rows = []
    for i in range(n):
        score = None if i % 10 == 9 else i / n
        rows.append({"id": f"img-{i:03d}", "key": f"/data/img-{i:03d}.jpg",
                     "rating": None if score is None else ("Unsafe" if score >= 0.5 else "Safe"),
                     "category": None if score is None else CATEGORIES[i % 2],
                     "score": score, "valid": score is not None,
                     "error": "cannot read" if score is None else None})  # fmt: skip
    store = ResultStore(folder, shard_size=n // 2)
    store.write(rows)
    store.flush()
    return rows


def test_filters_orders_and_pages_over_the_shards(tmp_path):
    rows = results(tmp_path / "r")
    view = ReviewRows(tmp_path / "r")
    page = view.page(Query(limit=7))
    assert page.total == 40 and len(page.rows) == 7
    scores = [r["score"] for r in page.rows]
    assert scores == sorted(scores, reverse=True) and scores[0] == max(
        r["score"] for r in rows if r["score"] is not None
    )
    # pages tile the filtered rows: no row twice, none left out, unscored rows last
    seen = [r["id"] for off in range(0, 40, 7)
            for r in view.page(Query(limit=7, offset=off)).rows]  # fmt: skip
    assert sorted(seen) == sorted(r["id"] for r in rows) and seen[-1] == "img-039"
    unsafe = view.page(Query(rating="Unsafe", category="O2: Violence", limit=500))
    expect = [r for r in rows if r["rating"] == "Unsafe" and r["category"] == "O2: Violence"]
    assert unsafe.total == len(expect) == len(unsafe.rows)
    assert view.page(Query(errors=True)).total == 4 == view.page(Query(rating="none")).total
    assert view.page(Query(score_min=0.25, score_max=0.5)).total == sum(
        1 for r in rows if r["score"] is not None and 0.25 <= r["score"] <= 0.5
    )
    near = view.page(Query(sort="uncertainty", threshold=0.5, limit=3)).rows
    scored = [r for r in rows if r["score"] is not None]
    closest = sorted(scored, key=lambda r: (abs(r["score"] - 0.5), r["id"]))[:3]
    assert (
        [r["id"] for r in near] == [r["id"] for r in closest] == ["img-020", "img-021", "img-018"]
    )


def test_the_reviewed_filter_and_an_assess_jsonl(tmp_path):
    results(tmp_path / "r")
    view = ReviewRows(tmp_path / "r")
    assert view.page(Query(reviewed=True), reviewed=["img-001", "img-002"]).total == 2
    assert view.page(Query(reviewed=False), reviewed=["img-001", "img-002"]).total == 38
    jsonl = tmp_path / "assess.jsonl"
    jsonl.write_text("".join(json.dumps({"image": f"a/{i}.png", "rating": "Safe", "score": 0.1 * i,
                                         "valid": True, "error": None}) + "\n"
                             for i in range(3)))  # fmt: skip
    page = ReviewRows(jsonl).page(Query())
    assert [r["id"] for r in page.rows] == ["a/2.png", "a/1.png", "a/0.png"]
    assert page.rows[0]["key"] == "a/2.png"


def test_what_is_not_results_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").write_text("id,rating\n")
    for path, why in ((tmp_path / "empty", "no results shards"),
                      (tmp_path / "x.csv", "results folder or an assess .jsonl")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            ReviewRows(path)
    with pytest.raises(ConfigError, match="not found"):
        ReviewRows(tmp_path / "missing")
    (tmp_path / "other.jsonl").write_text('{"name": "x"}\n')
    with pytest.raises(ConfigError):
        ReviewRows(tmp_path / "other.jsonl")
    with pytest.raises(ValueError):
        Query(limit=10_000)  # a page is at most 500 rows


def test_a_stale_save_is_refused_not_written_over(tmp_path):
    c = Corrections(tmp_path)
    first = c.save("img-1", "Unsafe", "O2: Violence", "ana", seen=0)
    assert first.version == 1 and Corrections(tmp_path).get("img-1") == first  # at once
    with pytest.raises(Conflict) as e:  # bob saw the model's answer, ana saved since
        c.save("img-1", "Safe", "NA: None applying", "bob", seen=0)
    assert e.value.current == first and c.get("img-1").reviewer == "ana"
    second = c.save("img-1", "Safe", "NA: None applying", "bob", seen=1)
    assert second.version == 2 and c.ids() == ["img-1"]


def test_undo_takes_back_one_change_and_can_be_taken_back(tmp_path):
    c = Corrections(tmp_path)
    c.save("img-1", "Unsafe", "O2: Violence", "ana", seen=0)
    c.save("img-1", "Safe", "NA: None applying", "ana", seen=1)
    back = c.undo("img-1", "ana", seen=2)
    assert (back.rating, back.version) == ("Unsafe", 3)
    again = c.undo("img-1", "ana", seen=3)  # the undo taken back
    assert (again.rating, again.version) == ("Safe", 4)
    c2 = Corrections(tmp_path)
    c2.save("img-2", "Unsafe", "O1: Hate", "ana", seen=0)
    gone = c2.undo("img-2", "ana", seen=1)  # back to the model's answer: no correction
    assert gone.rating is None and c2.ids() == ["img-1"]
    assert c2.save("img-2", "Safe", None, "ana", seen=2).version == 3  # versions count on
    with pytest.raises(Conflict):
        c2.undo("img-2", "ana", seen=2)


def test_two_reviewers_at_once_lose_no_update(tmp_path):
    """Two processes' worth of connections saving the same items over and over: every save
    that was not refused is in the log, and the final version counts them all."""
    Corrections(tmp_path).close()
    done: list[int] = []

    def reviewer(name: str) -> None:
        c = Corrections(tmp_path)
        for _ in range(50):
            now = c.get("img-1")
            try:
                c.save("img-1", "Unsafe", None, name, seen=now.version if now else 0)
                done.append(1)
            except Conflict:
                pass
        c.close()

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in ("ana", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = Corrections(tmp_path)
    assert c.get("img-1").version == len(done)
    log = c.db.execute("SELECT count(*) FROM log").fetchone()[0]
    assert log == len(done)


def judged(folder: Path, rows: list[dict]) -> None:
    """Give a results folder the manifest annotate writes: the default policy's id and guard."""
    from llavaguard.annotate.store import ResultStore
    from llavaguard.guard import GuardSpec
    from llavaguard.policy import Policy

    store = ResultStore(folder)
    store.open({"model": "m", "policy_id": Policy.load().id}, {"guard": GuardSpec().record()},
               False)  # fmt: skip
    store.write_shard(rows)
    store.close()


def test_the_export_is_a_labelled_set_the_next_steps_read(tmp_path):
    import io
    import tarfile

    from llavaguard.inputs.labels import read_labels
    from llavaguard.review import export_reviewed
    from llavaguard.testing import make_sample_images

    photos = make_sample_images(tmp_path / "img", 2)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        data = photos[1].read_bytes()
        info = tarfile.TarInfo("000000001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    rows = [{"id": "a", "key": str(photos[0]), "rating": "Unsafe", "category": "O2: Violence",
             "score": 0.9, "valid": True},
            {"id": "s/000000001", "key": f"{tmp_path / 's.tar'}:000000001.jpg",
             "rating": "Safe", "category": "NA: None applying", "score": 0.2, "valid": True},
            {"id": "c", "key": str(photos[0]), "rating": "Safe", "score": 0.1,
             "valid": True}]  # fmt: skip
    judged(tmp_path / "r", rows)
    c = Corrections(tmp_path / "r")
    c.save("a", "Safe", None, "ana")  # the model was wrong
    c.save("s/000000001", "Unsafe", "o1", "bob")  # a code resolves to its label
    out = tmp_path / "labels.jsonl"

    assert export_reviewed(tmp_path / "r", out) == 2
    got = {s.id: s for s in read_labels(out, require_images=True)}
    assert (got["a"].rating, got["a"].category) == ("Safe", "NA: None applying")
    assert got["s/000000001"].category.startswith("O1:")
    assert Path(got["s/000000001"].image).read_bytes() == photos[1].read_bytes()  # copied out
    line = json.loads(out.read_text().splitlines()[0])
    assert (line["reviewer"], line["model_rating"], line["model_score"]) == ("ana", "Unsafe", 0.9)
    # results judged under another policy than the one named are refused
    import llavaguard.testing

    synthetic = Path(llavaguard.testing.__file__).with_name("synthetic-policy.yaml")
    with pytest.raises(ConfigError, match="judged under policy id"):
        export_reviewed(tmp_path / "r", out, policy=synthetic)


# ---- the page's HTTP side ---------------------------------------------------------------------


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    from llavaguard.review.app import create_app
    from llavaguard.testing import make_sample_images

    photos = make_sample_images(tmp_path / "img", 3)
    rows = [{"id": f"p{i}", "key": str(p), "rating": "Unsafe" if i else "Safe",
             "category": "O2: Violence" if i else "NA: None applying", "score": 0.3 * i,
             "valid": True, "category_scores": {"O2: Violence": 0.3 * i}}
            for i, p in enumerate(photos)]  # fmt: skip
    judged(tmp_path / "r", rows)
    return TestClient(create_app(tmp_path / "r", reviewer="ana")), tmp_path / "r"


def test_the_api_pages_saves_and_refuses_a_stale_save(client):
    c, _ = client
    assert "llavaguard review" in c.get("/").text
    page = c.get("/api/rows", params={"sort": "score", "limit": 2}).json()
    assert page["total"] == 3 and [r["id"] for r in page["rows"]] == ["p2", "p1"]
    assert c.get("/api/rows", params={"limit": 9999}).status_code == 422  # typed, not pasted
    w = {"X-Review": "1"}
    saved = c.post("/api/corrections", json={"id": "p2", "rating": "Safe", "seen": 0}, headers=w)
    assert saved.status_code == 200 and saved.json()["version"] == 1
    stale = c.post(
        "/api/corrections",
        json={"id": "p2", "rating": "Unsafe", "category": "O1", "seen": 0},
        headers=w,
    )
    assert stale.status_code == 409 and stale.json()["current"]["rating"] == "Safe"
    item = c.get("/api/item/p2").json()
    assert item["correction"]["reviewer"] == "ana" and item["version"] == 1
    assert c.get("/api/rows", params={"reviewed": True}).json()["total"] == 1
    back = c.post("/api/undo", json={"id": "p2", "seen": 1}, headers=w).json()
    assert (
        back["rating"] is None
        and c.get("/api/rows", params={"reviewed": True}).json()["total"] == 0
    )
    agreement = c.get("/api/agreement").json()
    assert agreement["reviewed"] == 0
    c.post("/api/corrections", json={"id": "p1", "rating": "Safe", "seen": 0}, headers=w)
    agreement = c.get("/api/agreement").json()
    assert (
        agreement["rating_confusion"] == {"Unsafe->Safe": 1} and agreement["rating_agreement"] == 0
    )
    policy = c.get("/api/policy").json()
    assert "O2: Violence, Harm, or Cruelty" in policy["categories"]
    assert policy["none"] == "NA: None applying"


def test_images_come_only_from_the_results_and_writes_need_the_header(client):
    c, _ = client
    thumb = c.get("/api/image/p1", params={"thumb": True})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    for probe in ("../../etc/passwd", "/etc/passwd", "p1/../../x"):  # ids, never paths
        assert c.get(f"/api/image/{probe}").status_code == 404
    # a correction is in the policy's own words: a code resolves, Unsafe needs a category
    w = {"X-Review": "1"}
    bare = c.post("/api/corrections", json={"id": "p0", "rating": "Unsafe"}, headers=w)
    assert bare.status_code == 422 and "needs one of the policy's categories" in bare.text
    odd = c.post("/api/corrections", json={"id": "p0", "rating": "Safe", "category": "O99"},
                 headers=w)  # fmt: skip
    assert odd.status_code == 422
    coded = c.post("/api/corrections", json={"id": "p0", "rating": "Unsafe", "category": "o2"},
                   headers=w).json()  # fmt: skip
    assert coded["category"] == "O2: Violence, Harm, or Cruelty"
    # a cross-site form cannot set a header: writes without it are refused
    assert c.post("/api/corrections", json={"id": "p1", "rating": "Safe"}).status_code == 403
    assert c.post("/api/corrections", json={"id": "zz", "rating": "Safe"},
                  headers={"X-Review": "1"}).status_code == 404  # fmt: skip


def test_a_token_guards_every_request(tmp_path, client):
    from fastapi.testclient import TestClient

    from llavaguard.review.app import create_app

    _, results = client
    c = TestClient(create_app(results, token="s3cret"))
    assert c.get("/").status_code == 401 and c.get("/api/rows").status_code == 401
    assert c.get("/", params={"token": "s3cret"}).status_code == 200  # sets the cookie
    assert c.get("/api/rows").status_code == 200
    other = TestClient(create_app(results, token="s3cret"))
    assert other.get("/api/rows", headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.mark.slow
def test_the_playground_judges_an_item_again_under_declared_categories(tmp_path, tiny):
    """With a model loaded, an item is judged again with categories allowed or sensitive,
    beside the answer it had; a code the policy does not have is one line, 422."""
    from fastapi.testclient import TestClient

    from llavaguard.guard import Guard, GuardSpec
    from llavaguard.review.app import create_app
    from llavaguard.testing import make_sample_images

    photo = make_sample_images(tmp_path / "img", 1)[0]
    judged(tmp_path / "r", [{"id": "p", "key": str(photo), "rating": "Unsafe",
                             "category": "O1: Hate, Humiliation, Harassment", "score": 0.7,
                             "valid": True}])  # fmt: skip
    guard = Guard.from_spec(GuardSpec(model=str(tiny), mode="triage"))
    c = TestClient(create_app(tmp_path / "r", guard=guard))
    assert c.get("/api/policy").json()["playground"] is True
    w = {"X-Review": "1"}
    res = c.post("/api/playground", json={"id": "p", "allow": ["O1", "O2"]}, headers=w).json()
    assert res["before"]["score"] == 0.7
    assert 0.0 <= res["after"]["score"] <= 1.0 and "O1" in res["policy"]
    bad = c.post("/api/playground", json={"id": "p", "allow": ["O42"]}, headers=w)
    assert bad.status_code == 422 and "\n" not in bad.json()["detail"]
    assert (
        TestClient(create_app(tmp_path / "r"))
        .post("/api/playground", json={"id": "p"}, headers=w)
        .status_code
        == 404
    )  # no model, no route
