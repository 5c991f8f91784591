"""NIWT variants: the settings around a transfer, the overrides that matter, and the rows of
one variant for a set of new classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import hand_set_backbone

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.transfer import (
    ReferenceCache,
    TransferConfig,
    effective_overrides,
    make_variant,
    match_seen_logits,
    reference_gram,
    transfer_rows,
    variant_rows,
)


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
    assert make_variant(base, {"logit_matching": "seen_negatives"}).logit_matching == (
        "seen_negatives"
    )
    assert plain.logit_matching == "none"
    with pytest.raises(ValueError, match="logit_matching: expected one of"):
        make_variant(base, {"logit_matching": "z_score"})


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
    assert effective_overrides({"logit_matching": "none"}, base) == {}
    assert effective_overrides({"logit_matching": "seen_negatives"}, base) == {
        "logit_matching": "seen_negatives"
    }


# G(x) = P * M^T for every reference image (P = 4 positions, M invertible 3 x 3), so the
# least-squares rows without ridge are w = (s / P) M^-T a / ||a||, s the seen rows' mean
# importance norm (see test_transfer.py).
M = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
GRAM = (4 * M.T).expand(2, 3, 3).clone()
SEEN = ClassRows(
    "seen",
    [0, 1],
    np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]),
    np.array([0.5, -0.5]),
)
NEW_IDS = np.array([7, 5])
TARGET = np.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
# ridge rows of more classes than needed, in another order
RIDGE = ClassRows(
    "weight_regression",
    [5, 9, 7],
    np.array([[-1.0, 0.0, 2.0], [9.0, 9.0, 9.0], [1.0, 1.0, 1.0]]),
    np.zeros(3),
)
LEAST_SQUARES = TransferConfig(solver="least_squares", ls_alpha=0.0, progress=False)


def test_variant_rows_are_the_closed_form_rows_of_the_new_classes():
    cache = ReferenceCache(gram=GRAM)
    variant = make_variant(LEAST_SQUARES, {})
    rows, result = variant_rows("niwt", TARGET, NEW_IDS, SEEN, variant, cache, backbone=None)
    assert rows.method == "niwt" and rows.class_ids.tolist() == [7, 5]
    s = (4 * M.T @ torch.as_tensor(SEEN.weight).T).norm(dim=0).mean()
    unit = torch.as_tensor(TARGET) / torch.as_tensor(TARGET).norm(dim=1, keepdim=True)
    expected = (s / 4) * torch.linalg.solve(M.T, unit.T).T
    np.testing.assert_allclose(rows.weight, expected.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(rows.bias, [0.0, 0.0])  # the mean seen bias
    assert (result.method, result.stopped_reason) == ("gram", "closed_form")
    direct = transfer_rows(TARGET, SEEN.weight, SEEN.bias, LEAST_SQUARES, gram=GRAM)
    np.testing.assert_array_equal(rows.weight, direct.weight.numpy())


def test_logit_matching_scales_and_shifts_the_closed_form_rows():
    cache = ReferenceCache(gram=GRAM)
    plain, _ = variant_rows(
        "niwt", TARGET, NEW_IDS, SEEN, make_variant(LEAST_SQUARES, {}), cache, None
    )
    matching = make_variant(LEAST_SQUARES, {"logit_matching": "seen_negatives"})
    # seen training images: two of class 0, two of class 1
    features = np.array([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    rows, _ = variant_rows(
        "niwt", TARGET, NEW_IDS, SEEN, matching, cache, None, training=(features, labels)
    )
    expected = match_seen_logits(plain, SEEN, features, labels)
    np.testing.assert_array_equal(rows.weight, expected.weight)
    np.testing.assert_array_equal(rows.bias, expected.bias)
    # seen row 0 (x1 + 0.5) on the class-1 images: 0.5, 1.5 (mean 1, std 0.5); seen row 1
    # (2 x2 - 0.5) on the class-0 images: -0.5, 1.5 (mean 0.5, std 1)
    logits = features @ rows.weight.T + rows.bias
    np.testing.assert_allclose(logits.mean(0), [(1.0 + 0.5) / 2] * 2, atol=1e-12)
    np.testing.assert_allclose(logits.std(0), [(0.5 + 1.0) / 2] * 2, atol=1e-12)
    with pytest.raises(ValueError, match="needs the seen training features"):
        variant_rows("niwt", TARGET, NEW_IDS, SEEN, matching, cache, None)


def test_ridge_anchor_and_ridge_init_use_the_rows_of_the_same_classes():
    cache = ReferenceCache(gram=GRAM)
    pulled = make_variant(TransferConfig(solver="least_squares", ls_alpha=1e9), {"anchor": "ridge"})
    rows, _ = variant_rows("niwt", TARGET, NEW_IDS, SEEN, pulled, cache, None, RIDGE)
    # an overwhelming ridge strength gives the anchor: the ridge rows of classes 7 and 5
    np.testing.assert_allclose(rows.weight, [[1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]], atol=1e-6)
    started = make_variant(TransferConfig(max_steps=1, progress=False), {"init": "ridge"})
    rows, result = variant_rows("niwt_tuned", TARGET, NEW_IDS, SEEN, started, cache, None, RIDGE)
    # one step: the rows kept are the start rows, exactly
    assert result.steps == 1 and result.best_step == 0
    np.testing.assert_array_equal(rows.weight, [[1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match="needs the ridge-regression rows"):
        variant_rows("niwt", TARGET, NEW_IDS, SEEN, started, cache, None)
    partial = ClassRows("weight_regression", [5], np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(InputError, match=r"no classifier row for class id\(s\) \[7\]"):
        variant_rows("niwt", TARGET, NEW_IDS, SEEN, started, cache, None, partial)


def test_activations_cache_runs_the_backbone_head():
    backbone = hand_set_backbone()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        activations = backbone.cut.stem(x)
    gram = reference_gram(backbone.cut.head, activations, mode="vjp")
    seen = backbone.seen_rows()
    target = np.random.default_rng(0).normal(size=(2, 128))
    variant = make_variant(TransferConfig(solver="least_squares", ls_alpha=0.1), {})
    cache = ReferenceCache(activations=activations)
    assert cache.sources(backbone)["head"] is backbone.cut.head
    expected, _ = variant_rows(
        "niwt", target, NEW_IDS, seen, variant, ReferenceCache(gram=gram), None
    )
    for budget, path in ((0, "head"), (2**30, "gram")):
        rows, result = variant_rows(
            "niwt", target, NEW_IDS, seen, variant, cache, backbone, gram_budget_bytes=budget
        )
        assert result.method == path
        assert rows.weight.dtype == np.float32  # as the seen rows
        np.testing.assert_allclose(rows.weight, expected.weight, rtol=1e-3, atol=1e-5)
