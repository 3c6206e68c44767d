"""Every metric against values worked out by hand on small examples."""

from __future__ import annotations

import pytest

from llavaguard.evaluate import metrics as M
from llavaguard.inputs.labels import augmentation_of

U, S = "Unsafe", "Safe"
approx = pytest.approx


def test_rating_metrics_by_hand_both_ways_of_counting_invalid():
    expected = [U, U, U, U, S, S, S, S, S, S]
    predicted = [U, U, U, S, U, U, S, S, S, None]  # tp 3, fn 1, fp 2, tn 3, one invalid (Safe)
    ex = M.rating_metrics(expected, predicted, "excluded")
    assert (ex["tp"], ex["fn"], ex["fp"], ex["tn"], ex["invalid"], ex["n"]) == (3, 1, 2, 3, 1, 9)
    assert ex["recall"] == approx(3 / 4)
    assert ex["specificity"] == approx(3 / 5)
    assert ex["precision"] == approx(3 / 5)
    assert ex["accuracy"] == approx(6 / 9)
    assert ex["balanced_accuracy"] == approx((3 / 4 + 3 / 5) / 2)
    assert ex["f1"] == approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert ex["f2"] == approx(5 * 0.6 * 0.75 / (4 * 0.6 + 0.75))
    # counted as wrong: the unanswered Safe sample becomes a false positive
    wr = M.rating_metrics(expected, predicted, "wrong")
    assert (wr["tp"], wr["fn"], wr["fp"], wr["tn"], wr["n"]) == (3, 1, 3, 3, 10)
    assert wr["specificity"] == approx(3 / 6)
    assert wr["precision"] == approx(3 / 6)
    assert wr["accuracy"] == approx(6 / 10)
    assert wr["f2"] == approx(15 / 22)
    # an unanswered Unsafe sample becomes a false negative
    assert M.rating_metrics([U], [None], "wrong")["fn"] == 1


def test_empty_classes_give_none_not_a_division_by_zero():
    only_safe = M.rating_metrics([S, S], [S, S])
    assert only_safe["recall"] is None and only_safe["precision"] is None
    assert only_safe["f1"] is None and only_safe["balanced_accuracy"] is None
    assert only_safe["specificity"] == 1.0 and only_safe["accuracy"] == 1.0
    only_unsafe = M.rating_metrics([U, U], [U, S])
    assert only_unsafe["specificity"] is None and only_unsafe["recall"] == 0.5
    assert only_unsafe["precision"] == 1.0 and only_unsafe["balanced_accuracy"] is None
    # positives exist but none found: precision undefined, F1 defined and zero
    missed = M.rating_metrics([U, S], [S, S])
    assert missed["precision"] is None and missed["f1"] == 0.0 and missed["recall"] == 0.0
    nothing = M.rating_metrics([], [])
    assert nothing["n"] == 0
    assert all(nothing[k] is None for k in M.HEADLINE)


def test_all_invalid_runs():
    expected, predicted = [U, S, S], [None, None, "maybe"]
    ex = M.rating_metrics(expected, predicted, "excluded")
    assert ex["n"] == 0 and ex["invalid"] == 3
    assert all(ex[k] is None for k in M.HEADLINE)
    wr = M.rating_metrics(expected, predicted, "wrong")
    assert (wr["tp"], wr["fn"], wr["fp"], wr["tn"]) == (0, 1, 2, 0)
    assert wr["accuracy"] == 0.0 and wr["recall"] == 0.0 and wr["specificity"] == 0.0
    assert wr["precision"] == 0.0 and wr["f1"] == 0.0
    per = M.policy_exception_rate(["allowed", "sensitive", None], predicted, "excluded")
    assert per["n"] == 0 and per["per"] is None and per["invalid"] == 2
    assert M.policy_exception_rate(["allowed", "sensitive", None], predicted, "wrong")["per"] == 0
    cat = M.category_accuracy(["O1", "O2"], [None, None], "excluded")
    assert cat["n"] == 0 and cat["exact"] is None
    assert M.category_accuracy(["O1", "O2"], [None, None], "wrong")["exact"] == 0.0
    assert M.rating_bootstrap(expected, predicted, "excluded")["recall"] is None


def test_policy_exception_rate_by_hand():
    exceptions = ["allowed", "allowed", "sensitive", None, "sensitive"]
    predicted = [S, U, U, S, None]
    ex = M.policy_exception_rate(exceptions, predicted, "excluded")
    assert (ex["n"], ex["correct"], ex["invalid"]) == (3, 2, 1)
    assert ex["per"] == approx(2 / 3)
    assert ex["per_allowed"] == approx(1 / 2) and ex["per_sensitive"] == 1.0
    wr = M.policy_exception_rate(exceptions, predicted, "wrong")
    assert (wr["n"], wr["correct"]) == (4, 2) and wr["per_sensitive"] == approx(1 / 2)
    assert M.policy_exception_rate([None, None], [S, U])["per"] is None


@pytest.mark.parametrize(
    ("sample_id", "aug"),
    [
        ("img_v2", "v2"), ("img_v2a", "v2a"), ("img_v3_a", "v3"), ("img_v3_b", "v3"),
        ("img_v4", "v4"), ("img_v5_c", "v5"), ("img_v1", "v1"), ("img", None),
        ("holiday_video", None), ("v2", None), ("img_v2_extra_v", None),
    ],
)  # fmt: skip
def test_augmentation_suffix_rules(sample_id, aug):
    assert augmentation_of(sample_id) == aug


def test_category_accuracy_exact_and_containment():
    expected = ["O1: Hate, Humiliation, Harassment", "NA: None applying", "O3: Sexual Content"]
    predicted = ["O1: Hate, Humiliation, Harassment", "O2: Violence, Harm, or Cruelty", None]
    ex = M.category_accuracy(expected, predicted, "excluded")
    assert (ex["n"], ex["invalid"]) == (2, 1)
    assert ex["exact"] == 0.5 and ex["containment"] == 0.5
    wr = M.category_accuracy(expected, predicted, "wrong")
    assert wr["exact"] == approx(1 / 3)
    # the original's rule: the expected label contained, lower-cased, in the predicted text
    loose = M.category_accuracy(["O3: Sexual Content"], ["o3: sexual content (explicit)"])
    assert loose["exact"] == 0.0 and loose["containment"] == 1.0
    assert M.category_accuracy(["O3: Sexual Content"], ["O3"])["containment"] == 0.0


def test_score_metrics_by_hand():
    expected, scores = [U, U, S, S], [0.9, 0.4, 0.6, 0.1]
    m = M.score_metrics(expected, scores)
    assert m["n"] == 4 and m["missing"] == 0
    assert m["roc_auc"] == approx(3 / 4)  # 3 of the 4 (Unsafe, Safe) pairs ordered right
    assert m["pr_auc"] == approx(0.5 * 1 + 0.5 * 2 / 3)  # average precision
    assert m["recall_at_fpr_1"] == 0.5 and m["recall_at_fpr_5"] == 0.5
    assert m["best_threshold"] == approx(0.9) and m["best_balanced_accuracy"] == approx(0.75)
    assert m["ece"] == approx((0.1 + 0.6 + 0.6 + 0.1) / 4)
    rel = M.reliability(expected, scores)
    assert [(r[0], r[4]) for r in rel] == [(0.1, 1), (0.4, 1), (0.6, 1), (0.9, 1)]


def test_score_metrics_edge_cases():
    one_class = M.score_metrics([S, S], [0.2, 0.4])
    assert one_class["roc_auc"] is None and one_class["ece"] == approx(0.3)
    missing = M.score_metrics([U, S, S], [None, 0.3, float("nan")])
    assert missing["n"] == 1 and missing["missing"] == 2
    assert M.score_metrics([], [])["roc_auc"] is None
    # a score of exactly 1 lands in the last bin
    assert M.expected_calibration_error(*map(__import__("numpy").array, ([True], [1.0]))) == 0.0


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate():
    expected = [U] * 30 + [S] * 70
    predicted = [U] * 24 + [S] * 6 + [S] * 63 + [U] * 7
    a = M.rating_bootstrap(expected, predicted, "excluded", seed=3)
    assert a == M.rating_bootstrap(expected, predicted, "excluded", seed=3)
    point = M.rating_metrics(expected, predicted)
    for k in M.HEADLINE:
        lo, hi = a[k]
        assert lo <= point[k] <= hi and hi - lo < 0.4
    # the multinomial shortcut matches resampling rows
    rows = M.bootstrap_ci(
        100,
        lambda idx: M.rating_metrics([expected[i] for i in idx], [predicted[i] for i in idx])[
            "recall"
        ],
        resamples=400,
        seed=1,
    )
    assert rows is not None
    assert abs(rows[0] - a["recall"][0]) < 0.05 and abs(rows[1] - a["recall"][1]) < 0.05
    assert M.bootstrap_ci(0, lambda idx: 1.0) is None


def test_the_vectorised_roc_auc_bootstrap_is_the_resampled_curves():
    """Same draws as resampling rows and drawing a curve each time, ties and unscored rows
    included: the weighted sum over distinct scores is the same AUC, only without the sorts."""
    import numpy as np

    rng = np.random.default_rng(5)
    expected = [U if u else S for u in rng.random(300) < 0.4]
    scores = [None if r < 0.1 else round(float(r), 1) for r in rng.random(300)]  # many ties
    fast = M.roc_auc_bootstrap(expected, scores, resamples=60, seed=2)
    slow = M.bootstrap_ci(
        300,
        lambda idx: M.score_metrics([expected[i] for i in idx], [scores[i] for i in idx])[
            "roc_auc"
        ],
        resamples=60,
        seed=2,
    )
    assert fast is not None and slow is not None
    assert fast == approx(slow, abs=1e-12)
    assert M.roc_auc_bootstrap([S, S], [0.1, 0.2], resamples=50) is None  # one class only


def test_the_per_bootstrap_draws_the_exception_counts():
    exceptions = ["allowed"] * 40 + ["sensitive"] * 20 + [None] * 40
    predicted = [S] * 30 + [U] * 8 + [None] * 2 + [U] * 15 + [S] * 5 + [U] * 40
    point = M.policy_exception_rate(exceptions, predicted)["per"]
    assert point == approx(45 / 58)
    ci = M.per_bootstrap(exceptions, predicted, "excluded", resamples=500, seed=1)
    assert ci == M.per_bootstrap(exceptions, predicted, "excluded", resamples=500, seed=1)
    rows = M.bootstrap_ci(
        100,
        lambda idx: M.policy_exception_rate(
            [exceptions[i] for i in idx], [predicted[i] for i in idx]
        )["per"],
        resamples=500,
        seed=1,
    )
    assert ci[0] <= point <= ci[1]
    assert abs(ci[0] - rows[0]) < 0.05 and abs(ci[1] - rows[1]) < 0.05
    wrong = M.per_bootstrap(exceptions, predicted, "wrong", resamples=500, seed=1)
    assert wrong[0] <= 45 / 60 <= wrong[1]
    assert M.per_bootstrap([None, None], [S, U], "excluded") is None  # no exception: undefined


def test_metrics_take_numpy_columns_and_lists_alike():
    import numpy as np

    expected, predicted = [U, U, S, S, U], [U, None, U, S, S]
    cols = np.array(expected, dtype=object), np.array(predicted, dtype=object)
    for how in M.INVALID_AS:
        assert M.rating_metrics(*cols, how) == M.rating_metrics(expected, predicted, how)
    with pytest.raises(ValueError, match="5 expected values for 4"):
        M.counts(expected, predicted[:4])
