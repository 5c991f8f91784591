"""Ridge rows and ESZSL against their closed forms and on planted problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niwt_pipeline.core.baselines import (
    BaselineConfig,
    ESZSLModel,
    eszsl_fit,
    eszsl_scores,
    eszsl_select,
    fit_baselines,
    ridge_rows,
)
from niwt_pipeline.core.rows import ClassRows


def test_ridge_rows_matches_augmented_least_squares():
    dk_seen = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # S=3, A=2
    w = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])  # D=2
    b = np.array([0.5, -0.5, 1.0])
    dk_new = np.array([[2.0, 1.0]])
    alpha = 0.5
    # ridge with unpenalised intercept = least squares on centred data stacked with sqrt(alpha) I
    x_c = dk_seen - dk_seen.mean(0)
    t = np.c_[w, b]
    t_c = t - t.mean(0)
    coef = np.linalg.lstsq(
        np.vstack([x_c, np.sqrt(alpha) * np.eye(2)]), np.vstack([t_c, np.zeros((2, 3))]), rcond=None
    )[0]
    expected = (dk_new - dk_seen.mean(0)) @ coef + t.mean(0)
    w_u, b_u = ridge_rows(dk_seen, w, b, dk_new, alpha)
    np.testing.assert_allclose(w_u, expected[:, :2], rtol=1e-12)
    np.testing.assert_allclose(b_u, expected[:, 2], rtol=1e-12)


def test_ridge_rows_recovers_an_affine_map_and_keeps_torch_dtype():
    rng = np.random.default_rng(0)
    dk = rng.random((8, 3))
    p, q = rng.normal(size=(3, 4)), rng.normal(size=4)
    rows = dk @ p + q
    w_u, b_u = ridge_rows(
        torch.from_numpy(dk[:6]),
        torch.from_numpy(rows[:6]).float(),
        torch.from_numpy(dk[:6, 0] * 2.0 - 1.0).float(),
        torch.from_numpy(dk[6:]),
        alpha=0.0,
    )
    assert isinstance(w_u, torch.Tensor) and w_u.dtype == torch.float32
    np.testing.assert_allclose(w_u.numpy(), rows[6:], atol=1e-5)
    np.testing.assert_allclose(b_u.numpy(), dk[6:, 0] * 2.0 - 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        ridge_rows(dk[:6], rows[:6], dk[:6, 0], dk[6:], alpha=-1.0)
    with pytest.raises(ValueError, match="row counts"):
        ridge_rows(dk[:6], rows[:5], dk[:6, 0], dk[6:])


def test_eszsl_fit_is_the_paper_formula():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(4, 3))  # N=4, D=3
    labels = np.array([0, 1, 1, 0])
    dk = np.array([[1.0, 0.5], [0.0, 2.0]])  # S=2 (Z), A=2
    gamma, lam = 0.3, 0.7
    x = feats.T  # (D, N)
    y = np.array([[1, -1], [-1, 1], [-1, 1], [1, -1]], dtype=float)  # paper: {-1, +1}
    s = dk.T  # (A, Z)
    expected = (
        np.linalg.inv(x @ x.T + gamma * np.eye(3))
        @ x
        @ y
        @ s.T
        @ np.linalg.inv(s @ s.T + lam * np.eye(2))
    )
    v = eszsl_fit(feats, labels, dk, gamma, lam)
    np.testing.assert_allclose(v, expected, rtol=1e-10)
    y01 = (y + 1) / 2
    expected01 = (
        np.linalg.inv(x @ x.T + gamma * np.eye(3))
        @ x
        @ y01
        @ s.T
        @ np.linalg.inv(s @ s.T + lam * np.eye(2))
    )
    np.testing.assert_allclose(
        eszsl_fit(feats, labels, dk, gamma, lam, label_coding="01"), expected01, rtol=1e-10
    )
    np.testing.assert_allclose(eszsl_scores(feats, v, dk), feats @ expected @ dk.T, rtol=1e-10)
    with pytest.raises(ValueError, match="labels"):
        eszsl_fit(feats, np.array([0, 1, 2, 0]), dk)


def planted_world(n_classes: int = 14, a: int = 5, d: int = 8, per_class: int = 30, seed: int = 0):
    """Features x = M s_c + noise, so a bilinear compatibility x^T V s separates the classes."""
    rng = np.random.default_rng(seed)
    dk = rng.normal(size=(n_classes, a))
    m = rng.normal(size=(d, a))
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = dk[labels] @ m.T + 0.1 * rng.normal(size=(labels.size, d))
    return dk, feats, labels


def test_eszsl_recovers_planted_compatibility_on_unseen_classes():
    dk, feats, labels = planted_world()
    seen = labels < 10
    v = eszsl_fit(feats[seen], labels[seen], dk[:10], gamma=0.1, lam=0.1)
    scores = eszsl_scores(feats[~seen], v, dk[10:])  # ZSL among the 4 unseen classes
    acc = np.mean(np.argmax(scores, axis=1) + 10 == labels[~seen])
    assert acc > 0.95


def test_eszsl_select_is_exact_over_the_grid_and_uses_seen_classes_only():
    dk, feats, labels = planted_world(seed=2)
    seen = labels < 10
    sel = eszsl_select(
        feats[seen],
        labels[seen],
        dk[:10],
        gammas=(0.01, 1.0, 100.0),
        lams=(0.1, 10.0),
        n_heldout_classes=3,
        n_splits=2,
        seed=4,
    )
    assert len(sel.heldout_classes) == 2 and all(len(h) == 3 for h in sel.heldout_classes)
    assert all(c < 10 for h in sel.heldout_classes for c in h)
    assert (sel.gamma, sel.lam) in sel.grid and sel.score == max(sel.grid.values())
    assert sel.score > 0.75
    # the eigendecomposition shortcut equals fitting each grid point directly
    for gamma, lam in [(0.01, 0.1), (100.0, 10.0)]:
        accs = []
        for held in sel.heldout_classes:
            train = np.setdiff1d(np.arange(10), held)
            tr = np.isin(labels[seen], train)
            remap = {c: i for i, c in enumerate(train)}
            y_tr = np.array([remap[c] for c in labels[seen][tr]])
            v = eszsl_fit(feats[seen][tr], y_tr, dk[train], gamma, lam)
            va = ~tr
            pred = np.asarray(held)[np.argmax(eszsl_scores(feats[seen][va], v, dk[held]), axis=1)]
            y_va = labels[seen][va]
            accs.append(np.mean([np.mean(pred[y_va == c] == c) for c in held]))
        assert sel.grid[(gamma, lam)] == pytest.approx(np.mean(accs), abs=1e-12)
    again = eszsl_select(
        feats[seen],
        labels[seen],
        dk[:10],
        gammas=(0.01, 1.0, 100.0),
        lams=(0.1, 10.0),
        n_heldout_classes=3,
        n_splits=2,
        seed=4,
    )
    assert again == sel


def test_eszsl_model_scores_and_tensors():
    v = np.array([[1.0, 0.0], [2.0, -1.0], [0.5, 0.5]])  # D = 3, A = 2
    model = ESZSLModel(v, gamma=0.1, lam=10.0)
    feats = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    signatures = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # x^T V = (2, 1) and (2, -1); times s_c for the three classes
    np.testing.assert_array_equal(model.scores(feats, signatures), [[2, 1, 3], [2, -1, 1]])
    tensors, metadata = model.to_safetensors()
    assert metadata == {"gamma": 0.1, "lambda": 10.0} and list(tensors) == ["V"]
    back = ESZSLModel.from_safetensors(tensors, metadata)
    assert (back.gamma, back.lam) == (0.1, 10.0)
    np.testing.assert_array_equal(back.projection, v)
    with pytest.raises(KeyError):
        ESZSLModel.from_safetensors(tensors, {"gamma": 0.1})


def test_fit_baselines_are_ridge_rows_and_eszsl_of_the_seen_classes():
    dk, feats, labels = planted_world(n_classes=6, per_class=5, seed=3)
    seen_ids = np.array([4, 0, 2, 5])  # classifier order, not sorted
    new_ids = np.array([3, 1])
    rng = np.random.default_rng(1)
    seen = ClassRows("seen", seen_ids, rng.normal(size=(4, 8)), rng.normal(size=4))
    train = np.isin(labels, seen_ids)
    config = BaselineConfig(ridge_alpha=0.5, eszsl_gamma=0.2, eszsl_lambda=3.0)
    rows, model = fit_baselines(feats[train], labels[train], seen, dk, new_ids, config)
    w_new, b_new = ridge_rows(dk[seen_ids], seen.weight, seen.bias, dk[new_ids], 0.5)
    assert rows.method == "weight_regression" and rows.class_ids.tolist() == [3, 1]
    np.testing.assert_array_equal(rows.weight, w_new)
    np.testing.assert_array_equal(rows.bias, b_new)
    # ESZSL's labels index the seen rows: class 4 -> 0, 0 -> 1, 2 -> 2, 5 -> 3
    position = {4: 0, 0: 1, 2: 2, 5: 3}
    y = np.array([position[c] for c in labels[train]])
    np.testing.assert_array_equal(
        model.projection, eszsl_fit(feats[train], y, dk[seen_ids], 0.2, 3.0)
    )
    assert (model.gamma, model.lam) == (0.2, 3.0)
    with pytest.raises(KeyError):
        fit_baselines(feats, labels, seen, dk, new_ids, config)  # labels of new classes


def test_fit_baselines_chooses_eszsl_regularisers_on_seen_classes():
    dk, feats, labels = planted_world(n_classes=8, per_class=6, seed=4)
    seen_ids = np.arange(6)
    seen = ClassRows("seen", seen_ids, np.ones((6, 8)), np.zeros(6))
    train = labels < 6
    config = BaselineConfig(seed=2)
    _, model = fit_baselines(feats[train], labels[train], seen, dk, np.array([6, 7]), config)
    chosen = eszsl_select(feats[train], labels[train], dk[seen_ids], seed=2)
    assert (model.gamma, model.lam) == (chosen.gamma, chosen.lam)
