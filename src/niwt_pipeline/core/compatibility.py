"""Bilinear compatibility models trained by SGD with the ranking losses of ALE, SJE and DeViSE.

All three score an image ``x`` (D,) against a class signature ``s_c`` (A,) with the
bilinear compatibility ``F(x, c) = x^T W s_c``, W (D, A), and differ only in the ranking
loss on the seen classes (``Delta(y, c) = margin`` for ``c != y``, 0 for ``c = y``;
``l_c = Delta(y, c) + F(x, c) - F(x, y)``):

* ALE (Akata, Perronnin, Harchaoui & Schmid, CVPR 2013 / TPAMI 2016): the weighted
  approximate ranking loss, ``(beta_r / r) * sum_{c: l_c > 0} l_c`` with ``r`` the number of
  violating classes and ``beta_r = sum_{i=1}^r 1/i``.
* SJE (Akata, Reed, Walter, Lee & Schiele, CVPR 2015): the structured SVM loss,
  ``max(0, max_c [Delta(y, c) + F(x, c)] - F(x, y))``.
* DeViSE (Frome et al., NeurIPS 2013): the hinge rank loss, ``sum_{c != y} max(0, l_c)``.

:func:`fit_compatibility` trains W with plain minibatch SGD (one run can return the model
after several epochs, so a validation picks the number of epochs); :class:`CompatibilityModel`
scores images against any classes' signatures, seen or unseen.  Inputs and outputs are
float64 numpy; training runs in float64 torch on the CPU and is deterministic given the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from niwt_pipeline.core.baselines import _check_labels, _is_int, _is_real, _np64, _unit_rows

LOSSES: tuple[str, ...] = ("ale", "sje", "devise")
INITS: tuple[str, ...] = ("zeros", "gaussian")


def _violations(scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """``l_c = Delta(y, c) + F(x, c) - F(x, y)``, (B, S); exactly 0 at ``c = y``."""
    true = scores.gather(1, labels[:, None])
    delta = torch.full_like(scores, margin).scatter_(1, labels[:, None], 0.0)
    return delta + scores - true


def _harmonic(n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``beta_r = sum_{i=1}^r 1/i`` for r = 0..n_classes (``beta_0 = 0``), (n_classes + 1,)."""
    steps = torch.arange(1, n_classes + 1, dtype=dtype)
    return torch.cat([steps.new_zeros(1), torch.cumsum(1.0 / steps, 0)])


def _loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    loss: str,
    margin: float,
    harmonic: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`compatibility_loss` without the input checks (the training loop's hot path);
    ``harmonic``: :func:`_harmonic` of at least S classes, computed when not given."""
    if loss == "sje":
        true = scores.gather(1, labels[:, None])[:, 0]
        delta = torch.full_like(scores, margin).scatter_(1, labels[:, None], 0.0)
        # max(dim) returns (and back-propagates through) the first maximal class on ties
        return torch.clamp(torch.max(scores + delta, dim=1).values - true, min=0.0).mean()
    hinge = torch.clamp(_violations(scores, labels, margin), min=0.0)  # (B, S), 0 at c = y
    per_image = hinge.sum(dim=1)
    if loss == "ale":
        if harmonic is None:
            harmonic = _harmonic(scores.shape[1], scores.dtype).to(scores.device)
        rank = (hinge > 0).sum(dim=1)
        per_image = per_image * (harmonic[rank] / rank.clamp(min=1))
    return per_image.mean()


def compatibility_loss(
    scores: torch.Tensor, labels: torch.Tensor, loss: str, margin: float = 1.0
) -> torch.Tensor:
    """The ranking loss of ALE, SJE or DeViSE, averaged over a batch.

    With ``F`` = ``scores`` (compatibilities ``x^T W s_c``), ``y`` the label,
    ``Delta(y, c) = margin`` for ``c != y`` and 0 for ``c = y``, and
    ``l_c = Delta(y, c) + F(x, c) - F(x, y)``, the loss of one image is:

    * ``"ale"``: ``(beta_r / r) * sum_{c != y, l_c > 0} l_c`` with ``r = #{c != y: l_c > 0}``
      and ``beta_r = sum_{i=1}^r 1/i`` (0 when ``r = 0``): the rank-weighted loss of
      Akata et al. (TPAMI 2016; Usunier et al.'s ``alpha_i = 1/i``), using
      the exact number of violating classes ``r`` rather than WARP's sampled estimate of it.
      The weight ``beta_r / r`` is piecewise constant, so it carries no gradient.
    * ``"sje"``: ``max(0, max_c [Delta(y, c) + F(x, c)] - F(x, y))`` (Akata et al.,
      CVPR 2015); on ties the gradient goes to the first maximal class.
    * ``"devise"``: ``sum_{c != y} max(0, margin - F(x, y) + F(x, c))`` (Frome et al.,
      NeurIPS 2013).

    With ``margin = 1`` (the default) ``Delta`` is the 0/1 loss of the ALE and SJE papers.

    Args:
        scores: (B, S) float compatibilities of B images with S classes (S >= 2).
        labels: (B,) int, each image's class in 0..S-1.
        loss: one of :data:`LOSSES`.
        margin: ``Delta(y, c)`` for ``c != y`` (> 0), in the units of ``scores``.

    Returns:
        A 0-d tensor of ``scores``' dtype: the mean of the per-image losses (>= 0),
        differentiable with respect to ``scores``.

    Raises:
        ValueError: if ``loss`` is not in :data:`LOSSES`, ``margin`` is not a finite number
            > 0, ``scores`` is not a floating (B, S) tensor with B >= 1 and S >= 2, or
            ``labels`` is not (B,) integers in 0..S-1.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if not (_is_real(margin) and margin > 0):
        raise ValueError(f"margin: expected a finite number > 0, got {margin!r}")
    if scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(
            f"scores: expected a floating (B, S) tensor, got {scores.dtype} {tuple(scores.shape)}"
        )
    if scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ValueError(f"scores: expected B >= 1 images and S >= 2 classes, got {scores.shape}")
    if labels.shape != scores.shape[:1] or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels: expected ({scores.shape[0]},) integers, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels: expected values in 0..{scores.shape[1] - 1}")
    return _loss(scores, labels.long(), loss, float(margin))


@dataclass
class CompatibilityConfig:
    """Hyper-parameters of :func:`fit_compatibility`.

    Attributes:
        loss: the ranking loss, one of :data:`LOSSES` (``"ale"``, ``"sje"``, ``"devise"``).
        lr: SGD learning rate (> 0); the step on W is ``lr`` times the gradient of the
            batch-mean loss, so a step moves the scores by about ``lr * ||s_c||^2`` (unit
            features): choose it on a log grid relative to the signatures' squared norm.
        epochs: passes over the training images (>= 1): the epoch budget; a validation
            picks the number of epochs with ``snapshots`` (early stopping, the usual
            regulariser of these SGD baselines).
        batch_size: images per SGD step (>= 1; the papers use 1).
        margin: ``Delta(y, c)`` for ``c != y`` (> 0), see :func:`compatibility_loss`.
        weight_decay: L2 penalty (>= 0): SGD minimises ``loss + weight_decay / 2 * ||W||^2``
            (torch's ``weight_decay``); 0 = none (rely on early stopping).
        seed: seeds the initialisation and the order of the images (int >= 0).
        normalise_features: scale each image's feature vector to unit L2 norm, in training
            and in :meth:`CompatibilityModel.scores`.  Default True, as ALE (l2-normalised
            Fisher vectors) and the common reimplementations of all three do: the scale of
            ``F`` and of each SGD step then no longer depends on the backbone's activation
            magnitude (so one ``lr``/``margin`` grid serves different backbones) and no image
            dominates a step by its norm.  Per image it does not change the ranking of the
            classes, but it does change how scores of different images compare (e.g. under
            calibrated stacking).
        init: W's initialisation: ``"gaussian"`` (default), i.i.d. ``N(0, 1/D)`` from
            ``seed``: the random initialisation of WSABIE (Weston, Bengio & Usunier, IJCAI
            2011, "mean 0, standard deviation 1/sqrt(d)"), whose ranking loss ALE adopts;
            the three papers do not state theirs and common reimplementations start from
            random W too.  ``"zeros"``: all zeros (then SGD's first steps depend only on the
            data; SJE's first ties go to the first violating class).

    Raises:
        ValueError: naming the field, what was expected and what was given, when a field
            is out of range or of the wrong type.
    """

    loss: str
    lr: float = 0.1
    epochs: int = 50
    batch_size: int = 32
    margin: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    normalise_features: bool = True
    init: str = "gaussian"

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> ValueError:
            value = getattr(self, field)
            return ValueError(f"CompatibilityConfig.{field}: expected {expected}, got {value!r}")

        if self.loss not in LOSSES:
            raise bad("loss", f"one of {LOSSES}")
        if not (_is_real(self.lr) and self.lr > 0):
            raise bad("lr", "> 0")
        if not (_is_int(self.epochs) and self.epochs >= 1):
            raise bad("epochs", "an int >= 1")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise bad("batch_size", "an int >= 1")
        if not (_is_real(self.margin) and self.margin > 0):
            raise bad("margin", "> 0")
        if not (_is_real(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", ">= 0")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise bad("seed", "an int >= 0")
        if not isinstance(self.normalise_features, bool):
            raise bad("normalise_features", "a bool")
        if self.init not in INITS:
            raise bad("init", f"one of {INITS}")

    def settings(self) -> dict[str, Any]:
        """The training settings other than the loss and the normalisation, JSON-able."""
        return {
            "lr": float(self.lr),
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "margin": float(self.margin),
            "weight_decay": float(self.weight_decay),
            "seed": int(self.seed),
            "init": self.init,
        }


@dataclass
class CompatibilityModel:
    """A trained bilinear compatibility ``F(x, c) = x^T W s_c`` (ALE, SJE or DeViSE).

    Attributes:
        projection: W, (D, A) float64.
        loss: the ranking loss it was trained with, one of :data:`LOSSES`.
        settings: JSON-able training settings (``lr``, ``epochs`` = the epochs actually
            trained, ``batch_size``, ``margin``, ``weight_decay``, ``seed``, ``init``).
        normalise_features: whether images are L2-normalised before scoring (as in training).

    Raises:
        ValueError: if ``projection`` is not a finite 2-d array or ``loss`` is unknown.
    """

    projection: np.ndarray
    loss: str
    settings: dict[str, Any]
    normalise_features: bool = True

    def __post_init__(self) -> None:
        self.projection = _np64(self.projection, "projection", 2)
        if self.loss not in LOSSES:
            raise ValueError(
                f"CompatibilityModel.loss: expected one of {LOSSES}, got {self.loss!r}"
            )

    def scores(
        self, features: np.ndarray | torch.Tensor, signatures: np.ndarray | torch.Tensor
    ) -> np.ndarray:
        """Compatibilities ``x^T W s_c`` of every image with every class.

        Args:
            features: (N, D) image features (L2-normalised per image first when
                :attr:`normalise_features`, as in training).
            signatures: (C, A) class signatures (domain knowledge), any classes.

        Returns:
            (N, C) float64 scores.

        Raises:
            ValueError: on inputs that are not 2-d, hold NaN/inf, or whose widths are not
                D and A.
        """
        f = _np64(features, "features", 2)
        s = _np64(signatures, "signatures", 2)
        d, a = self.projection.shape
        if f.shape[1] != d:
            raise ValueError(f"features: expected (N, {d}), got {f.shape}")
        if s.shape[1] != a:
            raise ValueError(f"signatures: expected (C, {a}), got {s.shape}")
        if self.normalise_features:
            f = _unit_rows(f)
        return f @ self.projection @ s.T

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (``W``) and JSON-able metadata for a safetensors file."""
        return {"W": torch.as_tensor(self.projection)}, {
            "loss": self.loss,
            "settings": dict(self.settings),
            "normalise_features": bool(self.normalise_features),
        }

    @classmethod
    def from_safetensors(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> CompatibilityModel:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            KeyError: when ``W`` or a metadata entry is missing.
        """
        return cls(
            tensors["W"].numpy().astype(np.float64),
            str(metadata["loss"]),
            dict(metadata["settings"]),
            bool(metadata["normalise_features"]),
        )


def fit_compatibility(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    dk_seen: np.ndarray | torch.Tensor,
    config: CompatibilityConfig,
    *,
    snapshots: Sequence[int] | None = None,
) -> list[CompatibilityModel]:
    """Train W (D, A) of ``F(x, c) = x^T W s_c`` by minibatch SGD on a ranking loss.

    W is initialised as ``config.init`` says; each epoch visits the images once in a new
    random order (one ``torch.randperm`` per epoch from a generator seeded with
    ``config.seed``, drawn after the initialisation), ``config.batch_size`` at a time (the
    last batch may be smaller), and takes one ``torch.optim.SGD`` step (no momentum,
    ``weight_decay`` as configured) on :func:`compatibility_loss` of the batch against all
    S seen classes.  Deterministic given the seed; the model after epoch ``k`` is the same
    whatever the epoch budget.

    Args:
        features: (N, D) features of the training images (N >= 1).
        labels: (N,) int in 0..S-1, each image's row of ``dk_seen``.
        dk_seen: (S, A) signatures of the seen classes (S >= 2).
        config: the hyper-parameters.
        snapshots: the epochs after which to return a model, each in 0..``config.epochs``
            (0 = the initial W); ``None`` = ``[config.epochs]``.  Training stops after the
            largest one.

    Returns:
        One :class:`CompatibilityModel` per distinct epoch of ``snapshots``, in increasing
        epoch order; ``model.settings["epochs"]`` is that epoch.

    Raises:
        TypeError: if ``config`` is not a :class:`CompatibilityConfig`.
        ValueError: if an input has the wrong number of dimensions or holds NaN/inf,
            ``labels`` is not (N,) in 0..S-1, N < 1, S < 2, or ``snapshots`` is empty or
            holds an epoch outside 0..``config.epochs``.
    """
    if not isinstance(config, CompatibilityConfig):
        raise TypeError(f"config: expected a CompatibilityConfig, got {type(config).__name__}")
    f = _np64(features, "features", 2)
    s = _np64(dk_seen, "dk_seen", 2)
    if f.shape[0] < 1:
        raise ValueError(f"features: expected at least one image, got shape {f.shape}")
    if s.shape[0] < 2:
        raise ValueError(f"dk_seen: expected at least 2 classes to rank, got shape {s.shape}")
    y = _check_labels(labels, f.shape[0], s.shape[0])
    wanted = _snapshot_epochs(snapshots, config.epochs)

    n, d = f.shape
    x = torch.from_numpy(_unit_rows(f) if config.normalise_features else f)
    sig_t = torch.from_numpy(s).T.contiguous()  # (A, S)
    target = torch.from_numpy(y)
    generator = torch.Generator().manual_seed(int(config.seed))
    if config.init == "gaussian":
        init = torch.randn(d, s.shape[1], generator=generator, dtype=torch.float64) / math.sqrt(d)
    else:
        init = torch.zeros(d, s.shape[1], dtype=torch.float64)
    w = init.requires_grad_(True)
    optimiser = torch.optim.SGD([w], lr=float(config.lr), weight_decay=float(config.weight_decay))
    margin = float(config.margin)
    harmonic = _harmonic(s.shape[0], torch.float64)

    def snapshot(epoch: int) -> CompatibilityModel:
        settings = config.settings() | {"epochs": epoch}
        projection = w.detach().numpy().copy()
        return CompatibilityModel(projection, config.loss, settings, config.normalise_features)

    models = [snapshot(0)] if wanted[0] == 0 else []
    for epoch in range(1, wanted[-1] + 1):
        order = torch.randperm(n, generator=generator)
        x_epoch, y_epoch = x[order], target[order]  # batches are then views
        for start in range(0, n, config.batch_size):
            stop = start + config.batch_size
            scores = x_epoch[start:stop] @ w @ sig_t
            value = _loss(scores, y_epoch[start:stop], config.loss, margin, harmonic)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        if epoch in wanted:
            models.append(snapshot(epoch))
    return models


def _snapshot_epochs(snapshots: Sequence[int] | None, epochs: int) -> list[int]:
    if snapshots is None:
        return [epochs]
    values = list(snapshots)
    if not values or not all(_is_int(k) and 0 <= k <= epochs for k in values):
        raise ValueError(f"snapshots: expected epochs in 0..{epochs}, got {values!r}")
    return sorted({int(k) for k in values})
