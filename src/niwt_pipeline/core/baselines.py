"""Closed-form zero-shot baselines on the same trained network.

* :func:`ridge_rows` (the ``weight_regression`` method): ridge regression from a class's
  domain knowledge to its classifier row (and bias), fitted on the seen classes and
  applied to the unseen ones.
* ESZSL (Romera-Paredes & Torr, ICML 2015): a bilinear compatibility
  ``score(x, c) = x^T V s_c`` between penultimate features and domain knowledge, in
  closed form; :func:`eszsl_select` picks its two regularisers on held-out seen classes.

All computations are in float64 numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from niwt_pipeline.core.rows import ClassRows

logger = logging.getLogger(__name__)

DEFAULT_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _np64(x, name: str, ndim: int) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


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


@dataclass
class ESZSLSelection:
    """Result of :func:`eszsl_select`.

    Attributes:
        gamma, lam: the chosen regularisers.
        score: their mean held-out ZSL per-class accuracy (fraction).
        grid: ``{(gamma, lam): mean held-out accuracy}`` over the whole grid.
        heldout_classes: the pseudo-unseen classes of each split.
    """

    gamma: float
    lam: float
    score: float
    grid: dict[tuple[float, float], float] = field(default_factory=dict)
    heldout_classes: list[list[int]] = field(default_factory=list)


def eszsl_select(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    dk_seen: np.ndarray | torch.Tensor,
    *,
    gammas: Sequence[float] = DEFAULT_GRID,
    lams: Sequence[float] = DEFAULT_GRID,
    n_heldout_classes: int | float = 0.2,
    n_splits: int = 1,
    seed: int = 0,
    label_coding: str = "pm1",
) -> ESZSLSelection:
    """Pick ESZSL's ``gamma`` and ``lam`` on held-out seen classes (pseudo-unseen).

    For each split, ``n_heldout_classes`` of the seen classes (an int, or a fraction, at
    least 1) are drawn with ``seed``; ESZSL is fitted on the images of the others and
    scored by per-class mean top-1 on the held-out images, predicting among the held-out
    classes only (conventional ZSL).  The grid is evaluated exactly through
    eigendecompositions of ``X X^T`` and ``S S^T``.  Ties -> the first in grid order.
    Never pass test data.

    Args:
        features: (N, D) seen training features; labels: (N,) in 0..S-1; dk_seen: (S, A).

    Returns:
        The chosen ``(gamma, lam)``, their held-out score and the whole grid.

    Raises:
        ValueError: if an input has the wrong number of dimensions or holds NaN/inf,
            ``labels`` is not (N,) in 0..S-1, the hold-out count is not in
            ``1 .. (classes present) - 1``, or ``label_coding`` is not ``"pm1"`` or ``"01"``.
    """
    f = _np64(features, "features", 2)
    s_all = _np64(dk_seen, "dk_seen", 2)
    y_all = _check_labels(labels, f.shape[0], s_all.shape[0])
    present = np.unique(y_all)
    n_hold = n_heldout_classes
    count = (
        max(1, int(round(n_hold * present.size)))
        if isinstance(n_hold, float) and n_hold < 1
        else int(n_hold)
    )
    if not 1 <= count < present.size:
        raise ValueError(f"eszsl_select: cannot hold out {count} of {present.size} classes")
    rng = np.random.default_rng(seed)
    totals = np.zeros((len(gammas), len(lams)))
    held_sets: list[list[int]] = []
    for _ in range(n_splits):
        held = np.sort(rng.choice(present, size=count, replace=False))
        held_sets.append([int(c) for c in held])
        train_cls = np.setdiff1d(present, held)
        tr, va = ~np.isin(y_all, held), np.isin(y_all, held)
        remap = np.full(s_all.shape[0], -1)
        remap[train_cls] = np.arange(train_cls.size)
        x = f[tr].T  # (D, N)
        s = s_all[train_cls].T  # (A, Z)
        y = _label_matrix(remap[y_all[tr]], train_cls.size, label_coding)
        ex, qx = np.linalg.eigh(x @ x.T)
        es, qs = np.linalg.eigh(s @ s.T)
        core = qx.T @ (x @ y @ s.T) @ qs  # (D, A) in the eigenbases
        left = f[va] @ qx  # (Nv, D)
        right = qs.T @ s_all[held].T  # (A, Zv)
        y_va = y_all[va]
        for i, g in enumerate(gammas):
            for j, lam in enumerate(lams):
                scores = left @ (core / np.outer(ex + g, es + lam)) @ right
                pred = held[np.argmax(scores, axis=1)]
                accs = [np.mean(pred[y_va == c] == c) for c in held]
                totals[i, j] += float(np.mean(accs))
    totals /= n_splits
    i, j = np.unravel_index(int(np.argmax(totals)), totals.shape)
    grid = {
        (float(g), float(lam)): float(totals[a, b])
        for a, g in enumerate(gammas)
        for b, lam in enumerate(lams)
    }
    logger.info(
        "ESZSL selection: gamma %g, lam %g, held-out ZSL accuracy %.4f (%d split(s) of %d classes)",
        gammas[i],
        lams[j],
        totals[i, j],
        n_splits,
        count,
    )
    return ESZSLSelection(
        gamma=float(gammas[i]),
        lam=float(lams[j]),
        score=float(totals[i, j]),
        grid=grid,
        heldout_classes=held_sets,
    )


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


@dataclass
class BaselineConfig:
    """Hyper-parameters of the baselines.

    Attributes:
        ridge_alpha: ridge penalty of ``weight_regression``.
        eszsl_gamma, eszsl_lambda: ESZSL's regularisers; ``None`` chooses both with
            :func:`eszsl_select` on held-out seen classes.
        seed: seeds that choice.
    """

    ridge_alpha: float = 1.0
    eszsl_gamma: float | None = None
    eszsl_lambda: float | None = None
    seed: int = 0


def fit_baselines(
    features: np.ndarray,
    labels: np.ndarray,
    seen: ClassRows,
    dk: np.ndarray,
    new_ids: np.ndarray,
    config: BaselineConfig,
) -> tuple[ClassRows, ESZSLModel]:
    """Both baselines for the classes ``new_ids`` on one trained network.

    Args:
        features: (N, D) penultimate features of the network's training images.
        labels: (N,) their class ids (each among ``seen.class_ids``).
        seen: the network's seen rows (S, D) and biases.
        dk: (C, A) domain knowledge of every class, row = class id.
        new_ids: (U,) the classes to make rows for.
        config: the baselines' hyper-parameters.

    Returns:
        ``weight_regression`` rows (U, D) float64 for ``new_ids``, and the fitted ESZSL.

    Raises:
        ValueError: on shapes that do not agree or a regulariser <= 0.
        KeyError: when a label is not a seen class.
    """
    features = np.asarray(features, dtype=np.float64)
    seen_ids = seen.class_ids
    w_new, b_new = ridge_rows(
        dk[seen_ids],
        seen.weight.astype(np.float64),
        seen.bias.astype(np.float64),
        dk[new_ids],
        config.ridge_alpha,
    )
    position = {int(c): j for j, c in enumerate(seen_ids)}
    y = np.array([position[int(c)] for c in labels])
    gamma, lam = config.eszsl_gamma, config.eszsl_lambda
    if gamma is None or lam is None:
        chosen = eszsl_select(features, y, dk[seen_ids], seed=config.seed)
        gamma, lam = chosen.gamma, chosen.lam
    v = eszsl_fit(features, y, dk[seen_ids], gamma, lam)
    rows = ClassRows("weight_regression", np.asarray(new_ids), np.asarray(w_new), np.asarray(b_new))
    return rows, ESZSLModel(np.asarray(v), float(gamma), float(lam))
