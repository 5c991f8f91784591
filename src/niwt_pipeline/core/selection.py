"""Choosing hyper-parameters on a validation problem, and fusing two methods' scores.

The validation problem holds held-out images of the seen classes the validation backbone
was trained on, and images of pseudo-unseen classes it never saw; every candidate is scored
on it with its own calibration gamma (the one maximising H there), so the choice and the
gamma come from the same data and never from test images.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from niwt_pipeline.core.gzsl import GZSLProblem, calibrate, evaluate_scores
from niwt_pipeline.core.transfer import TransferConfig

CRITERIA = ("H", "ausuc", "mean")


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, keys in the grid's order.

    ``{"lr": [0.1, 0.3], "lam": [0]}`` -> ``[{"lr": 0.1, "lam": 0}, {"lr": 0.3, "lam": 0}]``.
    An empty grid gives one empty candidate.
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
    """S, U, H at the gamma maximising H on this problem, that gamma, AUSUC and ZSL top-1.

    Fractions in [0, 1], with the uncalibrated H as ``H_uncalibrated``.
    """
    gamma = calibrate(scores, problem)
    result = evaluate_scores(scores, problem, gamma)
    return {
        "S": float(result["S_calibrated"]),
        "U": float(result["U_calibrated"]),
        "H": float(result["H_calibrated"]),
        "gamma": float(gamma),
        "ausuc": float(result["ausuc"]),
        "zsl_top1": float(result["zsl_top1"]),
        "H_uncalibrated": float(result["H"]),
    }


def criterion_value(metrics: Mapping[str, float], criterion: str) -> float:
    """The number a candidate is ranked by: ``H``, ``ausuc`` or their ``mean``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if criterion == "mean":
        return 0.5 * (metrics["H"] + metrics["ausuc"])
    return float(metrics[criterion])


def best_index(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first (the earlier grid entry)."""
    if len(values) == 0:
        raise ValueError("best_index: no candidates")
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).all():
        raise ValueError("best_index: every candidate scored NaN")
    return int(np.nanargmax(array))


# --- NIWT variants ----------------------------------------------------------------------
ROW_SOURCES = ("mean_seen", "ridge")
_GRADIENT_ONLY = ("lr", "lam", "init", "optimizer", "max_steps", "patience", "batch_size")


@dataclass
class NIWTVariant:
    """One NIWT variant: the transfer hyper-parameters and the choices around them.

    Attributes:
        config: the :class:`TransferConfig` of the rows.
        ridge_init: start the gradient solver from the ridge-regression rows.
        anchor: what ``lam`` (gradient) or ``ls_alpha`` (least squares) pulls the rows
            toward: ``"mean_seen"`` (the reference) or ``"ridge"`` (the ridge-regression
            rows of the same classes).
        fusion: weight of the ESZSL scores added to the NIWT scores (per-image standardised,
            :func:`fuse_scores`); 0 = NIWT alone.
    """

    config: TransferConfig
    ridge_init: bool = False
    anchor: str = "mean_seen"
    fusion: float = 0.0


def make_variant(base: TransferConfig, overrides: Mapping[str, Any]) -> NIWTVariant:
    """``base`` with ``overrides``: any :class:`TransferConfig` field, ``init`` may also be
    ``"ridge"``, plus ``anchor`` and ``fusion``.  Bad keys or values raise ``ValueError``."""
    values = dict(overrides)
    anchor = values.pop("anchor", "mean_seen")
    fusion = float(values.pop("fusion", 0.0))
    if anchor not in ROW_SOURCES:
        raise ValueError(f"NIWT variant anchor: expected one of {ROW_SOURCES}, got {anchor!r}")
    if fusion < 0:
        raise ValueError(f"NIWT variant fusion: expected >= 0, got {fusion}")
    ridge_init = values.get("init") == "ridge"
    if ridge_init:
        values["init"] = "mean_seen"  # replaced by the ridge rows
    known = {f.name for f in fields(TransferConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"NIWT variant: unknown key(s) {unknown}; expected TransferConfig fields, "
            "'anchor' or 'fusion'"
        )
    config = replace(base, **values)
    return NIWTVariant(config=config, ridge_init=ridge_init, anchor=anchor, fusion=fusion)


def effective_overrides(overrides: Mapping[str, Any], base: TransferConfig) -> dict[str, Any]:
    """The overrides that change the rows: the least-squares solver ignores the gradient
    solver's keys, the gradient solver ignores ``ls_alpha``, and the anchor only matters
    with a positive ``lam`` (gradient) or ``ls_alpha`` (least squares), and values equal to
    ``base``'s are dropped.  Two candidates with equal effective overrides give the same
    rows (used to skip duplicates in a grid)."""
    values = {
        key: value
        for key, value in overrides.items()
        if not (key == "anchor" and value == "mean_seen")
        and not (hasattr(base, key) and getattr(base, key) == value)
    }
    solver = values.get("solver", base.solver)
    if solver == "least_squares":
        for key in _GRADIENT_ONLY:
            values.pop(key, None)
        strength = values.get("ls_alpha", base.ls_alpha)
    else:
        values.pop("ls_alpha", None)
        strength = values.get("lam", base.lam)
    if strength == 0:
        values.pop("anchor", None)
    return values
