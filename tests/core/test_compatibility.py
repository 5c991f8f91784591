"""ALE / SJE / DeViSE bilinear compatibility: losses and SGD steps by hand, determinism,
snapshots, planted problems, scoring, storage and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niwt_pipeline.core.compatibility import (
    LOSSES,
    CompatibilityConfig,
    CompatibilityModel,
    compatibility_loss,
    fit_compatibility,
)
from niwt_pipeline.datasets.tensors import read_safetensors, write_safetensors

# Two images, three classes, margin 1.  l_c = 1 + F_c - F_y for c != y:
#   image 0, y = 0, F = (2, 1.5, 0):    l_1 = 0.5, l_2 = -1    -> one violator (r = 1)
#   image 1, y = 2, F = (0.5, 1, 0.2):  l_0 = 1.3, l_1 = 1.8   -> two violators (r = 2)
SCORES = torch.tensor([[2.0, 1.5, 0.0], [0.5, 1.0, 0.2]], dtype=torch.float64)
LABELS = torch.tensor([0, 2])


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        # DeViSE: image 0: 0.5; image 1: 1.3 + 1.8 = 3.1; mean 1.8
        ("devise", 1.8),
        # SJE: image 0: max(0, 0.5, -1) = 0.5; image 1: max(1.3, 1.8, 0) = 1.8; mean 1.15
        ("sje", 1.15),
        # ALE: image 0: beta_1 / 1 * 0.5 = 0.5; image 1: beta_2 / 2 = (1 + 1/2) / 2 = 0.75,
        # 0.75 * 3.1 = 2.325; mean (0.5 + 2.325) / 2 = 1.4125
        ("ale", 1.4125),
    ],
)
def test_loss_values_by_hand(loss, expected):
    value = compatibility_loss(SCORES, LABELS, loss)
    assert value.dtype == torch.float64 and value.ndim == 0
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_loss_margin_rank_three_and_zero_loss():
    # margin 2: image 0: l_1 = 2 + 1.5 - 2 = 1.5, l_2 = 2 + 0 - 2 = 0 (on the margin: not a
    # violator, so r = 1); image 1: l_0 = 2.3, l_1 = 2.8 (r = 2)
    # DeViSE (1.5 + 5.1) / 2 = 3.3; SJE (1.5 + 2.8) / 2 = 2.15;
    # ALE (1.5 + 0.75 * 5.1) / 2 = 2.6625 (counting l_2 = 0 as a violator would give 2.325)
    assert compatibility_loss(SCORES, LABELS, "devise", 2.0).item() == pytest.approx(3.3)
    assert compatibility_loss(SCORES, LABELS, "sje", 2.0).item() == pytest.approx(2.15)
    assert compatibility_loss(SCORES, LABELS, "ale", 2.0).item() == pytest.approx(2.6625)
    # all four scores equal, y = 0: three violators, each l = 1
    # ALE: beta_3 / 3 * 3 = 1 + 1/2 + 1/3 = 11/6; SJE 1; DeViSE 3
    tie = torch.zeros(1, 4, dtype=torch.float64)
    label = torch.tensor([0])
    assert compatibility_loss(tie, label, "ale").item() == pytest.approx(11 / 6, abs=1e-12)
    assert compatibility_loss(tie, label, "sje").item() == pytest.approx(1.0)
    assert compatibility_loss(tie, label, "devise").item() == pytest.approx(3.0)
    # the true class wins by more than the margin: no loss
    clear = torch.tensor([[5.0, 0.0, 3.9]], dtype=torch.float64)
    for loss in LOSSES:
        assert compatibility_loss(clear, label, loss).item() == 0.0


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        # d loss / d F for image 1 of SCORES alone (y = 2, both others violate):
        ("devise", [1.0, 1.0, -2.0]),
        ("sje", [0.0, 1.0, -1.0]),  # only the most violating class, c = 1
        ("ale", [0.75, 0.75, -1.5]),  # weight beta_2 / 2 = 0.75, not differentiated
    ],
)
def test_loss_gradients_by_hand(loss, expected):
    scores = SCORES[1:].clone().requires_grad_(True)
    compatibility_loss(scores, LABELS[1:], loss).backward()
    np.testing.assert_allclose(scores.grad.numpy(), [expected], rtol=0, atol=1e-15)


# One image x = (3, 4) (unit norm: (0.6, 0.8)), class 0 of signatures s_0 = (1, 0),
# s_1 = (0, 1), s_2 = (1, 1); W starts at zero so every F is 0 and both other classes
# violate by l = 1.  dL/dW = x (sum_c g_c s_c)^T with g = dL/dF:
#   DeViSE g = (-2, 1, 1)       -> sum_c g_c s_c = (-1, 2)
#   ALE    g = 0.75 (-2, 1, 1)  -> (-0.75, 1.5)
#   SJE    g = (-1, 1, 0) (tie between c = 1 and c = 2 -> the first) -> (-1, 1)
# One SGD step with lr = 0.5: W = -0.5 x (sum_c g_c s_c)^T.
ONE_X = np.array([[3.0, 4.0]])
ONE_DK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ("devise", [[0.3, -0.6], [0.4, -0.8]]),
        ("ale", [[0.225, -0.45], [0.3, -0.6]]),
        ("sje", [[0.3, -0.3], [0.4, -0.4]]),
    ],
)
def test_one_sgd_step_by_hand(loss, expected):
    config = CompatibilityConfig(loss=loss, lr=0.5, epochs=1, batch_size=1, init="zeros")
    [model] = fit_compatibility(ONE_X, np.array([0]), ONE_DK, config)
    np.testing.assert_allclose(model.projection, expected, rtol=0, atol=1e-15)
    assert model.projection.dtype == np.float64
    assert model.settings["epochs"] == 1 and model.loss == loss


def test_one_sgd_step_without_feature_normalisation():
    # x = (3, 4) as is: DeViSE W = -0.5 (3, 4)^T (-1, 2)
    config = CompatibilityConfig(
        loss="devise", lr=0.5, epochs=1, batch_size=1, init="zeros", normalise_features=False
    )
    [model] = fit_compatibility(ONE_X, np.array([0]), ONE_DK, config)
    np.testing.assert_allclose(model.projection, [[1.5, -3.0], [2.0, -4.0]], atol=1e-15)
    assert model.normalise_features is False


def _problem(seed=0, n=60, d=6, s=5, a=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, s, n), rng.normal(size=(s, a))


def test_weight_decay_subtracts_lr_times_decay_times_w():
    # first step: W1 = W0 - lr (grad(W0) + wd W0); the gradient does not depend on wd
    x, y, dk = _problem()
    runs = [
        fit_compatibility(
            x,
            y,
            dk,
            CompatibilityConfig(loss="ale", lr=0.2, epochs=1, batch_size=len(y), weight_decay=wd),
            snapshots=[0, 1],
        )
        for wd in (0.0, 0.5)
    ]
    w0 = runs[0][0].projection
    np.testing.assert_array_equal(runs[1][0].projection, w0)
    np.testing.assert_allclose(
        runs[1][1].projection - runs[0][1].projection, -0.2 * 0.5 * w0, atol=1e-14
    )


def test_gaussian_init_is_seeded_with_std_one_over_sqrt_d():
    rng = np.random.default_rng(1)
    x, y, dk = rng.normal(size=(3, 400)), np.array([0, 1, 0]), rng.normal(size=(2, 50))
    config = CompatibilityConfig(loss="sje", seed=3)
    [w0] = fit_compatibility(x, y, dk, config, snapshots=[0])
    assert w0.projection.shape == (400, 50) and w0.settings["epochs"] == 0
    assert w0.projection.std() == pytest.approx(1 / 20, rel=0.02)
    assert abs(w0.projection.mean()) < 0.002
    [zeros] = fit_compatibility(
        x, y, dk, CompatibilityConfig(loss="sje", init="zeros"), snapshots=[0]
    )
    assert not zeros.projection.any()


@pytest.mark.parametrize("init", ["gaussian", "zeros"])
def test_determinism_and_seed(init):
    x, y, dk = _problem()

    def run(seed):
        config = CompatibilityConfig(
            loss="devise", lr=0.1, epochs=3, batch_size=7, seed=seed, init=init
        )
        return fit_compatibility(x, y, dk, config)[0].projection

    np.testing.assert_array_equal(run(0), run(0))
    # a different seed changes the init (gaussian) or, from zeros, the minibatch order
    assert not np.allclose(run(0), run(1))


def test_snapshots_equal_shorter_runs():
    x, y, dk = _problem(seed=2)
    base = {"loss": "ale", "lr": 0.3, "batch_size": 8, "seed": 5}
    # any order, repeats allowed: one model per distinct epoch, in increasing order
    models = fit_compatibility(
        x, y, dk, CompatibilityConfig(epochs=6, **base), snapshots=[6, 2, 0, 2, 5]
    )
    assert [m.settings["epochs"] for m in models] == [0, 2, 5, 6]
    [start] = fit_compatibility(x, y, dk, CompatibilityConfig(epochs=1, **base), snapshots=[0])
    np.testing.assert_array_equal(models[0].projection, start.projection)
    for model in models[1:]:
        k = model.settings["epochs"]
        [alone] = fit_compatibility(x, y, dk, CompatibilityConfig(epochs=k, **base))
        np.testing.assert_array_equal(model.projection, alone.projection)
        assert model.settings == alone.settings
    # the default is the last epoch only
    [last] = fit_compatibility(x, y, dk, CompatibilityConfig(epochs=6, **base))
    np.testing.assert_array_equal(last.projection, models[-1].projection)
    assert not np.array_equal(models[1].projection, models[2].projection)


def _planted(seed=0, n_classes=20, n_unseen=5, a=8, d=16, per_class=20, noise=0.3):
    """Images of class c are ``s_c M + noise``: a known linear map from signatures."""
    rng = np.random.default_rng(seed)
    signatures = rng.normal(size=(n_classes, a))
    m = rng.normal(size=(a, d))
    y = np.repeat(np.arange(n_classes), per_class)
    x = signatures[y] @ m + noise * np.sqrt(a) * rng.normal(size=(len(y), d))
    n_seen = n_classes - n_unseen
    seen = y < n_seen
    return (
        (x[seen], y[seen], signatures[:n_seen]),
        (x[~seen], y[~seen] - n_seen, signatures[n_seen:]),
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_learns_a_planted_problem(loss):
    (xs, ys, ss), (xu, yu, su) = _planted()
    config = CompatibilityConfig(loss=loss, lr=0.03, epochs=20, batch_size=16)
    first, last = fit_compatibility(xs, ys, ss, config, snapshots=[0, 20])
    accuracy = float((last.scores(xu, su).argmax(1) == yu).mean())
    chance_like = float((first.scores(xu, su).argmax(1) == yu).mean())
    assert accuracy > 0.9, accuracy
    assert chance_like < 0.5, chance_like  # the random start does not already solve it
    seen_accuracy = float((last.scores(xs, ss).argmax(1) == ys).mean())
    assert seen_accuracy > 0.75  # 15 seen classes to tell apart


def test_scores_shape_and_normalisation():
    w = np.array([[1.0, 0.0], [2.0, -1.0], [0.5, 0.5]])  # D = 3, A = 2
    features = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    signatures = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    model = CompatibilityModel(w, "sje", {})
    scores = model.scores(features, signatures)
    assert scores.shape == (3, 4) and scores.dtype == np.float64
    # unit rows: (1, 0, 0) -> x^T W = (1, 0); zero row stays zero; (0, .6, .8) -> (1.6, -0.2)
    np.testing.assert_allclose(
        scores, [[1, 0, 1, 2], [0, 0, 0, 0], [1.6, -0.2, 1.4, 3.2]], atol=1e-15
    )
    np.testing.assert_allclose(model.scores(10 * features, signatures), scores, atol=1e-14)
    raw = CompatibilityModel(w, "sje", {}, normalise_features=False)
    np.testing.assert_allclose(raw.scores(features, signatures), features @ w @ signatures.T)
    np.testing.assert_allclose(raw.scores(torch.from_numpy(features), signatures)[0], 2 * scores[0])


def test_safetensors_round_trip(tmp_path):
    x, y, dk = _problem()
    config = CompatibilityConfig(loss="devise", lr=0.05, epochs=2, weight_decay=1e-3, margin=0.5)
    [model] = fit_compatibility(x, y, dk, config)
    tensors, metadata = model.to_safetensors()
    assert list(tensors) == ["W"]
    write_safetensors(tmp_path / "model.safetensors", tensors, metadata)
    back = CompatibilityModel.from_safetensors(*read_safetensors(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(back.projection, model.projection)
    assert back.projection.dtype == np.float64
    assert (back.loss, back.settings, back.normalise_features) == (
        "devise",
        {
            "lr": 0.05,
            "epochs": 2,
            "batch_size": 32,
            "margin": 0.5,
            "weight_decay": 1e-3,
            "seed": 0,
            "init": "gaussian",
        },
        True,
    )
    np.testing.assert_array_equal(back.scores(x, dk), model.scores(x, dk))
    with pytest.raises(KeyError):
        CompatibilityModel.from_safetensors(tensors, {"loss": "devise", "settings": {}})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "loss",
            "svm",
            "CompatibilityConfig.loss: expected one of ('ale', 'sje', 'devise'), got 'svm'",
        ),
        ("lr", -1, "CompatibilityConfig.lr: expected > 0, got -1"),
        ("lr", float("nan"), "CompatibilityConfig.lr: expected > 0, got nan"),
        ("epochs", 0, "CompatibilityConfig.epochs: expected an int >= 1, got 0"),
        ("epochs", 2.0, "CompatibilityConfig.epochs: expected an int >= 1, got 2.0"),
        ("batch_size", 0, "CompatibilityConfig.batch_size: expected an int >= 1, got 0"),
        ("margin", 0.0, "CompatibilityConfig.margin: expected > 0, got 0.0"),
        ("weight_decay", -0.1, "CompatibilityConfig.weight_decay: expected >= 0, got -0.1"),
        ("seed", -1, "CompatibilityConfig.seed: expected an int >= 0, got -1"),
        ("normalise_features", 1, "CompatibilityConfig.normalise_features: expected a bool, got 1"),
        (
            "init",
            "ones",
            "CompatibilityConfig.init: expected one of ('zeros', 'gaussian'), got 'ones'",
        ),
    ],
)
def test_config_errors(field, value, message):
    kwargs = {"loss": "ale", field: value}
    with pytest.raises(ValueError) as info:
        CompatibilityConfig(**kwargs)
    assert str(info.value) == message


def test_fit_input_errors():
    x, y, dk = _problem()
    config = CompatibilityConfig(loss="ale", epochs=3)
    cases = [
        ((x[0], y, dk), "features: expected a 2-d array"),
        ((np.where(np.eye(60, 6) > 0, np.nan, x), y, dk), "features: contains NaN"),
        ((x, y, dk[:, :, None]), "dk_seen: expected a 2-d array"),
        ((x, y[:-1], dk), r"labels: expected \(60,\)"),
        ((x, np.r_[y[:-1], 5], dk), r"labels must index the 5 rows of dk_seen \(0..4\)"),
        ((x, np.r_[y[:-1], -1], dk), "labels must index"),
        ((x[:0], y[:0], dk), "features: expected at least one image"),
        ((x, np.zeros_like(y), dk[:1]), "dk_seen: expected at least 2 classes"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            fit_compatibility(*args, config)
    for snapshots in ([], [4], [-1], [1.5]):
        with pytest.raises(ValueError, match=r"snapshots: expected epochs in 0\.\.3"):
            fit_compatibility(x, y, dk, config, snapshots=snapshots)
    with pytest.raises(TypeError, match="config: expected a CompatibilityConfig"):
        fit_compatibility(x, y, dk, {"loss": "ale"})


def test_loss_and_model_input_errors():
    with pytest.raises(ValueError, match=r"loss: expected one of \('ale', 'sje', 'devise'\)"):
        compatibility_loss(SCORES, LABELS, "warp")
    with pytest.raises(ValueError, match="margin: expected a finite number > 0, got 0"):
        compatibility_loss(SCORES, LABELS, "ale", margin=0)
    with pytest.raises(ValueError, match=r"scores: expected a floating \(B, S\) tensor"):
        compatibility_loss(SCORES[0], LABELS, "ale")
    with pytest.raises(ValueError, match=r"scores: expected a floating \(B, S\) tensor"):
        compatibility_loss(SCORES.long(), LABELS, "ale")
    with pytest.raises(ValueError, match="scores: expected B >= 1 images and S >= 2 classes"):
        compatibility_loss(SCORES[:, :1], LABELS, "ale")
    with pytest.raises(ValueError, match=r"labels: expected \(2,\) integers"):
        compatibility_loss(SCORES, LABELS.double(), "ale")
    with pytest.raises(ValueError, match=r"labels: expected values in 0\.\.2"):
        compatibility_loss(SCORES, torch.tensor([0, 3]), "ale")
    model = CompatibilityModel(np.zeros((3, 2)), "ale", {})
    with pytest.raises(ValueError, match=r"features: expected \(N, 3\), got \(1, 2\)"):
        model.scores(np.zeros((1, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"signatures: expected \(C, 2\), got \(4, 3\)"):
        model.scores(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="signatures: contains NaN"):
        model.scores(np.zeros((1, 3)), np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="CompatibilityModel.loss: expected one of"):
        CompatibilityModel(np.zeros((3, 2)), "hinge", {})
    with pytest.raises(ValueError, match="projection: expected a 2-d array"):
        CompatibilityModel(np.zeros(3), "ale", {})
