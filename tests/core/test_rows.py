"""Class rows: scores by hand, row order, joining, missing and repeated classes, tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.rows import ClassRows, RowSet

# Three classes (ids 7, 2, 5) in R^2: score_c(z) = z . w_c + b_c
ROWS = ClassRows(
    "niwt",
    np.array([7, 2, 5]),
    np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    np.array([0.5, -1.0, 0.0]),
)
FEATURES = np.array([[1.0, 2.0], [0.0, -1.0]])


def test_scores_equal_a_hand_computation():
    # image 0, z = (1, 2): class 5 -> 1 + 2 + 0 = 3; class 7 -> 1 + 0.5 = 1.5; class 2 -> 2 - 1 = 1
    # image 1, z = (0, -1): class 5 -> -1;            class 7 -> 0.5;           class 2 -> -2
    scores = ROWS.scores(FEATURES, [5, 7, 2])
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, [[3.0, 1.5, 1.0], [-1.0, 0.5, -2.0]])
    # float32 inputs are scored in float64
    rows32 = ClassRows("x", [1], np.array([[0.1, 0.2]], dtype=np.float32), np.zeros(1, np.float32))
    expected = np.float64(np.float32(0.1)) * 3.0 + np.float64(np.float32(0.2)) * 0.5
    assert rows32.scores(np.array([[3.0, 0.5]], dtype=np.float32), [1])[0, 0] == expected


def test_rows_for_follows_the_requested_order():
    weight, bias = ROWS.rows_for([2, 7, 2])
    np.testing.assert_array_equal(weight, [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(bias, [-1.0, 0.5, -1.0])
    weight, bias = ROWS.rows_for(np.array([[5]]))  # any shape of ids is read flat
    np.testing.assert_array_equal(weight, [[1.0, 1.0]])
    assert ROWS.rows_for([])[0].shape == (0, 2)


def test_missing_class_raises_naming_it():
    with pytest.raises(InputError, match=r"niwt: no classifier row for class id\(s\) \[4, 99\]"):
        ROWS.rows_for([7, 99, 4])
    with pytest.raises(InputError, match=r"\[99\].*cover \[2, 5, 7\]"):
        ROWS.scores(FEATURES, [99])


def test_repeated_ids_and_disagreeing_shapes_raise():
    with pytest.raises(ValueError, match=r"repeated class ids \[1, 1\]"):
        ClassRows("x", [1, 1], np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"2 class ids, weight \(3, 3\), bias \(2,\)"):
        ClassRows("x", [1, 2], np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="do not agree"):
        ClassRows("x", [1, 2], np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="do not agree"):
        ClassRows("x", [1, 2], np.zeros(2), np.zeros(2))


def test_add_joins_two_row_sets():
    seen = ClassRows("seen", [0, 1], np.array([[1.0, 1.0], [2.0, 0.0]], dtype=np.float32), [0, 1])
    joined = seen + ROWS
    assert joined.method == "niwt"  # the other's name
    assert joined.class_ids.tolist() == [0, 1, 7, 2, 5]
    assert joined.weight.dtype == np.float64 and len(joined) == 5 and joined.dim == 2
    np.testing.assert_array_equal(joined.weight, [[1, 1], [2, 0], [1, 0], [0, 1], [1, 1]])
    np.testing.assert_array_equal(joined.bias, [0.0, 1.0, 0.5, -1.0, 0.0])
    np.testing.assert_array_equal(
        joined.scores(FEATURES, [1, 7]), [[2.0 + 1.0, 1.5], [0.0 + 1.0, 0.5]]
    )
    assert len(seen) == 2 and len(ROWS) == 3  # neither operand changes
    with pytest.raises(ValueError, match="repeated class ids"):
        ROWS + ClassRows("x", [2], np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match="width 2 and 3"):
        ROWS + ClassRows("x", [9], np.zeros((1, 3)), np.zeros(1))


def test_torch_inputs_become_numpy_and_with_method_renames():
    rows = ClassRows("t", torch.tensor([3, 1]), torch.ones(2, 4), torch.tensor([1.0, 2.0]))
    assert isinstance(rows.weight, np.ndarray) and rows.class_ids.dtype == np.int64
    renamed = rows.with_method("other")
    assert renamed.method == "other" and renamed.class_ids.tolist() == [3, 1]
    assert rows.method == "t"


def test_tensors_and_row_set_round_trip_exactly():
    seen = ClassRows("seen", [0, 1], np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32), [1, 2])
    row_set = RowSet({"niwt": ROWS, "seen": seen})
    tensors, metadata = row_set.to_safetensors()
    assert metadata == {"methods": ["niwt", "seen"]}
    assert sorted(tensors) == [
        "niwt.bias",
        "niwt.class_id",
        "niwt.weight",
        "seen.bias",
        "seen.class_id",
        "seen.weight",
    ]
    back = RowSet.from_safetensors(tensors, metadata)
    assert list(back) == ["niwt", "seen"]
    for method, rows in row_set.items():
        assert back[method].method == method
        assert back[method].weight.dtype == rows.weight.dtype
        np.testing.assert_array_equal(back[method].class_ids, rows.class_ids)
        np.testing.assert_array_equal(back[method].weight, rows.weight)
        np.testing.assert_array_equal(back[method].bias, rows.bias)
    with pytest.raises(InputError, match="lists no methods"):
        RowSet.from_safetensors(tensors, {})
    del tensors["seen.bias"]
    with pytest.raises(InputError, match=r"class rows 'seen': missing tensors \['seen.bias'\]"):
        RowSet.from_safetensors(tensors, metadata)
