"""Assembling GZSL score matrices from classifier rows, and scoring them.

Every method ends as a score matrix over all classes (columns = canonical class ids), so
one evaluation serves NIWT, the baselines and any later variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from niwt_pipeline.core.metrics import choose_gamma, gzsl_report


def row_scores(
    features: np.ndarray,
    rows: dict[int, tuple[np.ndarray, float]],
    class_ids: np.ndarray,
) -> np.ndarray:
    """Linear scores ``z @ w_c + b_c`` of every image for the given classes.

    Args:
        features: (N, D) penultimate features.
        rows: class id -> (row (D,), bias).
        class_ids: (C,) the classes to score, in column order; each must be in ``rows``.

    Returns:
        (N, C) float64 scores.
    """
    weight = np.stack([rows[int(c)][0] for c in class_ids]).astype(np.float64)
    bias = np.array([rows[int(c)][1] for c in class_ids], dtype=np.float64)
    return features.astype(np.float64) @ weight.T + bias


def rows_by_class(weight: np.ndarray, bias: np.ndarray, class_ids: np.ndarray) -> dict:
    """``class id -> (row, bias)`` from stacked rows (R, D), biases (R,) and ids (R,)."""
    return {int(c): (weight[i], float(bias[i])) for i, c in enumerate(class_ids)}


@dataclass
class GZSLProblem:
    """Images to score and which of the scored classes count as unseen.

    Attributes:
        labels: (N,) column index (not class id) of each image's true class.
        unseen_columns: (C,) bool, the columns that are unseen classes.
    """

    labels: np.ndarray
    unseen_columns: np.ndarray

    @property
    def image_is_unseen(self) -> np.ndarray:
        """(N,) bool: the image belongs to an unseen class."""
        return self.unseen_columns[self.labels]


def problem_for(image_class_ids: np.ndarray, class_ids: np.ndarray, unseen_ids) -> GZSLProblem:
    """A :class:`GZSLProblem` with columns ``class_ids`` and ``unseen_ids`` among them."""
    column = {int(c): j for j, c in enumerate(class_ids)}
    labels = np.array([column[int(c)] for c in image_class_ids], dtype=np.int64)
    unseen = np.isin(class_ids, np.asarray(list(unseen_ids), dtype=np.int64))
    return GZSLProblem(labels=labels, unseen_columns=unseen)


def evaluate_scores(scores: np.ndarray, problem: GZSLProblem, gamma: float) -> dict:
    """S, U, H uncalibrated; ZSL top-1; AUSUC and its curve; S, U, H at the given ``gamma``.

    Accuracies are fractions in [0, 1]; ``gamma`` was chosen elsewhere, without test data.
    """
    report = gzsl_report(
        scores,
        problem.labels,
        ~problem.unseen_columns,
        problem.image_is_unseen,
        gamma=gamma,
        with_curve=True,
    )
    return {
        "S": report["S_uncalibrated"],
        "U": report["U_uncalibrated"],
        "H": report["H_uncalibrated"],
        "zsl_top1": report["zsl_top1"],
        "ausuc": report["ausuc"],
        "S_calibrated": report["S"],
        "U_calibrated": report["U"],
        "H_calibrated": report["H"],
        "gamma": report["gamma"],
        "curve": report["curve"],
    }


def calibrate(scores: np.ndarray, problem: GZSLProblem) -> float:
    """The calibration ``gamma`` maximising H on a validation problem (pseudo-unseen classes)."""
    return float(
        choose_gamma(scores, problem.labels, ~problem.unseen_columns, problem.image_is_unseen)
    )
