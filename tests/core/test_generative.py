"""f-CLSWGAN: exact loss terms, determinism, round trip, a planted problem and every error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from niwt_pipeline.core.generative import (
    METHOD,
    FeatureGenerator,
    GeneratorConfig,
    classification_loss,
    fclswgan_rows,
    fit_generator,
    fit_gzsl_classifier,
    gradient_penalty,
)
from niwt_pipeline.core.rows import ClassRows


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: fast on a shared machine and the same floats every run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = GeneratorConfig(
    hidden=8,
    epochs=2,
    batch_size=8,
    pretrain_epochs=2,
    classifier_epochs=2,
    n_synthetic=4,
)


def _tiny_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    dk = rng.random((3, 4))  # S=3, A=4
    labels = np.repeat(np.arange(3), 8)  # N=24
    features = np.maximum(dk[labels] @ rng.normal(size=(4, 5)) + rng.normal(size=(24, 5)), 0.0)
    return features, labels, dk


@pytest.fixture(scope="module")
def tiny():
    features, labels, dk = _tiny_problem()
    return features, labels, dk, fit_generator(features, labels, dk, TINY)


# -- the loss terms ----------------------------------------------------------------------------


def test_gradient_penalty_of_a_linear_critic_is_exact():
    # D(x, a) = v.x + u.a has input gradient v everywhere: GP = weight * (||v|| - 1)^2
    v = torch.tensor([3.0, 4.0])  # ||v|| = 5
    u = torch.tensor([1.0, -2.0, 0.5])

    def critic(x, a):
        return x @ v + a @ u

    gen = torch.Generator().manual_seed(0)
    real, fake, attrs = torch.randn(6, 2), torch.randn(6, 2), torch.randn(6, 3)
    gp = gradient_penalty(critic, real, fake, attrs, weight=10.0, generator=gen)
    assert gp.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2, rel=1e-6)
    assert gradient_penalty(critic, real, fake, attrs, weight=0.5).item() == pytest.approx(8.0)


def test_gradient_penalty_interpolates_and_reaches_the_critic_parameters():
    # D(x) = 0.5 * s * ||x||^2 has gradient s * x^ at x^ = alpha real + (1 - alpha) fake
    s = torch.tensor(1.0, requires_grad=True)

    def critic(x, a):
        return 0.5 * s * (x**2).sum(1)

    real = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    fake = torch.zeros(2, 2)
    alpha = torch.tensor([0.5, 0.5])  # x^ = [1, 0] (norm 1) and [0, 2] (norm 2)
    gp = gradient_penalty(critic, real, fake, torch.zeros(2, 1), weight=2.0, alpha=alpha)
    assert gp.item() == pytest.approx(2.0 * ((1 - 1) ** 2 + (2 - 1) ** 2) / 2)
    gp.backward()  # d/ds of 2 * mean((s ||x^|| - 1)^2) at s = 1: 2 * (0 * 1 + 2 * 1 * 2) / 2
    assert s.grad.item() == pytest.approx(4.0)


def test_gradient_penalty_of_a_critic_ignoring_x_is_the_weight():
    gp = gradient_penalty(
        lambda x, a: a.sum(1), torch.ones(3, 2), torch.zeros(3, 2), torch.ones(3, 2), weight=7.0
    )
    assert gp.item() == pytest.approx(7.0)


def test_classification_loss_is_the_mean_negative_log_softmax():
    # row 1: P(1) = 3 / (1 + 3); row 2: P(1) = 1 / (2 + 1); mean -log = (log(4/3) + log 3) / 2
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]], dtype=torch.float64)
    loss = classification_loss(logits, torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-12)


# -- the generator -----------------------------------------------------------------------------


def test_generate_shapes_positions_and_nonnegativity(tiny):
    _, _, dk, generator = tiny
    features, positions = generator.generate(dk[[2, 0]], 5, seed=1)
    assert features.shape == (10, 5) and features.dtype == np.float64
    np.testing.assert_array_equal(positions, [0] * 5 + [1] * 5)
    assert (features >= 0).all()
    assert generator.n_features == 5 and generator.n_attributes == 4 and generator.noise_dim == 4
    assert set(generator.history) == {"wasserstein", "critic_loss", "gradient_penalty", "cls_loss"}
    assert all(len(v) == TINY.epochs for v in generator.history.values())


def test_without_relu_the_generator_can_go_negative():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 8)
    features = rng.normal(size=(24, 5)) - 1.0  # mostly negative: not post-ReLU
    config = GeneratorConfig(**{**TINY.to_dict(), "nonnegative": False})
    generator = fit_generator(features, labels, rng.random((3, 4)), config)
    generated, _ = generator.generate(rng.random((2, 4)), 20, seed=0)
    assert (generated < 0).any()


def test_fit_is_deterministic_and_leaves_the_global_rng_alone(tiny):
    features, labels, dk, generator = tiny
    state = torch.get_rng_state()
    again = fit_generator(features, labels, dk, TINY)
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in generator.state.items():
        assert torch.equal(value, again.state[key])
    a, _ = generator.generate(dk, 6, seed=3)
    b, _ = again.generate(dk, 6, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generator.generate(dk, 6, seed=4)[0])
    other = fit_generator(features, labels, dk, GeneratorConfig(**{**TINY.to_dict(), "seed": 1}))
    assert not np.array_equal(a, other.generate(dk, 6, seed=3)[0])


def test_safetensors_round_trip_gives_identical_generations(tiny, tmp_path):
    _, _, dk, generator = tiny
    tensors, metadata = generator.to_safetensors()
    path = tmp_path / "generator.safetensors"
    save_file(tensors, str(path), metadata={"json": json.dumps(metadata)})
    with safe_open(str(path), framework="pt") as handle:
        stored = json.loads(handle.metadata()["json"])
    back = FeatureGenerator.from_safetensors(load_file(str(path)), stored)
    assert back.config == generator.config
    assert back.history == generator.history
    assert back.pretrain_accuracy == generator.pretrain_accuracy
    np.testing.assert_array_equal(back.feature_scale, generator.feature_scale)
    np.testing.assert_array_equal(back.generate(dk, 7, seed=2)[0], generator.generate(dk, 7, 2)[0])


# -- the planted problem -----------------------------------------------------------------------


def _planted(seed: int = 0, n: int = 30):
    """16 classes, each one value of two 4-valued attribute groups (A = 8): the 12 pairs
    with different values are seen, the 4 pairs (i, i) new, so every value is seen three
    times.  A class's features are ReLU(attributes @ M + N(0, 1)), D = 32."""
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j] + [(i, i) for i in range(4)]
    dk = np.zeros((16, 8))
    for c, (i, j) in enumerate(pairs):
        dk[c, i] = dk[c, 4 + j] = 1.0
    rng = np.random.default_rng(seed)
    m = 2.0 * rng.normal(size=(8, 32))

    def sample(classes):
        labels = np.repeat(classes, n)
        return np.maximum(dk[labels] @ m + rng.normal(size=(len(labels), 32)), 0.0), labels

    seen, new = np.arange(12), np.arange(12, 16)
    return dk, seen, new, sample(seen), sample(seen), sample(new)


PLANTED = GeneratorConfig(
    hidden=64,
    epochs=30,
    batch_size=32,
    pretrain_epochs=20,
    classifier_epochs=20,
    n_synthetic=30,
)


@pytest.fixture(scope="module")
def planted():
    dk, seen, new, train, test_seen, test_new = _planted()
    generator = fit_generator(train[0], train[1], dk[seen], PLANTED)  # labels = positions
    return dk, seen, new, train, test_seen, test_new, generator


def test_generated_new_class_features_lie_nearest_their_own_class(planted):
    dk, _, new, _, _, (x_new, y_new), generator = planted
    generated, positions = generator.generate(dk[new], 100, seed=0)
    means = np.stack([x_new[y_new == c].mean(0) for c in new])  # real, never trained on
    nearest = ((generated[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == positions).mean() > 0.9  # chance: 0.25
    generated_means = np.stack([generated[positions == j].mean(0) for j in range(len(new))])
    own = ((generated_means[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(own, np.arange(len(new)))


def test_fclswgan_rows_classify_real_new_class_images(planted):
    dk, seen, new, (x, y), (x_seen, y_seen), (x_new, y_new), generator = planted
    class_ids = np.arange(16)[::-1]  # any column order
    rows = fclswgan_rows(generator, x, y, class_ids, dk, new)
    assert isinstance(rows, ClassRows) and rows.method == METHOD
    np.testing.assert_array_equal(rows.class_ids, class_ids)
    assert rows.weight.shape == (16, 32) and rows.weight.dtype == np.float64
    scores_new = rows.scores(x_new, class_ids)
    zsl = new[rows.scores(x_new, new).argmax(1)]
    assert (zsl == y_new).mean() > 0.9  # among the 4 new classes; chance 0.25
    assert (class_ids[scores_new.argmax(1)] == y_new).mean() > 0.6  # among 16; chance 1/16
    seen_pred = class_ids[rows.scores(x_seen, class_ids).argmax(1)]
    assert (seen_pred == y_seen).mean() > 0.9  # chance 1/16


# -- the GZSL classifier -----------------------------------------------------------------------


def _clusters():
    rng = np.random.default_rng(5)
    centres = np.array([[1.0, 0.0, 1000.0], [0.0, 1.0, 0.0]])  # dimension 2 in other units
    labels = np.repeat([0, 1], 20)
    return np.abs(centres[labels] + 0.05 * rng.normal(size=(40, 3))), labels


def test_gzsl_classifier_rows_apply_to_raw_features_and_follow_class_ids():
    x, which = _clusters()
    ids = np.array([7, 3])[which]  # real: 20 of class 7 and 10 of class 3, generated: 10 of 3
    config = GeneratorConfig(classifier_epochs=30, classifier_batch_size=8)
    weight, bias = fit_gzsl_classifier(x[:30], ids[:30], x[30:], ids[30:], [3, 7], config)
    assert weight.shape == (2, 3) and bias.shape == (2,) and weight.dtype == np.float64
    predicted = np.array([3, 7])[(x @ weight.T + bias).argmax(1)]
    np.testing.assert_array_equal(predicted, ids)
    # the scale is folded back: the same as training on pre-scaled features unscaled
    scale = np.abs(x[:30]).max(0)
    plain = GeneratorConfig(**{**config.to_dict(), "normalise_features": False})
    w_plain, b_plain = fit_gzsl_classifier(
        x[:30] / scale, ids[:30], x[30:] / scale, ids[30:], [3, 7], plain
    )
    np.testing.assert_allclose(weight * scale, w_plain, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(bias, b_plain)


# -- every error -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("noise_dim", 0, "None or an int >= 1"),
        ("hidden", 0, "an int >= 1"),
        ("hidden", True, "an int >= 1"),
        ("lr", 0.0, "a finite number > 0"),
        ("lr", float("nan"), "a finite number > 0"),
        ("beta1", 1.0, "a number in [0, 1)"),
        ("critic_steps", 0, "an int >= 1"),
        ("gp_weight", -1.0, "a finite number >= 0"),
        ("cls_weight", -0.01, "a finite number >= 0"),
        ("epochs", 0, "an int >= 1"),
        ("epochs", 2.5, "an int >= 1"),
        ("batch_size", 0, "an int >= 1"),
        ("n_synthetic", 0, "an int >= 1"),
        ("pretrain_epochs", 0, "an int >= 1"),
        ("classifier_lr", -1.0, "a finite number > 0"),
        ("classifier_epochs", 0, "an int >= 1"),
        ("classifier_batch_size", 0, "an int >= 1"),
        ("seed", -1, "an int >= 0"),
        ("nonnegative", "yes", "a bool"),
        ("normalise_features", 1, "a bool"),
        ("normalise_signatures", None, "a bool"),
    ],
)
def test_config_errors_name_the_field(name, value, expected):
    with pytest.raises(ValueError) as error:
        GeneratorConfig(**{name: value})
    assert str(error.value) == f"GeneratorConfig.{name}: expected {expected}, got {value!r}"


def test_config_round_trips_and_refuses_unknown_fields():
    assert GeneratorConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown fields"):
        GeneratorConfig.from_dict({"epochz": 3})


def test_fit_generator_errors():
    features, labels, dk = _tiny_problem()
    with pytest.raises(ValueError, match="features: expected a 2-d array"):
        fit_generator(features[0], labels, dk, TINY)
    bad = features.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="features: contains NaN"):
        fit_generator(bad, labels, dk, TINY)
    with pytest.raises(ValueError, match="at least one image"):
        fit_generator(features[:0], labels[:0], dk, TINY)
    with pytest.raises(ValueError, match="labels: expected"):
        fit_generator(features, labels[:-1], dk, TINY)
    with pytest.raises(ValueError, match="labels must index the 3 rows"):
        fit_generator(features, labels + 1, dk, TINY)
    with pytest.raises(ValueError, match="dk_seen: expected a 2-d array"):
        fit_generator(features, labels, dk[0], TINY)
    with pytest.raises(ValueError, match="nonnegative is set"):
        fit_generator(features - 1.0, labels, dk, TINY)


def test_generate_errors(tiny):
    _, _, dk, generator = tiny
    with pytest.raises(ValueError, match=r"signatures: expected \(C, 4\)"):
        generator.generate(dk[:, :3], 2)
    with pytest.raises(ValueError, match="signatures: expected a 2-d array"):
        generator.generate(dk[0], 2)
    with pytest.raises(ValueError, match="n_per_class: expected an int >= 1, got 0"):
        generator.generate(dk, 0)


def test_loss_term_errors():
    real = torch.zeros(4, 2)
    critic = lambda x, a: x.sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="weight must be >= 0"):
        gradient_penalty(critic, real, real, torch.zeros(4, 1), weight=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, real, torch.zeros(3, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="attrs"):
        gradient_penalty(critic, real, real, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="alpha has 3 entries"):
        gradient_penalty(critic, real, real, torch.zeros(4, 1), alpha=torch.zeros(3))
    with pytest.raises(ValueError, match="classification_loss"):
        classification_loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


def test_gzsl_classifier_and_rows_errors(tiny):
    features, labels, dk, generator = tiny
    x, y = features[:6], np.array([0, 0, 1, 1, 2, 2])
    g, gy = features[6:8], np.array([5, 5])
    with pytest.raises(ValueError, match="5 dimensions but generated has 4"):
        fit_gzsl_classifier(x, y, g[:, :4], gy, [0, 1, 2, 5], TINY)
    with pytest.raises(ValueError, match="repeated class ids"):
        fit_gzsl_classifier(x, y, g, gy, [0, 1, 1, 5], TINY)
    with pytest.raises(ValueError, match=r"generated_class_ids: class ids \[5\] are not among"):
        fit_gzsl_classifier(x, y, g, gy, [0, 1, 2], TINY)
    with pytest.raises(ValueError, match=r"no feature of class ids \[9\]"):
        fit_gzsl_classifier(x, y, g, gy, [0, 1, 2, 5, 9], TINY)
    with pytest.raises(ValueError, match=r"real_class_ids: expected \(6,\)"):
        fit_gzsl_classifier(x, y[:5], g, gy, [0, 1, 2, 5], TINY)
    with pytest.raises(ValueError, match="class_ids: expected a 1-d array"):
        fit_gzsl_classifier(x, y, g, gy, [[0, 1, 2, 5]], TINY)
    with pytest.raises(ValueError, match="new_ids must index the 3 rows of dk"):
        fclswgan_rows(generator, features, labels, [0, 1, 2, 3], dk, [3])
    with pytest.raises(ValueError, match="features have 4 dimensions but the generator makes 5"):
        fclswgan_rows(generator, features[:, :4], labels, [0, 1, 2], dk, [2])
