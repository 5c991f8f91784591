"""The domain-knowledge -> importance mapper and its inverse (importance -> domain knowledge)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from niwt_pipeline.core.mapper import (
    InverseMap,
    LinearMapper,
    MapperConfig,
    cosine_distance,
    fit_inverse_map,
    fit_mapper,
    n_heldout,
)


def planted(n_classes: int = 12, a: int = 5, k: int = 8, per_class: int = 20, noise: float = 0.05):
    """Per-image importance = s_i * (W dk[y] + b) + noise, s_i > 0 (cosine ignores the scale)."""
    rng = np.random.default_rng(0)
    dk = rng.random((n_classes, a))
    w = rng.normal(size=(k, a))
    b = rng.normal(size=k)
    labels = np.repeat(np.arange(n_classes), per_class)
    scale = rng.uniform(0.5, 3.0, size=(labels.size, 1))
    imp = scale * (dk[labels] @ w.T + b) + noise * rng.normal(size=(labels.size, k))
    return dk, imp.astype(np.float32), labels, w, b


def test_cosine_distance_values():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-3.0, 0.0]])
    torch.testing.assert_close(cosine_distance(pred, target), torch.tensor([1.0, 0.0, 1.0, 2.0]))


def test_n_heldout_counts_and_fractions():
    assert n_heldout(40, 5) == 5
    assert n_heldout(40, 0.15) == 6
    assert n_heldout(3, 0.01) == 1
    with pytest.raises(ValueError, match="at least one must remain"):
        n_heldout(5, 5)


def test_fit_mapper_recovers_planted_map_and_reports():
    dk, imp, labels, _, _ = planted()
    cfg = MapperConfig(lr=1e-2, max_epochs=150, patience=10, n_heldout_classes=3, seed=1)
    mapper, report = fit_mapper(dk, imp, labels, np.arange(12), cfg)
    assert len(report.heldout_class_ids) == 3
    assert report.n_heldout_images == 60 and report.n_train_images == 180
    assert report.heldout_cosine > 0.95 and report.heldout_class_cosine > 0.97
    assert 1 <= report.best_epoch <= report.epochs_run <= 150
    assert report.epochs_run == len(report.train_loss) == len(report.heldout_cosine_history)
    assert report.refit_all
    assert max(report.heldout_cosine_history) == pytest.approx(report.heldout_cosine)
    pred = mapper.predict(dk)
    assert pred.shape == (12, 8) and not pred.requires_grad
    # class-level fit on all classes after the refit
    means = torch.stack([torch.from_numpy(imp[labels == c]).mean(0) for c in range(12)])
    assert float((1 - cosine_distance(pred, means)).mean()) > 0.97
    assert set(report.as_dict()) >= {"heldout_cosine", "best_epoch", "epochs_run"}


def test_fit_mapper_is_deterministic_and_leaves_global_rng_alone():
    dk, imp, labels, _, _ = planted(per_class=6)
    cfg = MapperConfig(max_epochs=20, patience=5, seed=7)
    state = torch.random.get_rng_state()
    m1, r1 = fit_mapper(dk, imp, labels, range(12), cfg)
    assert torch.equal(torch.random.get_rng_state(), state)
    m2, r2 = fit_mapper(
        torch.from_numpy(dk), torch.from_numpy(imp), torch.from_numpy(labels), range(12), cfg
    )
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k], rtol=0, atol=0)
    assert r1 == r2
    _, r3 = fit_mapper(dk, imp, labels, range(12), MapperConfig(max_epochs=20, patience=5, seed=8))
    assert r3.heldout_class_ids != r1.heldout_class_ids


def test_without_refit_the_best_early_stopped_mapper_is_returned():
    dk, imp, labels, _, _ = planted(per_class=8)
    cfg = MapperConfig(lr=1e-2, max_epochs=40, patience=3, seed=2, refit_all=False)
    mapper, report = fit_mapper(dk, imp, labels, range(12), cfg)
    held = np.isin(labels, report.heldout_class_ids)
    pred = mapper.predict(dk)[torch.from_numpy(labels[held])]
    cos = float((1 - cosine_distance(pred, torch.from_numpy(imp[held]))).mean())
    assert not report.refit_all
    assert cos == pytest.approx(report.heldout_cosine, abs=1e-6)


def test_no_holdout_trains_max_epochs():
    dk, imp, labels, _, _ = planted(per_class=4)
    _, report = fit_mapper(
        dk, imp, labels, range(12), MapperConfig(max_epochs=6, n_heldout_classes=0)
    )
    assert report.epochs_run == report.best_epoch == 6 and report.heldout_class_ids == []
    assert math.isnan(report.heldout_cosine) and not report.refit_all


def test_standardised_mapper_round_trips_through_state_dict():
    dk, imp, labels, _, _ = planted(per_class=4)
    cfg = MapperConfig(max_epochs=5, standardise_inputs=True, seed=3)
    mapper, _ = fit_mapper(dk * 100.0, imp, labels, range(12), cfg)
    torch.testing.assert_close(mapper.in_mean, torch.from_numpy(dk * 100.0).float().mean(0))
    clone = LinearMapper(5, 8)
    clone.load_state_dict(mapper.state_dict())
    torch.testing.assert_close(
        clone.predict(dk * 100.0), mapper.predict(dk * 100.0), rtol=0, atol=0
    )
    with pytest.raises(ValueError, match="shape"):
        mapper.predict(dk[:, :3])


def test_fit_mapper_input_errors():
    dk, imp, labels, _, _ = planted(per_class=2)
    with pytest.raises(ValueError, match="not in seen_class_ids"):
        fit_mapper(dk, imp, labels, range(10), MapperConfig(max_epochs=1))
    with pytest.raises(ValueError, match="rows"):
        fit_mapper(dk, imp[:-1], labels, range(12), MapperConfig(max_epochs=1))
    with pytest.raises(ValueError, match="n_heldout_classes"):
        MapperConfig(n_heldout_classes=1.5)
    with pytest.raises(ValueError, match="lr"):
        MapperConfig(lr=0)


def test_inverse_map_matches_closed_form():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 4)) * np.array([1.0, 10.0, 0.1, 2.0])
    y = rng.normal(size=(9, 2))
    inv = fit_inverse_map(x, y, ridge_alpha=0.7, l2_normalise=False)
    # closed form: standardise x (population std), centre y, (Z^T Z + a I)^-1 Z^T (y - mean y)
    z = (x - x.mean(0)) / x.std(0)
    coef = np.linalg.solve(z.T @ z + 0.7 * np.eye(4), z.T @ (y - y.mean(0)))
    np.testing.assert_allclose(inv.weight.numpy(), coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(inv.predict(x).numpy(), z @ coef + y.mean(0), rtol=1e-10, atol=1e-12)
    # more features than samples: the dual form gives the same solution
    xw = rng.normal(size=(5, 8))
    wide = fit_inverse_map(xw, y[:5], ridge_alpha=0.3, l2_normalise=False)
    zw = (xw - xw.mean(0)) / xw.std(0)
    coef_w = np.linalg.solve(zw.T @ zw + 0.3 * np.eye(8), zw.T @ (y[:5] - y[:5].mean(0)))
    np.testing.assert_allclose(wide.weight.numpy(), coef_w, rtol=1e-8, atol=1e-10)


def test_inverse_map_recovers_planted_map_and_round_trips():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 6))
    x_unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    true = rng.normal(size=(6, 3))
    y = x_unit @ true + 0.5
    inv = fit_inverse_map(torch.from_numpy(x * 7.0), torch.from_numpy(y), ridge_alpha=0.0)
    # L2-normalised rows: scaling the importance does not change the prediction
    np.testing.assert_allclose(inv.predict(x).numpy(), y, atol=1e-8)
    back = InverseMap.from_state(inv.state())
    assert back.l2_normalise
    np.testing.assert_allclose(back.predict(x[:3]).numpy(), y[:3], atol=1e-8)
    assert all(isinstance(v, torch.Tensor) for v in inv.state().values())
    with pytest.raises(ValueError, match="ridge_alpha"):
        fit_inverse_map(x, y, ridge_alpha=-1.0)
