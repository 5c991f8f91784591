"""Ridge rows and ESZSL against their closed forms and on planted problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import solve_sylvester

from niwt_pipeline.core.baselines import (
    CLOSED_FORM_SETTINGS,
    BaselineConfig,
    ESZSLGrid,
    ESZSLModel,
    SAEGrid,
    SAEModel,
    eszsl_fit,
    eszsl_scores,
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


def test_eszsl_grid_equals_fitting_each_pair_directly():
    dk, feats, labels = planted_world(seed=2)
    seen = labels < 10
    grid = ESZSLGrid(feats[seen], labels[seen], dk[:10])
    query = feats[~seen][:7]
    gammas, lams = (0.01, 1.0, 100.0), (0.1, 10.0)
    got = list(grid.grid_scores(query, dk, gammas, lams))
    pairs = [(g, lam) for g in gammas for lam in lams]
    assert [(g, lam) for g, lam, _ in got] == pairs
    for (gamma, lam), (_, _, scores) in zip(pairs, got, strict=True):
        v = eszsl_fit(feats[seen], labels[seen], dk[:10], gamma, lam)
        np.testing.assert_allclose(grid.projection(gamma, lam), v, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(scores, eszsl_scores(query, v, dk), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="gamma and lam must be > 0"):
        grid.projection(0.0, 1.0)


def test_eszsl_grid_by_hand_on_a_one_dimensional_problem():
    # D = 1, A = 1, S = 2: X = [1, 2] (two images), labels [0, 1], S = [[1], [-1]].
    # pm1 coding: Y = [[1, -1], [-1, 1]]; X X^T = 5, X Y S = [1*2 + 2*(-2)] = [-2],
    # S^T S = 2, so V = -2 / ((5 + gamma) (2 + lam)); gamma = lam = 1: V = -1/9.
    grid = ESZSLGrid(np.array([[1.0], [2.0]]), np.array([0, 1]), np.array([[1.0], [-1.0]]))
    np.testing.assert_allclose(grid.projection(1.0, 1.0), [[-1.0 / 9.0]], rtol=1e-15)
    [(_, _, scores)] = grid.grid_scores(np.array([[3.0]]), np.array([[1.0], [2.0]]), [1.0], [1.0])
    np.testing.assert_allclose(scores, [[-3.0 / 9.0, -6.0 / 9.0]], rtol=1e-15)


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
    config = BaselineConfig(ridge_alpha=0.5, eszsl_gamma=0.2, eszsl_lambda=3.0, sae_lambda=4.0)
    rows, model, sae = fit_baselines(feats[train], labels[train], seen, dk, new_ids, config)
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
    np.testing.assert_array_equal(
        sae.projection, SAEGrid(feats[train], y, dk[seen_ids]).projection(4.0)
    )
    assert sae.lam == 4.0
    with pytest.raises(KeyError):
        fit_baselines(feats, labels, seen, dk, new_ids, config)  # labels of new classes


def test_fit_baselines_needs_every_setting():
    dk, feats, labels = planted_world(n_classes=8, per_class=6, seed=4)
    seen = ClassRows("seen", np.arange(6), np.ones((6, 8)), np.zeros(6))
    train = labels < 6
    config = BaselineConfig(ridge_alpha=1.0)
    assert config.missing(CLOSED_FORM_SETTINGS) == ["eszsl_gamma", "eszsl_lambda", "sae_lambda"]
    assert config.missing()[:3] == ["eszsl_gamma", "eszsl_lambda", "sae_lambda"]
    assert len(config.missing()) == 10  # the trained baselines' settings too
    with pytest.raises(ValueError, match=r"\['eszsl_gamma', 'eszsl_lambda', 'sae_lambda'\] not"):
        fit_baselines(feats[train], labels[train], seen, dk, np.array([6, 7]), config)


def test_sae_by_hand_on_a_one_dimensional_problem():
    # D = A = 1, N = 2: features 1 and -2 are L2-normalised to 1 and -1, S = [1, -1];
    # S S^T = 2, X X^T = 2, S X^T = 2, so W = (1 + lam) 2 / (2 + 2 lam) = 1 for every lam.
    grid = SAEGrid(np.array([[1.0], [-2.0]]), np.array([0, 1]), np.array([[1.0], [-1.0]]))
    for lam in (0.1, 1.0, 100.0):
        np.testing.assert_allclose(grid.projection(lam), [[1.0]], rtol=1e-14)
    model = SAEModel(grid.projection(1.0), 1.0)
    # prototypes W^T s_c = 1 and -2; cosine with the feature 3: 1 and -1
    np.testing.assert_allclose(
        model.scores(np.array([[3.0]]), np.array([[1.0], [-2.0]])), [[1.0, -1.0]], rtol=1e-14
    )
    with pytest.raises(ValueError, match="lam must be > 0"):
        grid.projection(0.0)


def test_sae_solves_the_papers_sylvester_equation():
    dk, feats, labels = planted_world(seed=5)
    seen = labels < 10
    x = feats[seen] / np.linalg.norm(feats[seen], axis=1, keepdims=True)
    s = dk[labels[seen]]
    grid = SAEGrid(feats[seen], labels[seen], dk[:10])
    for lam in (0.5, 20.0):
        w = grid.projection(lam)
        # eq. 9 of Kodirov et al. 2017: A W + W B = C, solved here by scipy independently
        a, b, c = s.T @ s, lam * x.T @ x, (1 + lam) * s.T @ x
        np.testing.assert_allclose(a @ w + w @ b, c, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(w, solve_sylvester(a, b, c), rtol=1e-6, atol=1e-8)
    # more attributes than seen classes and more dimensions than images: singular on both
    # sides; the minimum-norm solution still satisfies the equation
    rng = np.random.default_rng(0)
    few = rng.normal(size=(6, 9))
    few_labels = np.array([0, 1, 2, 0, 1, 2])
    few_dk = rng.normal(size=(3, 5))
    w = SAEGrid(few, few_labels, few_dk).projection(2.0)
    xf = (few / np.linalg.norm(few, axis=1, keepdims=True)).T
    sf = few_dk[few_labels].T
    np.testing.assert_allclose(sf @ sf.T @ w + 2.0 * w @ xf @ xf.T, 3.0 * sf @ xf.T, atol=1e-10)


def test_sae_recovers_planted_classes_and_round_trips():
    dk, feats, labels = planted_world()
    seen = labels < 10
    grid = SAEGrid(feats[seen], labels[seen], dk[:10])
    model = SAEModel(grid.projection(1.0), 1.0)
    scores = model.scores(feats[~seen], dk[10:])  # ZSL among the 4 unseen classes
    assert np.mean(np.argmax(scores, axis=1) + 10 == labels[~seen]) > 0.9
    tensors, metadata = model.to_safetensors()
    back = SAEModel.from_safetensors(tensors, metadata)
    assert back.lam == 1.0
    np.testing.assert_array_equal(back.projection, model.projection)
