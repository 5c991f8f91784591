"""Hyper-parameter selection helpers: grids, fusion, validation metrics, ranking.

The NIWT variants (``make_variant``, ``effective_overrides``) live in
:mod:`niwt_pipeline.core.transfer.variants` and are tested in ``test_variants.py``."""

from __future__ import annotations

import numpy as np
import pytest

from niwt_pipeline.core.gzsl import problem_for
from niwt_pipeline.core.selection import (
    CRITERIA,
    best_index,
    criterion_value,
    expand_grid,
    fuse_scores,
    standardise_rows,
    validation_metrics,
)


def test_expand_grid_is_the_product_in_key_order():
    assert expand_grid({"lr": [0.1, 0.3], "lam": [0]}) == [
        {"lr": 0.1, "lam": 0},
        {"lr": 0.3, "lam": 0},
    ]
    assert expand_grid({}) == [{}]
    with pytest.raises(ValueError, match=r"grid\['lr'\]"):
        expand_grid({"lr": []})


def test_standardise_rows_exact_values():
    out = standardise_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(out, [[-1 / s, 0.0, 1 / s], [0.0, 0.0, 0.0]])


def test_fuse_scores_zero_weight_is_the_primary_and_weights_add():
    primary = np.array([[1.0, 2.0, 3.0]])
    secondary = np.array([[3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(fuse_scores(primary, secondary, 0.0), primary)
    fused = fuse_scores(primary, secondary, 0.5)
    np.testing.assert_allclose(fused, standardise_rows(primary) + 0.5 * standardise_rows(secondary))
    with pytest.raises(ValueError, match="fusion weight"):
        fuse_scores(primary, secondary, -1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        fuse_scores(primary, secondary[:, :2], 1.0)


def test_validation_metrics_on_a_hand_made_problem():
    # columns: seen 0, seen 1, unseen 2; images of 0, 1 (seen) and 2 (unseen)
    problem = problem_for(np.array([0, 1, 2, 2]), np.array([0, 1, 2]), [2])
    scores = np.array(
        [
            [2.0, 0.0, 1.0],
            [0.0, 2.0, 1.0],
            [0.0, 0.0, 1.0],
            [1.5, 0.0, 1.0],  # needs the seen scores lowered by > 0.5 to be right
        ]
    )
    metrics = validation_metrics(scores, problem)
    assert list(metrics) == [
        "S_calibrated",
        "U_calibrated",
        "H_calibrated",
        "gamma",
        "ausuc",
        "zsl_top1",
        "H",
    ]
    assert metrics["S_calibrated"] == metrics["U_calibrated"] == metrics["H_calibrated"] == 1.0
    assert 0.5 < metrics["gamma"] < 1.0
    assert metrics["H"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # uncalibrated (gamma 0)
    assert metrics["zsl_top1"] == 1.0


def test_criterion_and_best_index():
    assert CRITERIA == ("H_calibrated", "ausuc", "mean")
    metrics = {"H_calibrated": 0.4, "ausuc": 0.2, "H": 0.9}
    assert criterion_value(metrics, "H_calibrated") == 0.4
    assert criterion_value(metrics, "ausuc") == 0.2
    assert criterion_value(metrics, "mean") == pytest.approx(0.3)  # never the uncalibrated H
    with pytest.raises(ValueError, match="criterion"):
        criterion_value(metrics, "accuracy")
    with pytest.raises(ValueError, match="criterion"):
        criterion_value(metrics, "H")  # the uncalibrated H is not a criterion
    assert best_index([0.1, 0.3, 0.3, float("nan")]) == 1  # ties: the first
    with pytest.raises(ValueError, match="NaN"):
        best_index([float("nan")])
