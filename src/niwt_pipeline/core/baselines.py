"""Closed-form zero-shot baselines on the same trained network.

* :func:`ridge_rows` (the ``weight_regression`` method): ridge regression from a class's
  domain knowledge to its classifier row (and bias), fitted on the seen classes and
  applied to the unseen ones.
* ESZSL (Romera-Paredes & Torr, ICML 2015): a bilinear compatibility
  ``score(x, c) = x^T V s_c`` between penultimate features and domain knowledge, in
  closed form; :class:`ESZSLGrid` scores a whole grid of its two regularisers exactly, so
  the validation chooses them on the same pseudo-unseen problem as every other method.
* SAE (Kodirov, Xiang & Gong, CVPR 2017): the semantic autoencoder, a projection between
  features and domain knowledge that must also reconstruct the features, in closed form
  (:class:`SAEGrid`), scored in the visual space (:class:`SAEModel`).

All computations are in float64 numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from niwt_pipeline.core.rows import ClassRows

DEFAULT_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _np64(x, name: str, ndim: int) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _is_int(value: Any) -> bool:
    """A whole number (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite real number (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """``argmin_B ||x B - y||^2 + alpha ||B||^2`` (x (N, P), y (N, Q)); dual form when P > N."""
    n, p = x.shape
    if alpha <= 0:
        return np.linalg.pinv(x) @ y
    if p <= n:
        return np.linalg.solve(x.T @ x + alpha * np.eye(p), x.T @ y)
    return x.T @ np.linalg.solve(x @ x.T + alpha * np.eye(n), y)


def ridge_rows(
    dk_seen: np.ndarray | torch.Tensor,
    seen_weight: np.ndarray | torch.Tensor,
    seen_bias: np.ndarray | torch.Tensor,
    dk_unseen: np.ndarray | torch.Tensor,
    alpha: float = 1.0,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Predict classifier rows of unseen classes from their domain knowledge by ridge regression.

    Fits ``[w_c, b_c] = B^T (s_c - mean_s) + mean_[w, b]`` on the seen classes, i.e. ridge
    with an unpenalised intercept, in closed form.

    Args:
        dk_seen: (S, A) domain knowledge of the seen classes (rows aligned with ``seen_weight``).
        seen_weight: (S, D) seen classifier rows; seen_bias: (S,) their biases.
        dk_unseen: (U, A) domain knowledge of the classes to predict.
        alpha: ridge penalty (>= 0; 0 = minimum-norm least squares).

    Returns:
        ``(W_u (U, D), b_u (U,))``: torch tensors of ``seen_weight``'s dtype when it is a
        tensor, else float64 numpy arrays.

    Raises:
        ValueError: if ``alpha < 0``, an input has the wrong number of dimensions or holds
            NaN/inf, the seen row counts differ, or the two domain-knowledge widths differ.
    """
    if alpha < 0:
        raise ValueError(f"ridge_rows: alpha must be >= 0, got {alpha}")
    xs = _np64(dk_seen, "dk_seen", 2)
    xu = _np64(dk_unseen, "dk_unseen", 2)
    w = _np64(seen_weight, "seen_weight", 2)
    b = _np64(seen_bias, "seen_bias", 1)
    if not xs.shape[0] == w.shape[0] == b.shape[0]:
        raise ValueError(
            f"dk_seen ({xs.shape[0]}), seen_weight ({w.shape[0]}), seen_bias ({b.shape[0]}): "
            "row counts differ"
        )
    if xs.shape[1] != xu.shape[1]:
        raise ValueError(f"dk_seen has {xs.shape[1]} dimensions but dk_unseen has {xu.shape[1]}")
    target = np.concatenate([w, b[:, None]], axis=1)
    x_mean, t_mean = xs.mean(0), target.mean(0)
    coef = _ridge(xs - x_mean, target - t_mean, float(alpha))
    pred = (xu - x_mean) @ coef + t_mean
    w_u, b_u = pred[:, :-1], pred[:, -1]
    if isinstance(seen_weight, torch.Tensor):
        return torch.from_numpy(w_u).to(seen_weight.dtype), torch.from_numpy(b_u).to(
            seen_weight.dtype
        )
    return w_u, b_u


def _label_matrix(labels: np.ndarray, n_classes: int, coding: str) -> np.ndarray:
    if coding not in ("pm1", "01"):
        raise ValueError(f"label_coding must be 'pm1' or '01', got {coding!r}")
    y = (
        np.zeros((labels.shape[0], n_classes))
        if coding == "01"
        else -np.ones((labels.shape[0], n_classes))
    )
    y[np.arange(labels.shape[0]), labels] = 1.0
    return y


def _check_labels(labels, n: int, n_classes: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    y = y.astype(np.int64)
    if y.shape != (n,):
        raise ValueError(f"labels: expected ({n},), got {y.shape}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must index the {n_classes} rows of dk_seen (0..{n_classes - 1})")
    return y


def eszsl_fit(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    dk_seen: np.ndarray | torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    *,
    label_coding: str = "pm1",
) -> np.ndarray:
    """ESZSL in closed form: ``V = (X X^T + gamma I)^-1 X Y S^T (S S^T + lam I)^-1``.

    Paper notation (Romera-Paredes & Torr 2015, eq. 6 with beta = gamma * lam):
    ``X`` (D, N) = ``features.T``, ``S`` (A, Z) = ``dk_seen.T`` and ``Y`` (N, Z) the
    ground truth, in the paper's ``{-1, +1}`` coding (``label_coding="pm1"``: +1 for the
    image's class, -1 elsewhere); ``"01"`` gives the one-hot variant some
    reimplementations use.  ``gamma`` regularises the feature side, ``lam`` the
    domain-knowledge side.

    Args:
        features: (N, D) penultimate features of seen-class training images.
        labels: (N,) int in 0..S-1, rows of ``dk_seen``.
        dk_seen: (S, A) domain knowledge of the training classes.

    Returns:
        V: (D, A) float64; score with :func:`eszsl_scores`.

    Raises:
        ValueError: if ``gamma`` or ``lam`` is <= 0, an input has the wrong number of
            dimensions or holds NaN/inf, ``labels`` is not (N,) in 0..S-1, or
            ``label_coding`` is not ``"pm1"`` or ``"01"``.
    """
    if gamma <= 0 or lam <= 0:
        raise ValueError(f"eszsl_fit: gamma and lam must be > 0, got {gamma}, {lam}")
    f = _np64(features, "features", 2)
    s = _np64(dk_seen, "dk_seen", 2)
    y = _label_matrix(_check_labels(labels, f.shape[0], s.shape[0]), s.shape[0], label_coding)
    x = f.T  # (D, N)
    left = np.linalg.solve(x @ x.T + gamma * np.eye(x.shape[0]), x @ y @ s)  # (D, A)
    return np.linalg.solve(
        s.T @ s + lam * np.eye(s.shape[1]), left.T
    ).T  # right-multiply by sym. inverse


def eszsl_scores(
    features: np.ndarray | torch.Tensor, v: np.ndarray, dk_all: np.ndarray | torch.Tensor
) -> np.ndarray:
    """``features @ V @ dk_all.T``: (N, D), (D, A), (C, A) -> (N, C) float64 scores."""
    f = _np64(features, "features", 2)
    s = _np64(dk_all, "dk_all", 2)
    return f @ np.asarray(v, dtype=np.float64) @ s.T


class ESZSLGrid:
    """ESZSL for every pair of regularisers from one pair of eigendecompositions, exactly.

    With ``X X^T = Qx diag(ex) Qx^T`` and ``S^T S = Qs diag(es) Qs^T`` (notation of
    :func:`eszsl_fit`), ``V(gamma, lam) = Qx [C / ((ex + gamma) (es + lam)^T)] Qs^T`` with
    ``C = Qx^T X Y S Qs``, so a whole grid costs two eigendecompositions and one product per
    pair (Romera-Paredes & Torr, ICML 2015, eq. 6).  Used by the validation to choose
    ``(gamma, lam)`` on the same pseudo-unseen problem as every other method.

    Args:
        features: (N, D) penultimate features of seen-class training images.
        labels: (N,) int in 0..S-1, rows of ``dk_seen``.
        dk_seen: (S, A) domain knowledge of the training classes.
        label_coding: as :func:`eszsl_fit`.

    Raises:
        ValueError: as :func:`eszsl_fit` for the inputs.
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        dk_seen: np.ndarray | torch.Tensor,
        *,
        label_coding: str = "pm1",
    ) -> None:
        f = _np64(features, "features", 2)
        s = _np64(dk_seen, "dk_seen", 2)
        y = _label_matrix(_check_labels(labels, f.shape[0], s.shape[0]), s.shape[0], label_coding)
        x = f.T  # (D, N)
        self._ex, self._qx = np.linalg.eigh(x @ x.T)
        self._es, self._qs = np.linalg.eigh(s.T @ s)
        self._core = self._qx.T @ (x @ y @ s) @ self._qs  # (D, A) in the eigenbases

    def _scaled(self, gamma: float, lam: float) -> np.ndarray:
        if gamma <= 0 or lam <= 0:
            raise ValueError(f"ESZSL: gamma and lam must be > 0, got {gamma}, {lam}")
        return self._core / np.outer(self._ex + gamma, self._es + lam)

    def projection(self, gamma: float, lam: float) -> np.ndarray:
        """V (D, A) float64, equal to :func:`eszsl_fit` with the same regularisers.

        Raises:
            ValueError: if ``gamma`` or ``lam`` is <= 0.
        """
        return self._qx @ self._scaled(gamma, lam) @ self._qs.T

    def grid_scores(
        self,
        features: np.ndarray | torch.Tensor,
        signatures: np.ndarray | torch.Tensor,
        gammas: Sequence[float],
        lams: Sequence[float],
    ):
        """``(gamma, lam, scores)`` for every pair, gamma-major: (M, D) features and (C, A)
        signatures -> (M, C) float64 scores, equal to :func:`eszsl_scores` of
        :meth:`projection`.

        Raises:
            ValueError: on a regulariser <= 0 or inputs with NaN/inf.
        """
        left = _np64(features, "features", 2) @ self._qx  # (M, D)
        right = self._qs.T @ _np64(signatures, "signatures", 2).T  # (A, C)
        for gamma in gammas:
            for lam in lams:
                yield float(gamma), float(lam), left @ self._scaled(gamma, lam) @ right


@dataclass
class ESZSLModel:
    """A fitted ESZSL: ``score(x, c) = x^T V s_c`` (Romera-Paredes & Torr, ICML 2015).

    Attributes:
        projection: V, (D, A) float64.
        gamma, lam: the regularisers it was fitted with.
    """

    projection: np.ndarray
    gamma: float
    lam: float

    def scores(self, features: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """(N, D) features and (C, A) class signatures -> (N, C) float64 scores."""
        return eszsl_scores(features, self.projection, signatures)

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Tensors and JSON metadata for a safetensors file."""
        return {"V": torch.as_tensor(self.projection)}, {"gamma": self.gamma, "lambda": self.lam}

    @classmethod
    def from_safetensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> ESZSLModel:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            KeyError: when ``V`` or a regulariser is missing.
        """
        return cls(tensors["V"].numpy(), float(metadata["gamma"]), float(metadata["lambda"]))


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


class SAEGrid:
    """The semantic autoencoder (SAE; Kodirov, Xiang & Gong, CVPR 2017) for every ``lam``
    from one pair of eigendecompositions, exactly.

    SAE's projection ``W`` (A, D) solves the Sylvester equation of the paper's eq. 9,
    ``S S^T W + lam W X X^T = (1 + lam) S X^T``, with ``X`` (D, N) the training features,
    each image's L2-normalised as in the authors' code, and ``S`` (A, N) the domain
    knowledge of each image's class.  Both sides are symmetric, so with
    ``S S^T = Qs diag(es) Qs^T`` and ``X X^T = Qx diag(ex) Qx^T``,
    ``W = Qs [(1 + lam) Qs^T S X^T Qx / (es + lam ex^T)] Qx^T``; a component where
    ``es_i + lam ex_j`` vanishes (both matrices singular there, as when A exceeds the
    number of seen classes and D the number of images) is set to zero: the minimum-norm
    solution, since the right-hand side has no weight there either.

    Args:
        features: (N, D) penultimate features of seen-class training images.
        labels: (N,) int in 0..S-1, rows of ``dk_seen``.
        dk_seen: (S, A) domain knowledge of the training classes.

    Raises:
        ValueError: on inputs with the wrong number of dimensions, NaN/inf, or labels that
            are not (N,) in 0..S-1.
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        dk_seen: np.ndarray | torch.Tensor,
    ) -> None:
        x = _unit_rows(_np64(features, "features", 2)).T  # (D, N)
        dk = _np64(dk_seen, "dk_seen", 2)
        s = dk[_check_labels(labels, x.shape[1], dk.shape[0])].T  # (A, N)
        es, self._qs = np.linalg.eigh(s @ s.T)
        ex, self._qx = np.linalg.eigh(x @ x.T)
        self._es = np.clip(es, 0.0, None)  # PSD: round-off below zero is zero
        self._ex = np.clip(ex, 0.0, None)
        self._core = self._qs.T @ (s @ x.T) @ self._qx  # (A, D) in the eigenbases

    def projection(self, lam: float) -> np.ndarray:
        """W (A, D) float64 for one ``lam`` (> 0).

        Raises:
            ValueError: if ``lam`` <= 0.
        """
        if lam <= 0:
            raise ValueError(f"SAE: lam must be > 0, got {lam}")
        denominator = self._es[:, None] + lam * self._ex[None, :]
        safe = denominator > 1e-12 * np.max(denominator)
        factor = np.where(safe, (1.0 + lam) / np.where(safe, denominator, 1.0), 0.0)
        return self._qs @ (self._core * factor) @ self._qx.T


@dataclass
class SAEModel:
    """A fitted SAE, scored in the visual space (Kodirov et al., CVPR 2017, "S -> V"): each
    class's prototype ``W^T s_c`` is decoded from its domain knowledge and an image scores
    its cosine similarity with every prototype.

    Attributes:
        projection: W, (A, D) float64.
        lam: the regulariser it was fitted with.
    """

    projection: np.ndarray
    lam: float

    def scores(self, features: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """(N, D) features and (C, A) class signatures -> (N, C) float64 cosine
        similarities in [-1, 1]."""
        prototypes = _np64(signatures, "signatures", 2) @ np.asarray(self.projection, np.float64)
        return _unit_rows(_np64(features, "features", 2)) @ _unit_rows(prototypes).T

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Tensors and JSON metadata for a safetensors file."""
        return {"W": torch.as_tensor(self.projection)}, {"lambda": self.lam}

    @classmethod
    def from_safetensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> SAEModel:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            KeyError: when ``W`` or ``lambda`` is missing.
        """
        return cls(tensors["W"].numpy(), float(metadata["lambda"]))


#: The settings of the closed-form baselines :func:`fit_baselines` fits.
CLOSED_FORM_SETTINGS = ("ridge_alpha", "eszsl_gamma", "eszsl_lambda", "sae_lambda")


@dataclass
class BaselineConfig:
    """Hyper-parameters of the baselines; ``None`` = chosen by the validation on the
    pseudo-unseen problem (:func:`~niwt_pipeline.core.validation.search_candidates`).

    Attributes:
        ridge_alpha: ridge penalty of ``weight_regression`` (>= 0).
        eszsl_gamma, eszsl_lambda: ESZSL's regularisers (> 0).
        sae_lambda: SAE's regulariser (> 0).
        ale_lr, ale_epochs, sje_lr, sje_epochs, devise_lr, devise_epochs: the SGD learning
            rate (> 0) and the number of epochs (>= 1) of each bilinear compatibility
            model (:mod:`~niwt_pipeline.core.compatibility`).
        fclswgan_n_synthetic: f-CLSWGAN's synthetic features per new class (>= 1,
            :mod:`~niwt_pipeline.core.generative`).
    """

    ridge_alpha: float | None = None
    eszsl_gamma: float | None = None
    eszsl_lambda: float | None = None
    sae_lambda: float | None = None
    ale_lr: float | None = None
    ale_epochs: int | None = None
    sje_lr: float | None = None
    sje_epochs: int | None = None
    devise_lr: float | None = None
    devise_epochs: int | None = None
    fclswgan_n_synthetic: int | None = None

    def missing(self, keys: Sequence[str] | None = None) -> list[str]:
        """The settings (of ``keys``; default: all) still to be chosen (``None``)."""
        return [k for k, v in asdict(self).items() if v is None and (keys is None or k in keys)]


def fit_baselines(
    features: np.ndarray,
    labels: np.ndarray,
    seen: ClassRows,
    dk: np.ndarray,
    new_ids: np.ndarray,
    config: BaselineConfig,
) -> tuple[ClassRows, ESZSLModel, SAEModel]:
    """The baselines for the classes ``new_ids`` on one trained network.

    Args:
        features: (N, D) penultimate features of the network's training images.
        labels: (N,) their class ids (each among ``seen.class_ids``).
        seen: the network's seen rows (S, D) and biases.
        dk: (C, A) domain knowledge of every class, row = class id.
        new_ids: (U,) the classes to make rows for.
        config: the baselines' hyper-parameters, every one set.

    Returns:
        ``weight_regression`` rows (U, D) float64 for ``new_ids``, the fitted ESZSL and
        the fitted SAE.

    Raises:
        ValueError: on shapes that do not agree, a regulariser <= 0, or a setting left
            ``None`` (choose it with the validation first).
        KeyError: when a label is not a seen class.
    """
    unset = config.missing(CLOSED_FORM_SETTINGS)
    if unset:
        raise ValueError(
            f"fit_baselines: {unset} not set; the validation chooses them (validation_choice.json)"
        )
    features = np.asarray(features, dtype=np.float64)
    seen_ids = seen.class_ids
    positions = seen_positions(seen_ids, labels)
    v = eszsl_fit(features, positions, dk[seen_ids], config.eszsl_gamma, config.eszsl_lambda)
    w_sae = SAEGrid(features, positions, dk[seen_ids]).projection(config.sae_lambda)
    return (
        weight_regression_rows(seen, dk, new_ids, config.ridge_alpha),
        ESZSLModel(np.asarray(v), float(config.eszsl_gamma), float(config.eszsl_lambda)),
        SAEModel(w_sae, float(config.sae_lambda)),
    )


def weight_regression_rows(
    seen: ClassRows, dk: np.ndarray, new_ids: np.ndarray, alpha: float
) -> ClassRows:
    """The ``weight_regression`` rows of the classes ``new_ids``: :func:`ridge_rows` fitted
    on the network's seen rows (S, D) and applied to ``dk[new_ids]``.

    Args:
        seen: the network's seen rows and biases.
        dk: (C, A) domain knowledge of every class, row = class id.
        new_ids: (U,) the classes to make rows for.
        alpha: the ridge penalty (>= 0).

    Returns:
        (U, D) float64 rows and (U,) biases, method ``weight_regression``.
    """
    weight, bias = ridge_rows(
        dk[seen.class_ids],
        seen.weight.astype(np.float64),
        seen.bias.astype(np.float64),
        dk[new_ids],
        alpha,
    )
    return ClassRows("weight_regression", np.asarray(new_ids), np.asarray(weight), np.asarray(bias))


def seen_positions(seen_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) class ids -> (N,) their positions in ``seen_ids`` (rows of ``dk[seen_ids]``).

    Raises:
        KeyError: when a label is not among ``seen_ids``.
    """
    position = {int(c): j for j, c in enumerate(seen_ids)}
    return np.array([position[int(c)] for c in labels], dtype=np.int64)
