"""Choosing hyper-parameters on a validation problem, and fusing two methods' scores.

The validation problem holds held-out images of the seen classes the validation backbone
was trained on, and images of pseudo-unseen classes it never saw; every candidate is scored
on it with its own calibration gamma (the one maximising H there), so the choice and the
gamma come from the same data and never from test images.  H is the harmonic mean of S and
U (Xian et al., "Zero-Shot Learning - The Good, the Bad and the Ugly", TPAMI 2018);
calibrated stacking and AUSUC are those of Chao et al. (ECCV 2016).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from niwt_pipeline.core.gzsl import GZSLProblem, calibrate, evaluate_scores

CRITERIA = ("H_calibrated", "ausuc", "mean")


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, keys in the grid's order.

    ``{"lr": [0.1, 0.3], "lam": [0]}`` -> ``[{"lr": 0.1, "lam": 0}, {"lr": 0.3, "lam": 0}]``.
    An empty grid gives one empty candidate.

    Raises:
        ValueError: if a key of ``grid`` has no values.
    """
    for key, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"grid[{key!r}]: expected at least one value, got none")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def standardise_rows(scores: np.ndarray) -> np.ndarray:
    """Each image's scores shifted to mean 0 and scaled to std 1 over the classes: (N, C)."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def fuse_scores(primary: np.ndarray, secondary: np.ndarray, weight: float) -> np.ndarray:
    """``z(primary) + weight * z(secondary)`` with per-image standardised scores.

    ``weight == 0`` returns ``primary`` unchanged (not standardised), so a zero weight is
    exactly the primary method.

    Args:
        primary, secondary: (N, C) scores of the two methods over the same classes.
        weight: >= 0 weight of the secondary method.

    Returns:
        (N, C) float64 fused scores.

    Raises:
        ValueError: if ``weight`` < 0, or (for ``weight > 0``) the two shapes differ.
    """
    if weight < 0:
        raise ValueError(f"fusion weight: expected >= 0, got {weight}")
    primary = np.asarray(primary, dtype=np.float64)
    if weight == 0:
        return primary
    if np.shape(secondary) != primary.shape:
        raise ValueError(f"fuse_scores: shapes differ, {primary.shape} and {np.shape(secondary)}")
    return standardise_rows(primary) + weight * standardise_rows(secondary)


def validation_metrics(scores: np.ndarray, problem: GZSLProblem) -> dict[str, float]:
    """The scores of one candidate on a validation problem, at its own best gamma.

    Returns:
        ``S_calibrated``, ``U_calibrated``, ``H_calibrated`` at the gamma maximising H on
        this problem, that ``gamma``, ``ausuc``, ``zsl_top1`` and the uncalibrated ``H``;
        fractions in [0, 1] (``gamma`` in score units).
    """
    gamma = calibrate(scores, problem)
    result = evaluate_scores(scores, problem, gamma)
    return {
        "S_calibrated": float(result["S_calibrated"]),
        "U_calibrated": float(result["U_calibrated"]),
        "H_calibrated": float(result["H_calibrated"]),
        "gamma": float(gamma),
        "ausuc": float(result["ausuc"]),
        "zsl_top1": float(result["zsl_top1"]),
        "H": float(result["H"]),
    }


def criterion_value(metrics: Mapping[str, float], criterion: str) -> float:
    """The number a candidate is ranked by: ``H_calibrated``, ``ausuc`` or their ``mean``.

    Raises:
        ValueError: on an unknown criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if criterion == "mean":
        return 0.5 * (metrics["H_calibrated"] + metrics["ausuc"])
    return float(metrics[criterion])


def best_index(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first (the earlier grid entry).

    NaN values are skipped.

    Raises:
        ValueError: if ``values`` is empty or every value is NaN.
    """
    if len(values) == 0:
        raise ValueError("best_index: no candidates")
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).all():
        raise ValueError("best_index: every candidate scored NaN")
    return int(np.nanargmax(array))
