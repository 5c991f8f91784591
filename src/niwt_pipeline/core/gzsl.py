"""The GZSL evaluation of every method, computed once.

Every method ends as a score matrix over all classes (columns = canonical class ids). One
:func:`evaluate_methods` call turns the score matrices and each method's calibration gamma
(chosen on the validation problem, never on test data) into a :class:`GZSLEvaluation`:
per method the scores, the calibrated predictions, the seen-unseen curve, the per-class
accuracy and the metrics.  The metrics file, MLflow, the report and the explanations all
read that one object.

Names (Xian et al., CVPR 2017; Chao et al., ECCV 2016): ``S``, ``U``, ``H`` are the
uncalibrated per-class mean accuracies on the seen and unseen test images and their
harmonic mean (gamma = 0); ``S_calibrated``, ``U_calibrated``, ``H_calibrated`` the same
with calibrated stacking at the method's ``gamma``; ``zsl_top1`` the per-class mean
accuracy of unseen images among unseen classes; ``ausuc`` the area under the seen-unseen
accuracy curve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.metrics import (
    calibrated_predictions,
    choose_gamma,
    gzsl_report,
    per_class_accuracy,
)

#: The metric keys of one method, fractions in [0, 1] except ``gamma`` (score units).
METRIC_KEYS = (
    "S",
    "U",
    "H",
    "zsl_top1",
    "ausuc",
    "S_calibrated",
    "U_calibrated",
    "H_calibrated",
    "gamma",
)


def _tensor(values: np.ndarray) -> torch.Tensor:
    """A tensor holding a copy (the array may be a read-only view, e.g. from pandas)."""
    return torch.from_numpy(np.array(values))


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
    """A :class:`GZSLProblem` with columns ``class_ids`` and ``unseen_ids`` among them.

    Raises:
        KeyError: when an image's class is not among ``class_ids``.
    """
    column = {int(c): j for j, c in enumerate(class_ids)}
    labels = np.array([column[int(c)] for c in image_class_ids], dtype=np.int64)
    unseen = np.isin(class_ids, np.asarray(list(unseen_ids), dtype=np.int64))
    return GZSLProblem(labels=labels, unseen_columns=unseen)


def evaluate_scores(scores: np.ndarray, problem: GZSLProblem, gamma: float) -> dict:
    """Every key of :data:`METRIC_KEYS` (fractions) plus ``"curve"`` (``{"S": [...], "U":
    [...]}``, the seen-unseen curve of the AUSUC), for scores (N, C) at ``gamma``.

    Raises:
        ValueError: on shapes that do not agree with the problem.
    """
    return gzsl_report(
        scores,
        problem.labels,
        ~problem.unseen_columns,
        problem.image_is_unseen,
        gamma=gamma,
        with_curve=True,
    )


def calibrate(scores: np.ndarray, problem: GZSLProblem) -> float:
    """The calibration ``gamma`` maximising H on a validation problem (pseudo-unseen
    classes), ties to the smallest ``|gamma|`` (calibrated stacking, Chao et al. 2016)."""
    return float(
        choose_gamma(scores, problem.labels, ~problem.unseen_columns, problem.image_is_unseen)
    )


@dataclass
class GZSLResult:
    """One method's GZSL evaluation on the test images.

    Attributes:
        method: the method's name.
        scores: (N, C) float32 scores over all classes (columns = ``class_ids``).
        gamma: the calibration chosen on the validation problem (score units).
        predicted: (N,) int64 predicted class ids with calibrated stacking at ``gamma``.
        curve_s, curve_u: (P,) float64, the seen-unseen curve (fractions).
        per_class_accuracy: (C,) float64 top-1 accuracy of each class's images at ``gamma``
            (fraction; NaN for a class without test images).
        metrics: :data:`METRIC_KEYS` -> value (fractions; ``gamma`` in score units).
    """

    method: str
    scores: np.ndarray
    gamma: float
    predicted: np.ndarray
    curve_s: np.ndarray
    curve_u: np.ndarray
    per_class_accuracy: np.ndarray
    metrics: dict[str, float]

    def percent(self) -> dict[str, float]:
        """The metrics with accuracies in percent (``gamma`` unchanged)."""
        return {k: (v if k == "gamma" else 100.0 * v) for k, v in self.metrics.items()}


@dataclass
class GZSLEvaluation:
    """The GZSL evaluation of every method on the same test images.

    Attributes:
        image_ids: (N,) int64 canonical image ids, the rows of every score matrix.
        labels: (N,) int64 the true class id of each image.
        class_ids: (C,) int64 the columns of every score matrix.
        seen: (C,) bool, True for the seen classes.
        results: method -> :class:`GZSLResult`, in the order the methods were given.
    """

    image_ids: np.ndarray
    labels: np.ndarray
    class_ids: np.ndarray
    seen: np.ndarray
    results: dict[str, GZSLResult]

    @property
    def methods(self) -> list[str]:
        """The methods, in order."""
        return list(self.results)

    @property
    def problem(self) -> GZSLProblem:
        """The test problem as a :class:`GZSLProblem`."""
        return problem_for(self.labels, self.class_ids, self.class_ids[~self.seen])

    @property
    def label_columns(self) -> np.ndarray:
        """(N,) the column of each image's true class."""
        return self.problem.labels

    def class_coverage(self, names: list[str]) -> dict[str, object]:
        """Which classes the accuracies cover: every class is scored, but S and U average
        only over the classes with test images (a class defined by its description alone
        has none).

        Args:
            names: (C,) the class names, in column order.

        Returns:
            ``{"n_classes", "n_evaluated", "n_seen_evaluated", "n_unseen_evaluated",
            "not_evaluated"}`` (``not_evaluated``: names of the classes without test images).
        """
        evaluated = np.isin(self.class_ids, self.labels)
        return {
            "n_classes": int(len(self.class_ids)),
            "n_evaluated": int(evaluated.sum()),
            "n_seen_evaluated": int((evaluated & self.seen).sum()),
            "n_unseen_evaluated": int((evaluated & ~self.seen).sum()),
            "not_evaluated": [n for n, e in zip(names, evaluated, strict=True) if not e],
        }

    def columns_of(self, class_ids: np.ndarray) -> np.ndarray:
        """The columns of the given class ids."""
        column = {int(c): j for j, c in enumerate(self.class_ids)}
        return np.array([column[int(c)] for c in np.asarray(class_ids)], dtype=np.int64)

    def metrics_percent(self) -> dict[str, dict[str, float]]:
        """method -> its metrics in percent (``gamma`` in score units)."""
        return {m: r.percent() for m, r in self.results.items()}

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (``image_id``, ``label``, ``class_id``, ``seen``, then per method
        ``<method>.scores/.predicted/.curve_s/.curve_u/.per_class_accuracy``) and JSON
        metadata (the methods in order with their gamma and metrics)."""
        tensors = {
            "image_id": _tensor(self.image_ids),
            "label": _tensor(self.labels),
            "class_id": _tensor(self.class_ids),
            "seen": _tensor(self.seen),
        }
        for method, result in self.results.items():
            tensors[f"{method}.scores"] = _tensor(result.scores)
            tensors[f"{method}.predicted"] = _tensor(result.predicted)
            tensors[f"{method}.curve_s"] = _tensor(result.curve_s)
            tensors[f"{method}.curve_u"] = _tensor(result.curve_u)
            tensors[f"{method}.per_class_accuracy"] = _tensor(result.per_class_accuracy)
        metadata = {
            "methods": [
                {"method": m, "gamma": r.gamma, "metrics": r.metrics}
                for m, r in self.results.items()
            ]
        }
        return tensors, metadata

    @classmethod
    def from_safetensors(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> GZSLEvaluation:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            InputError: when a tensor or a metadata entry is missing.
        """
        try:
            results = {}
            for entry in metadata["methods"]:
                m = entry["method"]
                results[m] = GZSLResult(
                    method=m,
                    scores=tensors[f"{m}.scores"].numpy(),
                    gamma=float(entry["gamma"]),
                    predicted=tensors[f"{m}.predicted"].numpy(),
                    curve_s=tensors[f"{m}.curve_s"].numpy(),
                    curve_u=tensors[f"{m}.curve_u"].numpy(),
                    per_class_accuracy=tensors[f"{m}.per_class_accuracy"].numpy(),
                    metrics={k: float(v) for k, v in entry["metrics"].items()},
                )
            return cls(
                image_ids=tensors["image_id"].numpy(),
                labels=tensors["label"].numpy(),
                class_ids=tensors["class_id"].numpy(),
                seen=tensors["seen"].numpy().astype(bool),
                results=results,
            )
        except KeyError as exc:
            raise InputError(f"GZSL evaluation file: missing {exc}") from None


def evaluate_methods(
    scores: Mapping[str, np.ndarray],
    image_ids: np.ndarray,
    labels: np.ndarray,
    class_ids: np.ndarray,
    seen: np.ndarray,
    gammas: Mapping[str, float],
) -> GZSLEvaluation:
    """Evaluate every method's scores once (Xian et al. 2017 protocol, calibrated stacking).

    Scores are kept, and evaluated, as float32 (the precision they are stored in).

    Args:
        scores: method -> (N, C) scores over all classes (columns = ``class_ids``).
        image_ids: (N,) the image of each row.
        labels: (N,) the true class id of each image (each among ``class_ids``).
        class_ids: (C,) the classes of the columns.
        seen: (C,) bool, the seen classes among them (at least one seen, one unseen).
        gammas: method -> calibration gamma, chosen without test data.

    Returns:
        A :class:`GZSLEvaluation`.

    Raises:
        KeyError: when a method has no gamma or an image's class is not a column.
        ValueError: on shapes that do not agree.
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    seen = np.asarray(seen, dtype=bool)
    labels = np.asarray(labels, dtype=np.int64)
    problem = problem_for(labels, class_ids, class_ids[~seen])
    columns = np.arange(len(class_ids))
    results = {}
    for method, matrix in scores.items():
        stored = np.asarray(matrix, dtype=np.float32)
        values = stored.astype(np.float64)
        gamma = float(gammas[method])
        report = evaluate_scores(values, problem, gamma)
        curve = report.pop("curve")
        predicted_columns = calibrated_predictions(values, seen, gamma)
        accuracy = per_class_accuracy(predicted_columns, problem.labels, columns)
        results[method] = GZSLResult(
            method=method,
            scores=stored,
            gamma=gamma,
            predicted=class_ids[predicted_columns],
            curve_s=np.asarray(curve["S"], dtype=np.float64),
            curve_u=np.asarray(curve["U"], dtype=np.float64),
            per_class_accuracy=np.array([accuracy[j] for j in columns], dtype=np.float64),
            metrics={k: float(report[k]) for k in METRIC_KEYS},
        )
    return GZSLEvaluation(
        image_ids=np.asarray(image_ids, dtype=np.int64),
        labels=labels,
        class_ids=class_ids,
        seen=seen,
        results=results,
    )
