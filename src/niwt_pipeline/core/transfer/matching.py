"""Logit matching: new rows put on the seen rows' logit scale (an option of this project).

NIWT's weight transfer (Selvaraju et al., ECCV 2018, sec. 3.3) fixes the *direction* of
each new row's importance, not the scale or offset of its logits: the cosine loss leaves
the norm free, and the bias never moves.  In generalised zero-shot learning (GZSL) the new
rows compete with the trained seen rows, so the scale and offset decide how often a new
class wins, class by class, and how well one calibrated-stacking gamma (Chao et al.,
ECCV 2016), chosen on one network, carries over to another.

``seen_negatives`` matching gives each new row ``u`` the scale and offset a seen row has
on images that are not of its class.  Over the seen training images ``x`` (none of them
of a new class):

    m = mean_j mean_{x not of j} (w_j . x + b_j),    s = mean_j std_{x not of j} (w_j . x + b_j)
    k_u = s / std_x (w_u . x),    w_u' = k_u w_u,    b_u' = m - k_u mean_x (w_u . x)

so the new row's logits over those images have mean ``m`` and standard deviation ``s``
exactly; the direction of ``w_u``, hence its importance up to scale, is unchanged.
"""

from __future__ import annotations

import numpy as np

from niwt_pipeline.core.rows import ClassRows

#: The values of :attr:`~niwt_pipeline.core.transfer.variants.NIWTVariant.logit_matching`.
LOGIT_MATCHING = ("none", "seen_negatives")

#: A new row whose logit varies less than this over the images keeps its scale (k = 1).
_FLAT = 1e-12


def seen_negative_logits(
    seen: ClassRows, features: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """The mean and standard deviation a seen row's logit has on images of other classes.

    Args:
        seen: the S trained seen rows (S, D) and biases (S,).
        features: (N, D) penultimate features of seen training images.
        labels: (N,) their class ids; images of a class without a row in ``seen`` are
            ignored.

    Returns:
        ``(m, s)``: the mean over the seen rows of each row's mean logit, and of its
        (population) standard deviation, over the images not of its class; score units.

    Raises:
        ValueError: when ``features`` is not (N, D) with D = ``seen.dim`` and finite,
            ``labels`` is not (N,), or a seen row has no image of another class.
    """
    return _negative_logits(seen, *_seen_images(seen, features, labels))


def _seen_images(
    seen: ClassRows, features: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 features and labels of the images of ``seen``'s classes, checked."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or x.shape[1] != seen.dim or len(y) != len(x):
        raise ValueError(
            f"logit matching: features {x.shape} and labels {y.shape} must be (N, {seen.dim}) "
            "and (N,)"
        )
    if not np.isfinite(x).all():
        raise ValueError("logit matching: features contain NaN or infinite values")
    keep = np.isin(y, seen.class_ids)
    return x[keep], y[keep]


def _negative_logits(seen: ClassRows, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """:func:`seen_negative_logits` on images already checked by :func:`_seen_images`."""
    logits = x @ seen.weight.astype(np.float64).T + seen.bias.astype(np.float64)
    means, stds = [], []
    for j, class_id in enumerate(seen.class_ids):
        others = logits[y != class_id, j]
        if others.size == 0:
            raise ValueError(
                f"logit matching: seen class {int(class_id)} has no image of another seen class"
            )
        means.append(others.mean())
        stds.append(others.std())
    return float(np.mean(means)), float(np.mean(stds))


def match_seen_logits(
    rows: ClassRows, seen: ClassRows, features: np.ndarray, labels: np.ndarray
) -> ClassRows:
    """``rows`` scaled and shifted so that, over the seen training images, each row's logit
    has the mean and standard deviation of a seen row's logit on images of other classes
    (``seen_negatives`` logit matching; the module docstring has the equations).

    Args:
        rows: U new rows (U, D) and biases (U,) (their biases are replaced).
        seen: the S trained seen rows of the same network.
        features: (N, D) penultimate features of its seen training images.
        labels: (N,) their class ids.

    Returns:
        The matched rows, in ``rows``' dtype, same method and class ids.  A row whose logit is the
        same on every image keeps its scale and only gets the offset.

    Raises:
        ValueError: as :func:`seen_negative_logits`, or when ``rows`` and ``seen`` differ
            in width.
    """
    if rows.dim != seen.dim:
        raise ValueError(f"logit matching: rows have width {rows.dim}, seen rows {seen.dim}")
    x, y = _seen_images(seen, features, labels)
    m, s = _negative_logits(seen, x, y)
    weight = rows.weight.astype(np.float64)
    raw = x @ weight.T  # (N, U), without the bias
    spread = raw.std(0)
    scale = np.where(spread > _FLAT, s / np.maximum(spread, _FLAT), 1.0)
    dtype = rows.weight.dtype
    return ClassRows(
        rows.method,
        rows.class_ids,
        (weight * scale[:, None]).astype(dtype),
        (m - scale * raw.mean(0)).astype(dtype),
    )
