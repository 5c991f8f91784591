"""f-CLSWGAN: a feature-generating GZSL baseline on the same trained network.

Xian, Lorenz, Schiele & Akata, "Feature Generating Networks for Zero-Shot Learning",
CVPR 2018.  A conditional generator ``G(z, a) -> x`` turns Gaussian noise ``z`` and a
class's domain knowledge ``a`` (its attribute vector or description embedding) into a
penultimate feature ``x``.  It is trained on the seen classes' real features against a
conditional critic ``D(x, a)`` with the Wasserstein loss and gradient penalty (WGAN-GP,
Gulrajani et al., NeurIPS 2017; the paper's eq. 2)::

    L_WGAN = E[D(x, a)] - E[D(x~, a)] - lambda E[(||grad_x^ D(x^, a)||_2 - 1)^2],
    x~ = G(z, a),  x^ = alpha x + (1 - alpha) x~,  alpha ~ U(0, 1)

plus the classification loss of a softmax classifier pre-trained on the real seen features
and frozen (eq. 3), ``L_CLS = -E[log P(y | x~; theta)]``, weighted by ``beta``: the full
objective is ``min_G max_D L_WGAN + beta L_CLS`` (eq. 4).  The generator then synthesises
features of the new classes from their domain knowledge, and a linear softmax classifier
over *all* classes is trained on real seen features plus synthetic new-class features
(the paper's sec. 3.2, the "softmax" classifier).  The product is one row and bias per
class, a :class:`~niwt_pipeline.core.rows.ClassRows` of method ``"fclswgan"``.

As in the paper's implementation details and the authors' code, both networks are MLPs
with one hidden layer and LeakyReLU(0.2); the generator ends in a ReLU (the features are
post-ReLU activations), the noise is N(0, I) of the attribute's dimension and the optimiser
is Adam with ``beta1 = 0.5``.  Features are scaled per dimension to [0, 1] by their maximum
on the seen training images (the authors' min-max preprocessing; the minimum of post-ReLU
features is 0) and each class's domain knowledge to unit L2 norm, as in the authors' data.

Deviations, all for a budget of seconds instead of hours: the hidden width, learning rate
and epochs are scaled (see :class:`GeneratorConfig`); the layers start from ``nn.Linear``'s
default initialisation instead of N(0, 0.02) (it converges several times faster); and the
final classifier trains for a fixed number of epochs (the authors' code keeps its best
epoch by test accuracy, which a validation must not do).

Inputs and outputs are float64 numpy; training runs in torch float32 on the CPU, from
private random generators seeded by :attr:`GeneratorConfig.seed` (the global torch RNG is
untouched), so a fit is reproducible on one machine and thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from niwt_pipeline.core.baselines import _check_labels, _is_int, _is_real, _np64, _unit_rows
from niwt_pipeline.core.rows import ClassRows

#: The method name of the rows :func:`fclswgan_rows` returns.
METHOD = "fclswgan"

_INT_MINIMUM = {
    "hidden": 1,
    "critic_steps": 1,
    "epochs": 1,
    "batch_size": 1,
    "n_synthetic": 1,
    "pretrain_epochs": 1,
    "classifier_epochs": 1,
    "classifier_batch_size": 1,
    "seed": 0,
}
_POSITIVE = ("lr", "classifier_lr")
_NONNEGATIVE = ("gp_weight", "cls_weight")
_FLAGS = ("nonnegative", "normalise_features", "normalise_signatures")


@dataclass
class GeneratorConfig:
    """Hyper-parameters of f-CLSWGAN (:func:`fit_generator`, :func:`fit_gzsl_classifier`).

    The paper's values (CUB, ResNet-101 features of 2048 dimensions) are given with each
    field; the defaults are scaled down so that the whole fit (generator + final classifier)
    takes a few seconds on one CPU core for the default world (N ~ 1600 images, D = 128).

    Attributes:
        noise_dim: width of the Gaussian noise ``z``; ``None`` = the domain knowledge's
            width A, as in the paper (e.g. 312 for CUB's attributes).
        hidden: width of the single hidden layer of the generator and of the critic
            (paper: 4096 for 2048-d ResNet features; default 256 for 128-d features).
        lr: Adam learning rate of generator and critic (paper: 1e-4 for ~6000 generator
            updates on CUB; default 3e-3 so that the critic's Wasserstein estimate levels off
            within the default budget of ~500 updates; at 1e-4 it does not move in that
            budget).
        beta1: Adam's first-moment decay for every optimiser here (paper: 0.5).
        critic_steps: critic updates per generator update (paper: 5).
        gp_weight: ``lambda``, the gradient-penalty weight of eq. 2 (paper: 10).
        cls_weight: ``beta``, the weight of the classification loss in eq. 4 (paper: 0.01
            on CUB, SUN and AWA, 0.1 on FLO).
        epochs: the generator's epoch budget; one epoch is ``ceil(N / batch_size)``
            generator updates, each after ``critic_steps`` critic updates on fresh batches
            (the authors' loop; paper: 56 epochs on CUB).  Default 20: ~480 updates on the
            default world (N ~ 1536), ~7 s on one CPU core; 128-d features need ~500
            updates, 1280-d features ~800 (~50 epochs for N ~ 1000, ~50 s on one core).
        batch_size: images per critic / generator update (paper: 64).
        n_synthetic: synthetic features per new class for the final classifier (paper:
            300 CUB, 100 SUN, 1800 AWA).
        pretrain_epochs: epochs of the frozen softmax classifier behind ``L_CLS``, trained
            on the real seen features (authors' code: 50, Adam lr 1e-3, beta1 0.5).
        classifier_lr: Adam learning rate of both softmax classifiers (paper: 1e-3).
        classifier_epochs: epochs of the final GZSL softmax classifier (authors' code: 25).
        classifier_batch_size: images per step of both softmax classifiers.
        seed: seeds initialisation, batches, noise and the final classifier's shuffling.
        nonnegative: end the generator in a ReLU, so generated features are >= 0 like the
            post-ReLU penultimate features they imitate (the authors' generator does).
        normalise_features: scale each feature dimension by its maximum over the seen
            training features before training (the authors' min-max preprocessing for
            non-negative features); generated features are returned in the original units.
        normalise_signatures: scale each class's domain knowledge to unit L2 norm before it
            conditions the generator and critic (as the authors' attribute files are).

    Raises:
        ValueError: naming the field, what it expects and what it got, e.g.
            ``GeneratorConfig.epochs: expected an int >= 1, got 0``.
    """

    noise_dim: int | None = None
    hidden: int = 256
    lr: float = 3e-3
    beta1: float = 0.5
    critic_steps: int = 5
    gp_weight: float = 10.0
    cls_weight: float = 0.01
    epochs: int = 20
    batch_size: int = 64
    n_synthetic: int = 300
    pretrain_epochs: int = 50
    classifier_lr: float = 1e-3
    classifier_epochs: int = 25
    classifier_batch_size: int = 64
    seed: int = 0
    nonnegative: bool = True
    normalise_features: bool = True
    normalise_signatures: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(
                f"GeneratorConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
            )

        if self.noise_dim is not None:
            if not _is_int(self.noise_dim) or self.noise_dim < 1:
                fail("noise_dim", "None or an int >= 1")
            self.noise_dim = int(self.noise_dim)
        for name, minimum in _INT_MINIMUM.items():
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                fail(name, f"an int >= {minimum}")
            setattr(self, name, int(value))
        for name in _POSITIVE:
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                fail(name, "a finite number > 0")
            setattr(self, name, float(value))
        for name in _NONNEGATIVE:
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                fail(name, "a finite number >= 0")
            setattr(self, name, float(value))
        if not _is_real(self.beta1) or not 0.0 <= self.beta1 < 1.0:
            fail("beta1", "a number in [0, 1)")
        self.beta1 = float(self.beta1)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                fail(name, "a bool")
            setattr(self, name, bool(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GeneratorConfig:
        """A config from :meth:`to_dict`'s output (unknown keys are refused).

        Raises:
            ValueError: on an unknown key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"GeneratorConfig: unknown fields {unknown}")
        return cls(**values)


# -- the networks ------------------------------------------------------------------------------


class _Generator(nn.Module):
    """``G(z, a)``: (B, Z) noise and (B, A) domain knowledge -> (B, D) features."""

    def __init__(
        self, noise_dim: int, n_attributes: int, hidden: int, n_features: int, relu: bool
    ) -> None:
        super().__init__()
        # skip_init: no draw from the global RNG; _init_ or load_state_dict sets the values
        self.fc1 = nn.utils.skip_init(nn.Linear, noise_dim + n_attributes, hidden)
        self.fc2 = nn.utils.skip_init(nn.Linear, hidden, n_features)
        self.relu = bool(relu)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc1(torch.cat([z, a], dim=1)), 0.2)
        out = self.fc2(h)
        return F.relu(out) if self.relu else out


class _Critic(nn.Module):
    """``D(x, a)``: (B, D) features and (B, A) domain knowledge -> (B, 1) critic values."""

    def __init__(self, n_features: int, n_attributes: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.utils.skip_init(nn.Linear, n_features + n_attributes, hidden)
        self.fc2 = nn.utils.skip_init(nn.Linear, hidden, 1)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc1(torch.cat([x, a], dim=1)), 0.2))


def _init_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """``nn.Linear``'s default initialisation, weights and biases ~ U(+-1/sqrt(fan_in)),
    drawn from ``gen`` (the global RNG is untouched).

    The authors' code draws weights from N(0, 0.02) with zero biases; from that start the
    critic's Wasserstein estimate takes several times more updates to level off (measured on
    the default world's features: 10 epochs with this initialisation match 20 with theirs),
    too many for a budget of seconds."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return module


# -- the loss terms ----------------------------------------------------------------------------


def gradient_penalty(
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    attrs: torch.Tensor,
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """The WGAN-GP penalty of the paper's eq. 2 (Gulrajani et al. 2017, eq. 3).

    ``weight * mean_i (||grad_x D(x^_i, a_i)||_2 - 1)^2`` at ``x^_i = alpha_i real_i +
    (1 - alpha_i) fake_i``; the gradient is taken with respect to the feature input only
    (the condition ``a`` is held fixed), as in the authors' code.

    Args:
        critic: ``D(x, a)`` taking (B, D) and (B, A) tensors, returning (B,) or (B, 1).
        real: (B, D) real features; fake: (B, D) generated features (detached here).
        attrs: (B, A) each pair's domain knowledge.
        weight: ``lambda`` (>= 0).
        generator: draws ``alpha ~ U(0, 1)`` per pair when ``alpha`` is not given.
        alpha: (B,) or (B, 1) interpolation weights, to set them by hand.

    Returns:
        A scalar tensor, differentiable with respect to the critic's parameters.

    Raises:
        ValueError: if ``real`` and ``fake`` differ in shape, are not 2-d, ``attrs`` has
            another number of rows, ``alpha`` has not B entries, or ``weight`` < 0.
    """
    if weight < 0:
        raise ValueError(f"gradient_penalty: weight must be >= 0, got {weight}")
    if real.ndim != 2 or real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} must be "
            "(B, D) of the same shape"
        )
    if attrs.ndim != 2 or attrs.shape[0] != real.shape[0]:
        raise ValueError(
            f"gradient_penalty: attrs {tuple(attrs.shape)} must be (B, A) with B = {real.shape[0]}"
        )
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, generator=generator, dtype=real.dtype)
    alpha = alpha.to(real.dtype).reshape(-1, 1)
    if alpha.shape[0] != real.shape[0]:
        raise ValueError(f"gradient_penalty: alpha has {alpha.shape[0]} entries, B = {len(real)}")
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, attrs)
    grad = None
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True, allow_unused=True)
    if grad is None:  # a critic that ignores x has zero gradient
        grad = torch.zeros_like(x_hat)
    return weight * ((grad.norm(2, dim=1) - 1.0) ** 2).mean()


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``L_CLS`` of the paper's eq. 3: ``-mean_i log softmax(logits_i)[y_i]``.

    ``P(y | x~; theta)`` is the softmax of the frozen pre-trained classifier's logits on the
    generated features; eq. 4 adds ``beta * L_CLS`` to the generator's loss.

    Args:
        logits: (B, S) float logits; targets: (B,) int class positions in 0..S-1.

    Returns:
        A scalar tensor (nats).

    Raises:
        ValueError: if ``logits`` is not 2-d or ``targets`` is not (B,).
    """
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(
            f"classification_loss: logits {tuple(logits.shape)} must be (B, S) and targets "
            f"{tuple(targets.shape)} (B,)"
        )
    return F.cross_entropy(logits, targets.long())


# -- softmax classifiers -----------------------------------------------------------------------


def _train_softmax(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    lr: float,
    beta1: float,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> nn.Linear:
    """A linear softmax classifier (zero init) trained with Adam on (N, D) ``x`` and (N,)
    ``y`` in 0..n_classes-1, shuffled by ``gen``."""
    model = nn.utils.skip_init(nn.Linear, x.shape[1], n_classes)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, 0.999))
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.requires_grad_(False)
    return model


def _feature_scale(features: np.ndarray, normalise: bool) -> np.ndarray:
    """(D,) per-dimension scale: the maximum absolute value (1 where it is 0), or ones."""
    if not normalise:
        return np.ones(features.shape[1])
    top = np.abs(features).max(axis=0) if features.shape[0] else np.zeros(features.shape[1])
    return np.where(top > 0, top, 1.0)


def _signatures(dk: np.ndarray, normalise: bool) -> np.ndarray:
    return _unit_rows(dk) if normalise else dk


# -- the fitted generator ----------------------------------------------------------------------


@dataclass
class FeatureGenerator:
    """A trained f-CLSWGAN generator ``G(z, a)`` and what it needs to generate.

    Attributes:
        state: the generator network's ``state_dict`` (float32 tensors).
        config: the hyper-parameters it was trained with.
        feature_scale: (D,) float64, the per-dimension scale of the training features;
            generated features are ``G(z, a) * feature_scale``.
        n_attributes: A, the domain-knowledge width it is conditioned on.
        history: per epoch, means over its generator updates of ``wasserstein`` (the
            critic's estimate ``E[D(x)] - E[D(x~)]``), ``critic_loss`` (with the penalty) and
            ``gradient_penalty`` (each at the update's last critic step) and ``cls_loss``
            (``L_CLS`` of the generated features), each a list of floats.  A
            ``wasserstein`` that has levelled off says the epoch budget sufficed.
        pretrain_accuracy: training accuracy of the frozen classifier behind ``L_CLS``.
    """

    state: dict[str, torch.Tensor]
    config: GeneratorConfig
    feature_scale: np.ndarray
    n_attributes: int
    history: dict[str, list[float]] = field(default_factory=dict)
    pretrain_accuracy: float = math.nan

    @property
    def n_features(self) -> int:
        """D, the width of the generated features."""
        return int(self.feature_scale.shape[0])

    @property
    def noise_dim(self) -> int:
        """Z, the width of the noise."""
        return self.config.noise_dim or self.n_attributes

    def network(self) -> nn.Module:
        """A fresh ``G(z, a)`` module holding :attr:`state`, in eval mode."""
        net = _Generator(
            self.noise_dim,
            self.n_attributes,
            self.config.hidden,
            self.n_features,
            self.config.nonnegative,
        )
        net.load_state_dict(self.state)
        return net.eval()

    @torch.no_grad()
    def generate(
        self, signatures: np.ndarray | torch.Tensor, n_per_class: int, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Synthetic features of the classes described by ``signatures``.

        Args:
            signatures: (C, A) the classes' domain knowledge (raw, as given to
                :func:`fit_generator`; normalised here like the training signatures).
            n_per_class: features per class (>= 1).
            seed: seeds the noise; the same seed gives the same features.

        Returns:
            ``(features (C * n, D) float64, positions (C * n,) int64)``, class-major: rows
            ``j * n .. (j + 1) * n - 1`` belong to class ``j``, the row of ``signatures``;
            features are in the original units (non-negative when ``config.nonnegative``).

        Raises:
            ValueError: if ``signatures`` is not (C, A) with A = :attr:`n_attributes`, holds
                NaN/inf, or ``n_per_class`` < 1.
        """
        if isinstance(n_per_class, bool) or int(n_per_class) != n_per_class or n_per_class < 1:
            raise ValueError(f"generate: n_per_class: expected an int >= 1, got {n_per_class!r}")
        s = _np64(signatures, "signatures", 2)
        if s.shape[1] != self.n_attributes:
            raise ValueError(
                f"signatures: expected (C, {self.n_attributes}) domain knowledge, got {s.shape}"
            )
        n = int(n_per_class)
        positions = np.repeat(np.arange(s.shape[0], dtype=np.int64), n)
        a = torch.from_numpy(_signatures(s, self.config.normalise_signatures)).float()
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(len(positions), self.noise_dim, generator=gen)
        out = self.network()(z, a[torch.from_numpy(positions)])
        return out.double().numpy() * self.feature_scale, positions

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (``generator.<param>``, ``feature_scale``) and JSON metadata (config,
        attribute width, history, pre-training accuracy) for a safetensors file."""
        tensors = {f"generator.{k}": v.detach().clone() for k, v in self.state.items()}
        tensors["feature_scale"] = torch.from_numpy(np.array(self.feature_scale, np.float64))
        metadata = {
            "config": self.config.to_dict(),
            "n_attributes": self.n_attributes,
            "history": self.history,
            "pretrain_accuracy": None
            if math.isnan(self.pretrain_accuracy)
            else self.pretrain_accuracy,
        }
        return tensors, metadata

    @classmethod
    def from_safetensors(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> FeatureGenerator:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            KeyError: when ``feature_scale``, the config or the attribute width is missing.
            ValueError: when the stored config is invalid.
        """
        prefix = "generator."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        accuracy = metadata.get("pretrain_accuracy")
        return cls(
            state=state,
            config=GeneratorConfig.from_dict(dict(metadata["config"])),
            feature_scale=tensors["feature_scale"].double().numpy().copy(),
            n_attributes=int(metadata["n_attributes"]),
            history={
                k: [float(v) for v in vals] for k, vals in metadata.get("history", {}).items()
            },
            pretrain_accuracy=math.nan if accuracy is None else float(accuracy),
        )


def fit_generator(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    dk_seen: np.ndarray | torch.Tensor,
    config: GeneratorConfig | None = None,
    *,
    progress: bool = False,
) -> FeatureGenerator:
    """Train the f-CLSWGAN generator on the seen classes (the paper's eq. 4).

    ``min_G max_D L_WGAN + beta L_CLS``: per generator update, ``critic_steps`` critic
    updates minimise ``E[D(x~, a)] - E[D(x, a)] + lambda GP`` (eq. 2) on fresh random
    batches, then the generator minimises ``-E[D(G(z, a), a)] + beta L_CLS`` (eq. 3) on
    the last batch's classes with fresh noise, ``L_CLS`` from a linear softmax classifier
    pre-trained on the real features (``pretrain_epochs``) and frozen.

    Args:
        features: (N, D) penultimate features of the seen training images (post-ReLU, so
            >= 0 when ``config.nonnegative``).
        labels: (N,) int in 0..S-1, rows of ``dk_seen``.
        dk_seen: (S, A) domain knowledge of the seen classes.
        config: hyper-parameters (default :class:`GeneratorConfig`).
        progress: show a tqdm bar over the epochs.

    Returns:
        The trained :class:`FeatureGenerator`.

    Raises:
        ValueError: if an input has the wrong number of dimensions or holds NaN/inf, there
            are no images, ``labels`` is not (N,) in 0..S-1, or a feature is negative while
            ``config.nonnegative`` (the ReLU generator could not match it).
    """
    config = config or GeneratorConfig()
    x_np = _np64(features, "features", 2)
    dk = _np64(dk_seen, "dk_seen", 2)
    if x_np.shape[0] == 0:
        raise ValueError("features: expected at least one image, got 0")
    y_np = _check_labels(labels, x_np.shape[0], dk.shape[0])
    if config.nonnegative and (x_np < 0).any():
        raise ValueError(
            f"features: GeneratorConfig.nonnegative is set but features go down to "
            f"{x_np.min():.4g}; pass post-ReLU features or set nonnegative=False"
        )
    scale = _feature_scale(x_np, config.normalise_features)
    x = torch.from_numpy(x_np / scale).float()
    y = torch.from_numpy(y_np)
    a_all = torch.from_numpy(_signatures(dk, config.normalise_signatures)).float()
    n, d = x.shape
    n_attr = a_all.shape[1]
    noise_dim = config.noise_dim or n_attr

    gen = torch.Generator().manual_seed(config.seed)
    pretrained = _train_softmax(
        x,
        y,
        dk.shape[0],
        lr=config.classifier_lr,
        beta1=config.beta1,
        epochs=config.pretrain_epochs,
        batch_size=config.classifier_batch_size,
        gen=gen,
    )
    with torch.no_grad():
        pretrain_accuracy = float((pretrained(x).argmax(1) == y).double().mean())

    netg = _init_(_Generator(noise_dim, n_attr, config.hidden, d, config.nonnegative), gen)
    netd = _init_(_Critic(d, n_attr, config.hidden), gen)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam(netg.parameters(), lr=config.lr, betas=betas, foreach=True)
    opt_d = torch.optim.Adam(netd.parameters(), lr=config.lr, betas=betas, foreach=True)
    batch = min(config.batch_size, n)
    per_epoch = math.ceil(n / config.batch_size)
    history: dict[str, list[float]] = {
        "wasserstein": [],
        "critic_loss": [],
        "gradient_penalty": [],
        "cls_loss": [],
    }

    for _ in tqdm(range(config.epochs), desc="f-CLSWGAN", unit="epoch", disable=not progress):
        sums = dict.fromkeys(history, 0.0)
        for _ in range(per_epoch):
            netd.requires_grad_(True)
            for _ in range(config.critic_steps):
                index = torch.randperm(n, generator=gen)[:batch]
                real, cond = x[index], a_all[y[index]]
                z = torch.randn(batch, noise_dim, generator=gen)
                with torch.no_grad():
                    fake = netg(z, cond)
                d_real = netd(real, cond).mean()
                d_fake = netd(fake, cond).mean()
                penalty = gradient_penalty(
                    netd, real, fake, cond, weight=config.gp_weight, generator=gen
                )
                loss_d = d_fake - d_real + penalty
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            sums["wasserstein"] += (d_real - d_fake).item()
            sums["critic_loss"] += loss_d.item()
            sums["gradient_penalty"] += penalty.item()

            netd.requires_grad_(False)
            z = torch.randn(batch, noise_dim, generator=gen)
            fake = netg(z, cond)
            cls = classification_loss(pretrained(fake), y[index])
            loss_g = -netd(fake, cond).mean() + config.cls_weight * cls
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums["cls_loss"] += cls.item()
        for key, total in sums.items():
            history[key].append(total / per_epoch)

    return FeatureGenerator(
        state={k: v.detach().clone() for k, v in netg.state_dict().items()},
        config=config,
        feature_scale=scale,
        n_attributes=n_attr,
        history=history,
        pretrain_accuracy=pretrain_accuracy,
    )


# -- the GZSL classifier -----------------------------------------------------------------------


def _class_positions(ids: np.ndarray, position: dict[int, int], name: str) -> np.ndarray:
    missing = sorted({int(c) for c in ids} - set(position))
    if missing:
        raise ValueError(f"{name}: class ids {missing[:10]} are not among class_ids")
    return np.array([position[int(c)] for c in ids], dtype=np.int64)


def _ids(values, name: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of class ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name}: expected integer class ids")
    return a.astype(np.int64)


def fit_gzsl_classifier(
    real_features: np.ndarray | torch.Tensor,
    real_class_ids: np.ndarray | torch.Tensor,
    generated: np.ndarray | torch.Tensor,
    generated_class_ids: np.ndarray | torch.Tensor,
    class_ids: np.ndarray | torch.Tensor,
    config: GeneratorConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The final f-CLSWGAN classifier: softmax regression over all classes (sec. 3.2 of
    the paper) on real seen features plus synthetic new-class features.

    Trained in float32 with Adam (``classifier_lr``, ``beta1``), ``classifier_epochs``
    epochs of ``classifier_batch_size``, zero initialisation, shuffled from ``seed``; when
    ``normalise_features`` it is trained on features scaled per dimension by the real
    features' maximum, and the scale is folded back into the rows, so the returned rows
    apply to raw features: ``scores = features @ weight.T + bias``.

    Args:
        real_features: (N, D) real features; real_class_ids: (N,) their class ids.
        generated: (M, D) synthetic features; generated_class_ids: (M,) their class ids.
        class_ids: (C,) distinct class ids, the rows' order (every id in the two label
            arrays among them, and every one of them with at least one feature).
        config: hyper-parameters (default :class:`GeneratorConfig`).

    Returns:
        ``(weight (C, D), bias (C,))`` float64.

    Raises:
        ValueError: on inputs with the wrong shape or NaN/inf, feature widths that differ,
            repeated ``class_ids``, a label not among ``class_ids``, or a class without
            any feature.
    """
    config = config or GeneratorConfig()
    xr = _np64(real_features, "real_features", 2)
    xg = _np64(generated, "generated", 2)
    if xr.shape[1] != xg.shape[1]:
        raise ValueError(
            f"real_features have {xr.shape[1]} dimensions but generated has {xg.shape[1]}"
        )
    ids = _ids(class_ids, "class_ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"class_ids: repeated class ids {ids.tolist()[:20]}")
    yr_ids = _ids(real_class_ids, "real_class_ids")
    yg_ids = _ids(generated_class_ids, "generated_class_ids")
    if yr_ids.shape != (xr.shape[0],):
        raise ValueError(f"real_class_ids: expected ({xr.shape[0]},), got {yr_ids.shape}")
    if yg_ids.shape != (xg.shape[0],):
        raise ValueError(f"generated_class_ids: expected ({xg.shape[0]},), got {yg_ids.shape}")
    position = {int(c): j for j, c in enumerate(ids)}
    y = np.concatenate(
        [
            _class_positions(yr_ids, position, "real_class_ids"),
            _class_positions(yg_ids, position, "generated_class_ids"),
        ]
    )
    empty = sorted(set(range(len(ids))) - set(y.tolist()))
    if empty:
        raise ValueError(f"class_ids: no feature of class ids {ids[empty][:10].tolist()}")
    scale = _feature_scale(xr if len(xr) else xg, config.normalise_features)
    x = torch.from_numpy(np.concatenate([xr, xg]) / scale).float()
    model = _train_softmax(
        x,
        torch.from_numpy(y),
        len(ids),
        lr=config.classifier_lr,
        beta1=config.beta1,
        epochs=config.classifier_epochs,
        batch_size=config.classifier_batch_size,
        gen=torch.Generator().manual_seed(config.seed),
    )
    weight = model.weight.detach().double().numpy() / scale
    return weight, model.bias.detach().double().numpy().copy()


def fclswgan_rows(
    generator: FeatureGenerator,
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_ids: np.ndarray | torch.Tensor,
    dk: np.ndarray | torch.Tensor,
    new_ids: np.ndarray | torch.Tensor,
    config: GeneratorConfig | None = None,
) -> ClassRows:
    """f-CLSWGAN's GZSL rows: synthesise ``n_synthetic`` features per new class from its
    domain knowledge (seeded by ``config.seed``), then :func:`fit_gzsl_classifier` over
    ``class_ids`` on the real features plus the synthetic ones.

    Args:
        generator: the fitted generator (:func:`fit_generator`).
        features: (N, D) real features of the seen training images.
        labels: (N,) their class ids (each among ``class_ids``).
        class_ids: (C,) the classes to make rows for, in row order (seen + new).
        dk: (K, A) domain knowledge of every class, row = class id.
        new_ids: (U,) the classes to synthesise features for (each among ``class_ids``).
        config: hyper-parameters of the synthesis and classifier (default: the
            generator's own config).

    Returns:
        :class:`ClassRows` of method ``"fclswgan"``: (C, D) float64 rows and (C,) biases
        for ``class_ids``; score with ``features @ weight.T + bias``.

    Raises:
        ValueError: as :func:`fit_gzsl_classifier`, or when a new id is not a row of ``dk``
            or the feature width differs from the generator's.
    """
    config = config or generator.config
    dk_all = _np64(dk, "dk", 2)
    new = _ids(new_ids, "new_ids")
    if new.size and (new.min() < 0 or new.max() >= dk_all.shape[0]):
        raise ValueError(f"new_ids must index the {dk_all.shape[0]} rows of dk, got {new.tolist()}")
    x = _np64(features, "features", 2)
    if x.shape[1] != generator.n_features:
        raise ValueError(
            f"features have {x.shape[1]} dimensions but the generator makes {generator.n_features}"
        )
    synthetic, positions = generator.generate(dk_all[new], config.n_synthetic, seed=config.seed)
    weight, bias = fit_gzsl_classifier(x, labels, synthetic, new[positions], class_ids, config)
    return ClassRows(METHOD, _ids(class_ids, "class_ids"), weight, bias)
