"""The numbers of an evaluation against hand-computed facts: macro scores over the classes that have
images in the split (not zeros for the others), and the confusion matrix stored dense or sparse."""

import numpy as np
import pytest

from app.evaluation.metrics import DENSE_CONFUSION_MAX, confusion_entry, confusion_of, metrics_from


def one_hot(pred: list[int], n: int) -> np.ndarray:
    return np.eye(n)[pred]


def test_macro_scores_leave_out_a_class_without_images_and_say_so():
    # 3 classes, class 2 has no validation image but is predicted once (a false positive).
    y, p = [0, 0, 1, 1], [0, 1, 1, 2]
    m = metrics_from(one_hot(p, 3), y, ["a", "b", "c"])
    # by hand: a: P 1/1, R 1/2, F1 2/3; b: P 1/2, R 1/2, F1 1/2
    assert m["precision_macro"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall_macro"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["accuracy"] == pytest.approx(0.5) and m["n"] == 4
    assert m["macro_over"] == 2 and m["classes_without_images"] == ["c"]
    assert m["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["per_class"]["a"]["support"] == 2


def test_with_every_class_present_the_macro_is_the_plain_mean():
    y, p = [0, 1, 2, 2], [0, 2, 2, 2]
    m = metrics_from(one_hot(p, 3), y, ["a", "b", "c"])
    # a: P1 R1; b: P0 (never predicted: zero_division 0) R0; c: P 2/3 R 1
    assert m["precision_macro"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["macro_over"] == 3 and m["classes_without_images"] == []


@pytest.mark.parametrize("n", [4, DENSE_CONFUSION_MAX + 50])
def test_the_confusion_matrix_round_trips_dense_or_sparse(n):
    rng = np.random.default_rng(n)
    cm = np.zeros((n, n), dtype=np.int64)
    for a, b in rng.integers(0, n, (300, 2)):
        cm[a, b] += 1
    stored = confusion_entry(cm)
    assert ("confusion" in stored) == (n <= DENSE_CONFUSION_MAX)
    assert np.array_equal(confusion_of(stored), cm)
    if n > DENSE_CONFUSION_MAX:
        assert len(stored["confusion_sparse"]) == np.count_nonzero(cm)  # only the non-zero cells
