"""Hyper-parameter selection helpers: grids, fusion, validation metrics, NIWT variants."""

from __future__ import annotations

import numpy as np
import pytest

from niwt_pipeline.core.gzsl import problem_for
from niwt_pipeline.core.selection import (
    best_index,
    criterion_value,
    effective_overrides,
    expand_grid,
    fuse_scores,
    make_variant,
    standardise_rows,
    validation_metrics,
)
from niwt_pipeline.core.transfer import TransferConfig


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
    assert metrics["S"] == metrics["U"] == metrics["H"] == 1.0
    assert 0.5 < metrics["gamma"] < 1.0
    assert metrics["H_uncalibrated"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert metrics["zsl_top1"] == 1.0


def test_criterion_and_best_index():
    metrics = {"H": 0.4, "ausuc": 0.2}
    assert criterion_value(metrics, "H") == 0.4
    assert criterion_value(metrics, "ausuc") == 0.2
    assert criterion_value(metrics, "mean") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="criterion"):
        criterion_value(metrics, "accuracy")
    assert best_index([0.1, 0.3, 0.3, float("nan")]) == 1  # ties: the first
    with pytest.raises(ValueError, match="NaN"):
        best_index([float("nan")])


def test_make_variant_maps_ridge_init_anchor_and_fusion():
    base = TransferConfig(lr=0.1, progress=False)
    variant = make_variant(base, {"init": "ridge", "anchor": "ridge", "fusion": 0.5, "lam": 1})
    assert variant.ridge_init and variant.anchor == "ridge" and variant.fusion == 0.5
    assert (variant.config.lr, variant.config.lam, variant.config.init) == (0.1, 1, "mean_seen")
    plain = make_variant(base, {})
    assert (plain.ridge_init, plain.anchor, plain.fusion, plain.config) == (
        False,
        "mean_seen",
        0.0,
        base,
    )
    with pytest.raises(ValueError, match="unknown key"):
        make_variant(base, {"learning_rate": 1})
    with pytest.raises(ValueError, match="anchor"):
        make_variant(base, {"anchor": "zeros"})
    with pytest.raises(ValueError, match="TransferConfig.solver"):
        make_variant(base, {"solver": "newton"})


def test_effective_overrides_drop_what_cannot_change_the_rows():
    base = TransferConfig(lam=0.0)
    ls = {"solver": "least_squares", "lr": 0.3, "init": "ridge", "ls_alpha": 0.1}
    assert effective_overrides(ls, base) == {"solver": "least_squares", "ls_alpha": 0.1}
    assert effective_overrides({"ls_alpha": 0.1, "anchor": "ridge"}, base) == {}
    assert effective_overrides({"lam": 0.1, "anchor": "ridge"}, base) == {
        "lam": 0.1,
        "anchor": "ridge",
    }
    assert effective_overrides({"lr": base.lr, "anchor": "mean_seen"}, base) == {}
    no_ridge = {"solver": "least_squares", "ls_alpha": 0.0, "anchor": "ridge"}
    assert effective_overrides(no_ridge, base) == {"solver": "least_squares", "ls_alpha": 0.0}
