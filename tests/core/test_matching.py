"""Logit matching of new rows against the seen rows (core.transfer.matching): exact values
on a hand-set one-dimensional problem."""

import math

import numpy as np
import pytest

from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.transfer.matching import match_seen_logits, seen_negative_logits

# two seen classes (ids 0 and 1) on 1-d features; images 2, 4 of class 0 and 0, 2 of class 1
SEEN = ClassRows("seen", np.array([0, 1]), np.array([[1.0], [-1.0]]), np.array([0.0, 1.0]))
FEATURES = np.array([[2.0], [4.0], [0.0], [2.0]])
LABELS = np.array([0, 0, 1, 1])


def test_seen_negative_logits_exact():
    # row 0 on class-1 images: 0, 2 (mean 1, std 1); row 1 on class-0 images: -1, -3
    # (mean -2, std 1)
    m, s = seen_negative_logits(SEEN, FEATURES, LABELS)
    assert m == pytest.approx(-0.5, abs=1e-12)
    assert s == pytest.approx(1.0, abs=1e-12)


def test_match_seen_logits_exact_scale_and_offset():
    rows = ClassRows("niwt", np.array([7]), np.array([[3.0]], dtype=np.float32), np.array([7.0]))
    matched = match_seen_logits(rows, SEEN, FEATURES, LABELS)
    # raw logits 6, 12, 0, 6: mean 6, std 3 sqrt(2); k = 1 / (3 sqrt(2))
    assert matched.weight.dtype == np.float32
    assert matched.weight[0, 0] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert matched.bias[0] == pytest.approx(-0.5 - math.sqrt(2), rel=1e-6)
    logits = FEATURES @ matched.weight.astype(np.float64).T + matched.bias
    assert logits.mean() == pytest.approx(-0.5, abs=1e-5)
    assert logits.std() == pytest.approx(1.0, abs=1e-5)
    assert (matched.method, matched.class_ids.tolist()) == ("niwt", [7])


def test_match_seen_logits_keeps_direction_and_ignores_other_classes():
    rows = ClassRows("niwt", np.array([7, 8]), np.array([[3.0], [-0.5]]), np.zeros(2))
    extra = np.vstack([FEATURES, [[100.0]]])  # an image of class 9, which has no seen row
    matched = match_seen_logits(rows, SEEN, extra, np.append(LABELS, 9))
    reference = match_seen_logits(rows, SEEN, FEATURES, LABELS)
    np.testing.assert_allclose(matched.weight, reference.weight)
    np.testing.assert_allclose(matched.bias, reference.bias)
    assert np.sign(matched.weight[:, 0]).tolist() == [1.0, -1.0]


def test_flat_row_keeps_its_scale():
    rows = ClassRows("niwt", np.array([7]), np.zeros((1, 1)), np.array([3.0]))
    matched = match_seen_logits(rows, SEEN, FEATURES, LABELS)
    assert matched.weight[0, 0] == 0.0
    assert matched.bias[0] == pytest.approx(-0.5)


def test_bad_inputs_are_refused():
    rows = ClassRows("niwt", np.array([7]), np.ones((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match="width 2"):
        match_seen_logits(rows, SEEN, FEATURES, LABELS)
    with pytest.raises(ValueError, match=r"must be \(N, 1\)"):
        seen_negative_logits(SEEN, FEATURES, LABELS[:3])
    with pytest.raises(ValueError, match="NaN"):
        seen_negative_logits(SEEN, np.array([[np.nan], [1.0], [0.0], [2.0]]), LABELS)
    with pytest.raises(ValueError, match="seen class 0 has no image of another"):
        seen_negative_logits(SEEN, FEATURES, np.zeros(4, dtype=np.int64))
