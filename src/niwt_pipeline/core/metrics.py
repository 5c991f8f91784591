"""Generalised zero-shot scoring: per-class accuracy, S/U/H, calibrated stacking, AUSUC.

Conventions: S/U/H follow Xian et al., "Zero-Shot Learning - The Good, the Bad and the
Ugly" (CVPR 2017; extended in TPAMI 2018); calibrated stacking and AUSUC follow Chao et
al., "An Empirical Study and Analysis of Generalized Zero-Shot Learning for Object
Recognition in the Wild" (ECCV 2016):

* accuracies are **per-class mean top-1** accuracies, returned as fractions in [0, 1]
  (:func:`to_percent` converts);
* ``S`` is measured on the seen-class test images and ``U`` on the unseen-class test
  images, both predicting over **all** classes; ``H = 2SU / (S + U)``;
* calibrated stacking predicts ``argmax_c score_c - gamma * [c is seen]``; sweeping
  ``gamma`` traces the seen-unseen accuracy curve, whose area is AUSUC.

Every function takes numpy arrays or CPU tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def _np(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    return a


def to_percent(value):
    """Fractions -> percent: numbers, arrays, and (nested) dicts/lists of them."""
    if isinstance(value, Mapping):
        return {k: to_percent(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_percent(v) for v in value)
    if isinstance(value, np.ndarray):
        return value * 100.0
    if isinstance(value, bool):
        return value
    return float(value) * 100.0


def per_class_accuracy(
    pred: np.ndarray, labels: np.ndarray, classes: Sequence[int] | np.ndarray | None = None
) -> dict[int, float]:
    """Top-1 accuracy of each class.

    Args:
        pred: (N,) predicted class ids.
        labels: (N,) true class ids.
        classes: the classes to report; default the classes present in ``labels``.
            A listed class without images gets NaN.

    Returns:
        ``{class_id: fraction correct among its images}``.

    Raises:
        ValueError: if ``pred`` or ``labels`` is not 1-D, or their lengths differ.
    """
    p = _np(pred, "pred", 1)
    y = _np(labels, "labels", 1)
    if p.shape != y.shape:
        raise ValueError(f"pred {p.shape} and labels {y.shape} differ in length")
    present, position = np.unique(y, return_inverse=True)
    images = np.bincount(position, minlength=present.size)
    right = np.bincount(position, weights=(p == y), minlength=present.size)
    accuracy = dict(zip(present.tolist(), (right / np.maximum(images, 1)).tolist(), strict=True))
    cls = present if classes is None else np.asarray(classes).ravel()
    return {int(c): accuracy.get(int(c), float("nan")) for c in cls}


def mean_class_accuracy(
    pred: np.ndarray, labels: np.ndarray, classes: Sequence[int] | np.ndarray | None = None
) -> float:
    """Mean of :func:`per_class_accuracy` over classes with images (0 if there are none)."""
    accs = np.array(list(per_class_accuracy(pred, labels, classes).values()), dtype=float)
    accs = accs[~np.isnan(accs)]
    return float(accs.mean()) if accs.size else 0.0


def harmonic_mean(s: float, u: float) -> float:
    """``2SU / (S + U)``, 0 when both are 0."""
    return 0.0 if s + u <= 0 else 2.0 * s * u / (s + u)


def _check_gzsl(scores, labels, seen_mask, is_unseen_image):
    sc = _np(scores, "scores", 2).astype(np.float64)
    y = _np(labels, "labels", 1).astype(np.int64)
    seen = _np(seen_mask, "seen_mask", 1).astype(bool)
    n, c = sc.shape
    if y.shape[0] != n:
        raise ValueError(f"scores has {n} rows but labels has {y.shape[0]}")
    if seen.shape[0] != c:
        raise ValueError(f"scores has {c} columns but seen_mask has {seen.shape[0]}")
    if not seen.any() or seen.all():
        raise ValueError("seen_mask must mark at least one seen and one unseen class")
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must be class ids in 0..{c - 1}")
    unseen_img = (
        ~seen[y]
        if is_unseen_image is None
        else _np(is_unseen_image, "is_unseen_image", 1).astype(bool)
    )
    if unseen_img.shape[0] != n:
        raise ValueError(f"is_unseen_image has {unseen_img.shape[0]} entries, expected {n}")
    return sc, y, seen, unseen_img


def calibrated_predictions(
    scores: np.ndarray, seen_mask: np.ndarray, gamma: float = 0.0
) -> np.ndarray:
    """``argmax_c scores[:, c] - gamma * seen_mask[c]`` (ties -> lowest class id).

    ``gamma = +inf`` predicts among unseen classes only, ``-inf`` among seen classes only.
    Returns (N,) int64 class ids.
    """
    sc = _np(scores, "scores", 2).astype(np.float64)
    seen = _np(seen_mask, "seen_mask", 1).astype(bool)
    if np.isposinf(gamma) or np.isneginf(gamma):
        keep = ~seen if gamma > 0 else seen
        cols = np.flatnonzero(keep)
        return cols[np.argmax(sc[:, cols], axis=1)].astype(np.int64)
    return np.argmax(sc - gamma * seen[None, :], axis=1).astype(np.int64)


def gzsl_evaluate(
    scores: np.ndarray,
    labels: np.ndarray,
    seen_mask: np.ndarray,
    is_unseen_image: np.ndarray | None = None,
    gamma: float = 0.0,
) -> dict[str, float]:
    """GZSL S, U and H with calibrated stacking.

    Args:
        scores: (N, C) scores over **all** classes.
        labels: (N,) true class ids.
        seen_mask: (C,) True for seen classes.
        is_unseen_image: (N,) True for the test_unseen images; default ``~seen_mask[labels]``.
        gamma: calibration subtracted from the seen scores.

    Returns:
        ``{"S", "U", "H", "gamma"}`` as fractions; S is the per-class mean accuracy over
        the seen-split images, U over the unseen-split images (0 when a split is empty).
    """
    sc, y, seen, unseen_img = _check_gzsl(scores, labels, seen_mask, is_unseen_image)
    pred = calibrated_predictions(sc, seen, gamma)
    s = mean_class_accuracy(pred[~unseen_img], y[~unseen_img])
    u = mean_class_accuracy(pred[unseen_img], y[unseen_img])
    return {"S": s, "U": u, "H": harmonic_mean(s, u), "gamma": float(gamma)}


def zsl_top1(
    scores: np.ndarray, labels: np.ndarray, unseen_classes: Sequence[int] | np.ndarray
) -> float:
    """Conventional ZSL: per-class mean top-1 on the unseen-class images, among those classes only.

    Args:
        scores: (N, C) over all classes; labels: (N,); unseen_classes: the candidate class ids.

    Returns:
        The per-class mean top-1 accuracy, a fraction in [0, 1].

    Raises:
        ValueError: if ``scores`` is not 2-D, ``labels`` is not 1-D, or ``unseen_classes``
            is empty.
    """
    sc = _np(scores, "scores", 2)
    y = _np(labels, "labels", 1)
    cls = np.unique(np.asarray(unseen_classes).ravel()).astype(np.int64)
    if cls.size == 0:
        raise ValueError("zsl_top1: no unseen classes")
    keep = np.isin(y, cls)
    pred = cls[np.argmax(sc[keep][:, cls], axis=1)]
    return mean_class_accuracy(pred, y[keep])


def _curve_parts(sc, y, seen, unseen_img):
    """Per-image switch point and contributions for the exact calibration sweep.

    Image ``i`` is predicted as its best seen class while ``gamma < d_i`` and as its best
    unseen class when ``gamma > d_i`` (``d_i`` = best seen score - best unseen score).
    S (U) is a weighted sum of per-image correctness, weight ``1 / (n_classes * n_c)``.
    """
    seen_cols, unseen_cols = np.flatnonzero(seen), np.flatnonzero(~seen)
    best_seen = seen_cols[np.argmax(sc[:, seen_cols], axis=1)]
    best_unseen = unseen_cols[np.argmax(sc[:, unseen_cols], axis=1)]
    rows = np.arange(sc.shape[0])
    d = sc[rows, best_seen] - sc[rows, best_unseen]
    ok_seen = (best_seen == y).astype(np.float64)
    ok_unseen = (best_unseen == y).astype(np.float64)

    def weights(mask: np.ndarray) -> np.ndarray:
        w = np.zeros(sc.shape[0])
        classes, counts = np.unique(y[mask], return_counts=True)
        for c, k in zip(classes, counts, strict=True):
            w[mask & (y == c)] = 1.0 / (k * classes.size)
        return w

    return d, ok_seen, ok_unseen, weights(~unseen_img), weights(unseen_img)


def seen_unseen_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    seen_mask: np.ndarray,
    is_unseen_image: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact seen-unseen accuracy curve of calibrated stacking.

    Every distinct breakpoint ``d_i`` (best seen minus best unseen score of an image) changes
    a prediction; the curve is evaluated at ``-inf`` (every image predicted seen: U = 0), at
    the midpoint between consecutive breakpoints, and at ``+inf`` (every image predicted
    unseen: S = 0).  Exact in O(N log N).

    Returns:
        ``(gammas, S, U)``, each (M + 1,) for M distinct breakpoints; ``gammas`` increases
        from ``-inf`` to ``+inf``; S is non-increasing and U non-decreasing along it.
    """
    sc, y, seen, unseen_img = _check_gzsl(scores, labels, seen_mask, is_unseen_image)
    d, ok_s, ok_u, w_s, w_u = _curve_parts(sc, y, seen, unseen_img)
    finite = np.isfinite(d)
    breaks = np.unique(d[finite])
    # value at gamma = -inf: every image takes its best seen class
    s0, u0 = float(w_s @ ok_s), float(w_u @ ok_s)
    # crossing breakpoint t switches every image with d_i == t from seen to unseen prediction
    pos = np.searchsorted(breaks, d[finite])
    delta_s = np.bincount(pos, weights=(w_s * (ok_u - ok_s))[finite], minlength=breaks.size)
    delta_u = np.bincount(pos, weights=(w_u * (ok_u - ok_s))[finite], minlength=breaks.size)
    s_curve = np.concatenate([[s0], s0 + np.cumsum(delta_s)])
    u_curve = np.concatenate([[u0], u0 + np.cumsum(delta_u)])
    if breaks.size:
        gammas = np.concatenate([[-np.inf], (breaks[:-1] + breaks[1:]) / 2.0, [np.inf]])
    else:  # no image at all: a single point
        gammas = np.array([-np.inf])
    # clean float drift of the running sums
    s_curve = np.clip(np.round(s_curve, 12), 0.0, 1.0)
    u_curve = np.clip(np.round(u_curve, 12), 0.0, 1.0)
    return gammas, s_curve, u_curve


def ausuc(s: np.ndarray, u: np.ndarray) -> float:
    """Area under the seen-unseen curve (x = U, y = S), trapezoids, in fraction^2 units.

    Points are sorted by U (ties: higher S first).  The curve is closed with its
    endpoints: extended horizontally to U = 0 at the S of its leftmost point, and
    vertically down to S = 0 at its rightmost point (which adds no area).
    AUSUC as defined by Chao et al., ECCV 2016.

    Raises:
        ValueError: if ``s`` and ``u`` are empty or differ in length.
    """
    s_arr = np.asarray(s, dtype=np.float64).ravel()
    u_arr = np.asarray(u, dtype=np.float64).ravel()
    if s_arr.shape != u_arr.shape or s_arr.size == 0:
        raise ValueError(
            f"ausuc: S and U must be non-empty and the same length, "
            f"got {s_arr.size} and {u_arr.size}"
        )
    order = np.lexsort((-s_arr, u_arr))
    s_arr, u_arr = s_arr[order], u_arr[order]
    if u_arr[0] > 0:
        u_arr = np.concatenate([[0.0], u_arr])
        s_arr = np.concatenate([[s_arr[0]], s_arr])
    if s_arr[-1] > 0:
        u_arr = np.concatenate([u_arr, [u_arr[-1]]])
        s_arr = np.concatenate([s_arr, [0.0]])
    return float(np.sum((u_arr[1:] - u_arr[:-1]) * (s_arr[1:] + s_arr[:-1]) / 2.0))


def _split_mean_accuracy(
    d: np.ndarray,
    ok_seen: np.ndarray,
    ok_unseen: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    gammas: np.ndarray,
) -> np.ndarray:
    """Per-class mean accuracy of the images in ``mask`` at each of ``gammas`` (ascending,
    none equal to a breakpoint ``d_i``), as :func:`mean_class_accuracy` computes it.

    Image ``i`` counts ``ok_seen`` while ``gamma < d_i`` and ``ok_unseen`` above; the correct
    counts per class are integer running sums over the sorted gammas, so each accuracy is the
    same division as in :func:`per_class_accuracy`. Returns (M,) fractions (0 without images).
    """
    m = gammas.size
    y = labels[mask]
    if y.size == 0:
        return np.zeros(m)
    classes, position, images = np.unique(y, return_inverse=True, return_counts=True)
    ok_s = ok_seen[mask].astype(np.int64)
    ok_u = ok_unseen[mask].astype(np.int64)
    switch = np.searchsorted(gammas, d[mask], side="left")  # first gamma above d_i
    counts = np.zeros((m + 1, classes.size), dtype=np.int64)
    np.add.at(counts, (np.zeros_like(position), position), ok_s)
    np.add.at(counts, (switch, position), ok_u - ok_s)
    right = np.cumsum(counts, axis=0)[:m]
    return (right / images).mean(axis=1)


def choose_gamma(
    scores_val: np.ndarray,
    labels_val: np.ndarray,
    seen_mask_val: np.ndarray,
    is_unseen_val: np.ndarray | None = None,
) -> float:
    """The calibration ``gamma`` maximising H on a validation set (ties -> smallest ``|gamma|``).

    Candidates: 0 and the midpoints between consecutive breakpoints (each stands for the
    open interval of gammas giving the same predictions), plus one value beyond each end
    (the mean gap between breakpoints past the extreme ones, or 1 when there is only one).
    H of every candidate is computed at once from the per-image breakpoints (as
    :func:`seen_unseen_curve`, in integer counts per class: the same S, U and H as
    :func:`gzsl_evaluate` at each candidate), O(N log N + M C). Scores with NaN are swept
    one candidate at a time with :func:`gzsl_evaluate`.
    Use held-out **seen** classes as pseudo-unseen, never test data.

    Args:
        scores_val: (N, C) scores over all classes; labels_val: (N,) class ids;
        seen_mask_val: (C,) True for seen classes; is_unseen_val: (N,) True for the
            unseen-split images (default ``~seen_mask_val[labels_val]``).

    Returns:
        gamma, in score units (calibrated stacking, Chao et al., ECCV 2016).

    Raises:
        ValueError: on shapes that do not agree or a seen mask without seen or unseen classes.
    """
    sc, y, seen, unseen_img = _check_gzsl(scores_val, labels_val, seen_mask_val, is_unseen_val)
    d, ok_s, ok_u, _, _ = _curve_parts(sc, y, seen, unseen_img)
    breaks = np.unique(d[np.isfinite(d)])
    if breaks.size == 0:
        return 0.0
    gap = float(np.mean(np.diff(breaks))) if breaks.size > 1 else 1.0
    gap = gap if gap > 0 else 1.0
    cands = np.concatenate(
        [[0.0, breaks[0] - gap], (breaks[:-1] + breaks[1:]) / 2.0, [breaks[-1] + gap]]
    )
    cands = cands[~np.isin(cands, breaks)]  # a breakpoint itself is a tie; never pick one
    cands = np.unique(cands)  # ascending
    if np.isnan(sc).any():
        h = np.array([gzsl_evaluate(sc, y, seen, unseen_img, gamma=float(g))["H"] for g in cands])
    else:
        s = _split_mean_accuracy(d, ok_s, ok_u, y, ~unseen_img, cands)
        u = _split_mean_accuracy(d, ok_s, ok_u, y, unseen_img, cands)
        total = s + u
        h = np.where(total > 0, 2.0 * s * u / np.where(total > 0, total, 1.0), 0.0)
    best_h, best_g = -1.0, 0.0
    for i in np.argsort(np.abs(cands), kind="stable"):
        if h[i] > best_h + 1e-12:
            best_h, best_g = float(h[i]), float(cands[i])
    logger.info(
        "choose_gamma: gamma %.6g gives validation H %.4f (%d candidates)",
        best_g,
        best_h,
        cands.size,
    )
    return best_g


def gzsl_report(
    scores: np.ndarray,
    labels: np.ndarray,
    seen_mask: np.ndarray,
    is_unseen_image: np.ndarray | None = None,
    gamma: float = 0.0,
    *,
    with_curve: bool = False,
) -> dict:
    """Everything at once: S, U, H uncalibrated (gamma 0) and calibrated (at ``gamma``),
    ZSL top-1 and AUSUC (fractions in [0, 1]).

    Keys: ``S``, ``U``, ``H`` (uncalibrated), ``S_calibrated``, ``U_calibrated``,
    ``H_calibrated`` (at ``gamma``), ``gamma``, ``zsl_top1``, ``ausuc``.  With
    ``with_curve``, also ``"curve": {"S": [...], "U": [...]}``, the seen-unseen curve the
    AUSUC was computed from (Chao et al., ECCV 2016).

    Raises:
        ValueError: on shapes that do not agree or a seen mask without seen or unseen classes.
    """
    sc, y, seen, unseen_img = _check_gzsl(scores, labels, seen_mask, is_unseen_image)
    at_gamma = gzsl_evaluate(sc, y, seen, unseen_img, gamma)
    at_zero = gzsl_evaluate(sc, y, seen, unseen_img, 0.0)
    _, s_curve, u_curve = seen_unseen_curve(sc, y, seen, unseen_img)
    report = {
        "S": at_zero["S"],
        "U": at_zero["U"],
        "H": at_zero["H"],
        "S_calibrated": at_gamma["S"],
        "U_calibrated": at_gamma["U"],
        "H_calibrated": at_gamma["H"],
        "gamma": float(gamma),
        "zsl_top1": zsl_top1(sc, y, np.flatnonzero(~seen)),
        "ausuc": ausuc(s_curve, u_curve),
    }
    if with_curve:
        report["curve"] = {"S": np.asarray(s_curve).tolist(), "U": np.asarray(u_curve).tolist()}
    return report


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    p = _np(pred, "pred", 1).astype(np.int64)
    y = _np(labels, "labels", 1).astype(np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm
