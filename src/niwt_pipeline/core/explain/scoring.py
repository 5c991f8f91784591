"""Scoring textual explanations against true attributes: precision@k and its chance
level, for correctly and incorrectly classified images."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from niwt_pipeline.core.explain.common import _check_top_k, _matrix
from niwt_pipeline.core.explain.textual import Explanation

logger = logging.getLogger(__name__)


def _dimension_ids(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
) -> list[list[int]]:
    return [
        list(e.dimension_ids) if isinstance(e, Explanation) else [int(a) for a in e]
        for e in explanations
    ]


def _binary(true_attributes: np.ndarray | pd.DataFrame) -> np.ndarray:
    truth = _matrix(np.asarray(true_attributes), "true_attributes")
    if not np.isin(truth, (0.0, 1.0)).all():
        raise ValueError("true_attributes: expected 0/1 values")
    return truth


def precision_at_k(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
    true_attributes: np.ndarray | pd.DataFrame,
    k: int,
) -> float:
    """Mean over images of the share of the first ``k`` explained dimensions that are true.

    Args:
        explanations: per image, its ranked dimension indices (or :class:`Explanation`).
        true_attributes: ``(N, A)`` 0/1, the attributes each image really shows.
        k: how many of each explanation's dimensions count.

    Returns:
        Precision@k in [0, 1]; NaN (with a warning) when there are no images.

    Raises:
        ValueError: on a count or shape mismatch, explanations shorter than ``k``, or
            dimension indices outside ``[0, A)``.
    """
    truth = _binary(true_attributes)
    ids = _dimension_ids(explanations)
    if len(ids) != truth.shape[0]:
        raise ValueError(f"{len(ids)} explanations for true_attributes of shape {truth.shape}")
    k = _check_top_k(k, truth.shape[1])
    if not ids:
        logger.warning("precision_at_k: no images; precision is NaN")
        return math.nan
    if min(len(e) for e in ids) < k:
        raise ValueError(f"an explanation has fewer than k = {k} dimensions")
    top = np.array([e[:k] for e in ids], dtype=np.int64)
    if top.min() < 0 or top.max() >= truth.shape[1]:
        raise ValueError(
            f"dimension indices must be in [0, {truth.shape[1]}), got {top.min()}..{top.max()}"
        )
    return float(np.take_along_axis(truth, top, axis=1).mean())


def random_precision_at_k(true_attributes: np.ndarray | pd.DataFrame, k: int) -> float:
    """Expected precision@k of explanations naming k uniformly random distinct dimensions.

    Each of the k draws is true with probability ``(number of true attributes) / A`` for
    its image, so the expectation is the mean share of positives, for every ``k <= A``.
    NaN (with a warning) when there are no images.
    """
    truth = _binary(true_attributes)
    _check_top_k(k, truth.shape[1])
    if truth.shape[0] == 0:
        logger.warning("random_precision_at_k: no images; precision is NaN")
        return math.nan
    return float(truth.mean())


@dataclass
class ExplanationScores:
    """Precision@k of textual explanations, split by whether the prediction was right.

    Attributes:
        k: dimensions per explanation that count.
        precision: over all images.
        precision_correct / precision_incorrect: over correctly / incorrectly classified
            images (NaN where there are none).
        random_precision: the chance level over all images (:func:`random_precision_at_k`).
        n_correct / n_incorrect: image counts.
    """

    k: int
    precision: float
    precision_correct: float
    precision_incorrect: float
    random_precision: float
    n_correct: int
    n_incorrect: int

    def as_dict(self) -> dict[str, float | int]:
        """Scalars, for metric logging."""
        return asdict(self)


def score_explanations(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
    true_attributes: np.ndarray | pd.DataFrame,
    predicted: Sequence[object] | np.ndarray,
    labels: Sequence[object] | np.ndarray,
    k: int = 3,
) -> ExplanationScores:
    """Precision@k overall, for correct and for wrong predictions, and the chance level.

    Args:
        explanations: N ranked dimension-index lists (or :class:`Explanation` objects).
        true_attributes: ``(N, A)`` 0/1 true attributes of each image.
        predicted, labels: N predicted and true classes (ids or names; compared with ``==``).
        k: dimensions per explanation that count.

    Returns:
        The precisions (fractions in [0, 1], NaN for an empty subset), chance level and counts.

    Raises:
        ValueError: if ``true_attributes`` is not a finite 2-D 0/1 array, ``predicted`` or
            ``labels`` is not (N,), the number of explanations is not N, ``k`` is not an
            integer in ``[1, A]``, an explanation is shorter than ``k``, or a dimension index
            is outside ``[0, A)``.
    """
    truth = _binary(true_attributes)
    pred = np.asarray(predicted)
    true = np.asarray(labels)
    if pred.shape != (truth.shape[0],) or true.shape != (truth.shape[0],):
        raise ValueError(
            f"predicted {pred.shape} and labels {true.shape} must both be "
            f"({truth.shape[0]},) for true_attributes {truth.shape}"
        )
    ids = _dimension_ids(explanations)
    if len(ids) != truth.shape[0]:
        raise ValueError(f"{len(ids)} explanations for true_attributes of shape {truth.shape}")
    correct = pred == true

    def subset(mask: np.ndarray) -> float:
        if not mask.any():
            return math.nan
        return precision_at_k([ids[i] for i in np.flatnonzero(mask)], truth[mask], k)

    return ExplanationScores(
        k=int(k),
        precision=precision_at_k(ids, truth, k),
        precision_correct=subset(correct),
        precision_incorrect=subset(~correct),
        random_precision=random_precision_at_k(truth, k),
        n_correct=int(correct.sum()),
        n_incorrect=int((~correct).sum()),
    )


def truth_for_explanations(
    explained: pd.DataFrame, image_attributes: pd.DataFrame, dk: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """What each explained image truly shows, as 0/1 per dimension.

    Args:
        explained: explained images (``image_id``, ``true_class_id``).
        image_attributes: per-image 0/1 attributes (``image_id`` + one column per
            dimension), possibly empty.
        dk: (C, A) domain knowledge indexed by class id, named columns.

    Returns:
        The explained images that can be scored, their truth (N, A) float64, and where the
        truth comes from: the images' own attributes where they match the dimensions
        (``image_attributes``, e.g. the generated world), else the TRUE class's value above
        the dimension's mean over classes (``class_attributes_thresholded``).
    """
    columns = [str(c) for c in dk.columns]
    attributes = [c for c in image_attributes.columns if c != "image_id"]
    if len(image_attributes) and sorted(attributes) == sorted(columns):
        known = image_attributes.set_index("image_id")[columns]
        keep = explained["image_id"].isin(known.index).to_numpy()
        truth = known.loc[explained.loc[keep, "image_id"]].to_numpy(dtype=np.float64)
        return (
            explained[keep].reset_index(drop=True),
            truth,
            {
                "source_of_truth": "image_attributes",
                "truth_description": "the true 0/1 attributes of each test image "
                "(image_attributes, known exactly where the images were generated)",
            },
        )
    reason = (
        "no per-image attributes"
        if not len(image_attributes)
        else "the per-image attributes do not match the domain-knowledge dimensions"
    )
    values = dk.to_numpy(dtype=np.float64)
    above = values > values.mean(axis=0, keepdims=True)
    position = {int(c): j for j, c in enumerate(dk.index)}
    truth = above[[position[int(c)] for c in explained["true_class_id"]]].astype(np.float64)
    return (
        explained.reset_index(drop=True),
        truth,
        {
            "source_of_truth": "class_attributes_thresholded",
            "truth_description": f"{reason}: a dimension counts as true for an image when the "
            "class-level domain-knowledge value of its TRUE class is above that dimension's mean "
            "over all classes",
            "threshold": "mean over classes, per dimension",
        },
    )


def precision_by_group(
    scored: pd.DataFrame, truth: np.ndarray, dk: pd.DataFrame, k: int
) -> dict[str, dict[str, float | int]]:
    """Precision@k of the explanations over all / seen-class / unseen-class images, each
    split by correct and incorrect predictions, beside two baselines: ``random`` (k random
    dimensions, :func:`random_precision_at_k`) and ``class_prior`` (the predicted class's k
    largest domain-knowledge dimensions, no image involved).

    Args:
        scored: explained images (``dimension_id_<r>``, ``predicted_class_id``,
            ``true_class_id``, ``true_seen``, ``correct``).
        truth: (N, A) 0/1 truth of those images.
        dk: (C, A) domain knowledge indexed by class id.
        k: dimensions per explanation that count.

    Returns:
        group (``all``, ``seen``, ``unseen``) -> ``n_images``, ``n_correct``,
        ``n_incorrect``, ``all``, ``correct``, ``incorrect``, ``random``, ``class_prior``,
        ``random_correct``, ``random_incorrect``, ``class_prior_correct``,
        ``class_prior_incorrect`` (NaN where a subset is empty); a group without images
        holds only ``n_images = 0``.

    Raises:
        ValueError: on shapes that do not agree.
    """
    ids = scored[[f"dimension_id_{r + 1}" for r in range(k)]].to_numpy(dtype=np.int64)
    position = {int(c): j for j, c in enumerate(dk.index)}
    prior_scores = dk.to_numpy(dtype=np.float64)[
        [position[int(c)] for c in scored["predicted_class_id"]]
    ]
    prior = np.argsort(-prior_scores, axis=1, kind="stable")[:, :k] if len(scored) else ids
    masks = {
        "all": np.ones(len(scored), dtype=bool),
        "seen": scored["true_seen"].to_numpy(dtype=bool),
        "unseen": ~scored["true_seen"].to_numpy(dtype=bool),
    }
    correct = scored["correct"].to_numpy(dtype=bool)
    groups: dict[str, dict[str, float | int]] = {}
    for group, mask in masks.items():
        if not mask.any():
            groups[group] = {"n_images": 0}
            continue
        result = score_explanations(
            ids[mask].tolist(),
            truth[mask],
            scored["predicted_class_id"].to_numpy()[mask],
            scored["true_class_id"].to_numpy()[mask],
            k,
        )
        values: dict[str, float | int] = {
            "n_images": int(mask.sum()),
            "n_correct": result.n_correct,
            "n_incorrect": result.n_incorrect,
            "all": result.precision,
            "correct": result.precision_correct,
            "incorrect": result.precision_incorrect,
            "random": result.random_precision,
            "class_prior": precision_at_k(prior[mask].tolist(), truth[mask], k),
        }
        for label, subset in (("correct", mask & correct), ("incorrect", mask & ~correct)):
            values[f"random_{label}"] = (
                random_precision_at_k(truth[subset], k) if subset.any() else math.nan
            )
            values[f"class_prior_{label}"] = (
                precision_at_k(prior[subset].tolist(), truth[subset], k)
                if subset.any()
                else math.nan
            )
        groups[group] = values
    return groups


def json_ready(value: object) -> object:
    """NaN -> None (valid JSON), recursively through dicts; numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    return value
