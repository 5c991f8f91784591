"""Textual explanations grounded in the image: the predicted class's attributes re-ranked by
per-image evidence, optionally contrasted with the runner-up class.

The paper's textual explanation (Selvaraju et al., ECCV 2018, sec. 3.4) ranks dimensions by
the inverse map applied to the predicted row's importance on the image.  The inverse map is
fitted to *class-level* domain knowledge, so on new (unseen) classes it mostly restates a
noisy version of the class and names less of what the image shows than the class's own
attributes do.  Here an explanation ranks dimensions by

``s_c(x) = (1 - w) * z(dk_c) + w * z(e_c(x))``

with ``dk_c`` the class-level domain knowledge of class ``c`` (the *class prior*), ``e_c(x)``
the per-image *evidence* and ``z`` the standardisation of a row over the dimensions
(:func:`standardise_rows`; z-scores make the two comparable whatever their units).  Two
kinds of evidence:

* ``importance``: the inverse map on the importance of row ``c`` on the image (the paper's
  evidence; ``w = 1`` is the paper's explanation);
* ``features``: an *attribute predictor*, ridge regression from the network's penultimate
  features to the attributes each seen training image shows (:func:`fit_attribute_predictor`;
  direct attribute prediction in the sense of Lampert, Nickisch & Harmeling, TPAMI 2014,
  with one linear regressor for all attributes); it does not depend on ``c``.

The weight ``w`` (and the kind of evidence) is a choice made on validation images
(:func:`choose_evidence`), never on test images.  A *contrastive* explanation ("why ``p``
rather than ``r``", Miller, Artificial Intelligence 2019; Hendricks et al., ECCV 2018)
ranks by ``s_p + lambda * (s_p - s_r)`` with ``r`` the runner-up class
(:func:`contrastive_scores`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain.common import _check_names, _check_top_k, _matrix, _top_k
from niwt_pipeline.core.explain.scoring import precision_at_k, truth_for_explanations
from niwt_pipeline.core.explain.textual import (
    explanations_table,
    predicted_row_importance,
    ranked_explanations,
    require_image_files,
)
from niwt_pipeline.core.mapper import InverseMap
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.trunk import TrunkActivations

logger = logging.getLogger(__name__)

EVIDENCE_KINDS = ("importance", "features")
"""Per-image evidence an explanation can weigh against the class prior (see the module)."""


def standardise_rows(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    """Each row as z-scores over its columns: ``(x - mean(x)) / std(x)`` (population std).

    Args:
        scores: ``(N, A)`` finite values (any unit).

    Returns:
        ``(N, A)`` float64, unitless; a row without spread (all values equal) becomes zeros.

    Raises:
        ValueError: if ``scores`` is not a finite 2-d array.
    """
    values = _matrix(scores, "scores")
    centred = values - values.mean(axis=1, keepdims=True)
    spread = values.std(axis=1, keepdims=True)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def _check_weight(weight: float, name: str, upper: float | None) -> float:
    bad = isinstance(weight, bool) or not isinstance(weight, int | float | np.floating)
    if bad or not math.isfinite(weight) or weight < 0 or (upper is not None and weight > upper):
        bound = f"in [0, {upper:g}]" if upper is not None else ">= 0"
        raise ValueError(f"{name}: expected a number {bound}, got {weight!r}")
    return float(weight)


def blend_scores(
    prior: np.ndarray | torch.Tensor, evidence: np.ndarray | torch.Tensor, weight: float
) -> np.ndarray:
    """``(1 - weight) * z(prior) + weight * z(evidence)``, row by row (:func:`standardise_rows`).

    Args:
        prior: ``(N, A)`` class-level domain knowledge of each image's class (any unit).
        evidence: ``(N, A)`` per-image evidence for each dimension (any unit).
        weight: the evidence's weight in ``[0, 1]``: 0 ranks as the class prior, 1 as the
            evidence alone.

    Returns:
        ``(N, A)`` float64 scores in z units.

    Raises:
        ValueError: on shapes that differ, non-finite values or a weight outside ``[0, 1]``.
    """
    weight = _check_weight(weight, "weight", 1.0)
    p, e = _matrix(prior, "prior"), _matrix(evidence, "evidence")
    if p.shape != e.shape:
        raise ValueError(f"prior {p.shape} and evidence {e.shape} must have the same shape")
    return (1.0 - weight) * standardise_rows(p) + weight * standardise_rows(e)


def contrastive_scores(
    predicted: np.ndarray | torch.Tensor,
    runner_up: np.ndarray | torch.Tensor,
    contrast_weight: float,
) -> np.ndarray:
    """Scores that favour what separates the predicted class from the runner-up:
    ``predicted + contrast_weight * (predicted - runner_up)``.

    "Why ``p`` rather than ``r``" is the contrastive form of an explanation (Miller,
    "Explanation in artificial intelligence: insights from the social sciences",
    Artificial Intelligence 267, 2019; Hendricks, Hu, Darrell & Akata, "Grounding visual
    explanations", ECCV 2018, whose counterfactual explanations name what the image shows
    for one class and not for another).

    Args:
        predicted: ``(N, A)`` each image's scores for its predicted class (e.g.
            :func:`blend_scores`).
        runner_up: ``(N, A)`` the same scores for its runner-up class.
        contrast_weight: ``>= 0``; 0 returns ``predicted`` unchanged, large values rank by
            the difference alone.

    Returns:
        ``(N, A)`` float64, the units of the inputs.

    Raises:
        ValueError: on shapes that differ, non-finite values or a negative weight.
    """
    contrast_weight = _check_weight(contrast_weight, "contrast_weight", None)
    p, r = _matrix(predicted, "predicted"), _matrix(runner_up, "runner_up")
    if p.shape != r.shape:
        raise ValueError(f"predicted {p.shape} and runner_up {r.shape} must have the same shape")
    return p + contrast_weight * (p - r)


def runner_up_columns(scores: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The best-scoring column other than each image's predicted one.

    Args:
        scores: ``(N, C)`` the scores the prediction was made with (e.g. calibrated
            scores; ties go to the lower column).
        predicted: ``(N,)`` each image's predicted column.

    Returns:
        ``(N,)`` int64 columns.

    Raises:
        ValueError: with fewer than two columns, or shapes / columns that do not fit.
    """
    values = _matrix(scores, "scores")
    pred = np.asarray(predicted, dtype=np.int64)
    if values.shape[1] < 2:
        raise ValueError(f"scores {values.shape}: a runner-up needs at least two classes")
    if pred.shape != (values.shape[0],):
        raise ValueError(f"predicted {pred.shape} does not fit scores {values.shape}")
    if len(pred) and (pred.min() < 0 or pred.max() >= values.shape[1]):
        raise ValueError(f"predicted columns must be in [0, {values.shape[1]})")
    masked = values.copy()
    masked[np.arange(len(pred)), pred] = -np.inf
    return np.argmax(masked, axis=1).astype(np.int64)


@dataclass
class AttributePredictor:
    """Ridge regression from penultimate features to attributes (one linear map for all).

    ``predict(f) = ((f - x_mean) / x_scale) @ weight + bias``.

    Attributes:
        x_mean, x_scale: ``(D,)`` feature standardisation (zero-variance features keep 1).
        weight: ``(D, A)``; bias: ``(A,)`` the training mean of the targets.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def predict(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(N, D)`` features -> ``(N, A)`` float64 predicted attributes (target units).

        Raises:
            ValueError: if ``features`` is not a finite ``(N, D)`` array.
        """
        x = _matrix(features, "features")
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"features {x.shape} do not fit the attribute predictor "
                f"({self.weight.shape[0]} features -> {self.weight.shape[1]} attributes)"
            )
        return ((x - self.x_mean) / self.x_scale) @ self.weight + self.bias


def fit_attribute_predictor(
    features: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ridge_alpha: float = 1.0,
) -> AttributePredictor:
    """Fit :class:`AttributePredictor` in closed form (float64): standardised features,
    centred targets, unpenalised intercept, ``W = (X'X + alpha I)^-1 X'Y``.

    Args:
        features: ``(N, D)`` penultimate features of seen training images.
        targets: ``(N, A)`` what each image shows (its own 0/1 attributes where known,
            else its class's domain knowledge).
        ridge_alpha: ``>= 0`` penalty on the standardised features.

    Returns:
        The fitted predictor.

    Raises:
        ValueError: with no images, row counts that differ, non-finite values or a
            negative ``ridge_alpha``.
    """
    ridge_alpha = _check_weight(ridge_alpha, "ridge_alpha", None)
    x, y = _matrix(features, "features"), _matrix(targets, "targets")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"features {x.shape} and targets {y.shape}: need the same number (> 0) of images"
        )
    x_mean = x.mean(axis=0)
    std = x.std(axis=0)
    x_scale = np.where(std > 0, std, 1.0)
    xs = (x - x_mean) / x_scale
    y_mean = y.mean(axis=0)
    gram = xs.T @ xs + ridge_alpha * np.eye(xs.shape[1])
    weight = np.linalg.lstsq(gram, xs.T @ (y - y_mean), rcond=None)[0]
    return AttributePredictor(x_mean=x_mean, x_scale=x_scale, weight=weight, bias=y_mean)


@dataclass
class EvidenceChoice:
    """The evidence and weight of :func:`blend_scores` chosen on validation images.

    Attributes:
        evidence: one of :data:`EVIDENCE_KINDS`.
        weight: the evidence's weight in ``[0, 1]``.
        precision: precision@k of the choice on the validation images.
        table: every candidate: ``evidence``, ``weight``, ``precision_at_k``, ``chosen``.
    """

    evidence: str
    weight: float
    precision: float
    table: pd.DataFrame


def choose_evidence(
    prior: np.ndarray,
    evidences: Mapping[str, np.ndarray],
    truth: np.ndarray,
    weights: Sequence[float],
    k: int,
    *,
    subsets: Mapping[str, np.ndarray] | None = None,
) -> EvidenceChoice:
    """The (evidence, weight) whose :func:`blend_scores` explanations have the highest
    precision@k against the validation images' truth.

    Ties go to the smaller weight (closer to the class prior), then to the evidence named
    first.  Use validation images only (e.g. images of pseudo-unseen classes explained by a
    network that never saw them): choosing on test images would report an optimistic score.

    Args:
        prior: ``(N, A)`` class-level domain knowledge of each image's predicted class.
        evidences: evidence name -> ``(N, A)`` per-image evidence for the predicted class.
        truth: ``(N, A)`` 0/1 what each image shows.
        weights: the weights to try, each in ``[0, 1]``.
        k: dimensions per explanation that count.
        subsets: name -> ``(N,)`` bool, image subsets whose precision@k is reported too
            (``precision_at_k_<name>``, NaN for an empty subset); the choice is made on all
            images.

    Returns:
        The choice, with the table of every candidate.

    Raises:
        ValueError: with no images, no evidence, no weights, a bad weight or shapes that
            do not agree.
    """
    if not evidences or not len(weights):
        raise ValueError("choose_evidence: need at least one evidence and one weight")
    truth = _matrix(truth, "truth")
    if truth.shape[0] == 0:
        raise ValueError("choose_evidence: no validation images to choose on")
    order = sorted({_check_weight(w, "weights", 1.0) for w in weights})
    masks = {name: np.asarray(m, dtype=bool) for name, m in (subsets or {}).items()}
    for name, mask in masks.items():
        if mask.shape != (truth.shape[0],):
            raise ValueError(f"subset {name!r} {mask.shape} does not fit {truth.shape[0]} images")
    records = []
    for weight in order:
        for name, evidence in evidences.items():
            blended = blend_scores(prior, evidence, weight)
            ids = _top_k(blended, _check_top_k(k, blended.shape[1]))
            record = {
                "evidence": str(name),
                "weight": weight,
                "precision_at_k": precision_at_k(ids.tolist(), truth, k),
            }
            for subset, mask in masks.items():
                record[f"precision_at_k_{subset}"] = (
                    precision_at_k(ids[mask].tolist(), truth[mask], k) if mask.any() else math.nan
                )
            records.append(record)
    table = pd.DataFrame.from_records(records)
    best = int(np.argmax(table["precision_at_k"].to_numpy(dtype=np.float64)))
    table["chosen"] = np.arange(len(table)) == best
    row = table.iloc[best]
    return EvidenceChoice(
        evidence=str(row["evidence"]),
        weight=float(row["weight"]),
        precision=float(row["precision_at_k"]),
        table=table,
    )


def predicted_evidence(
    kinds: Sequence[str],
    backbone: TrainedBackbone,
    rows: ClassRows,
    inverse: InverseMap,
    table: pd.DataFrame,
    *,
    batch_size: int,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
    features: np.ndarray | None = None,
    predictor: AttributePredictor | None = None,
    class_column: str = "predicted_class_id",
) -> dict[str, np.ndarray]:
    """Each image's evidence for one class per image (by default its predicted class).

    Args:
        kinds: the evidence to compute, among :data:`EVIDENCE_KINDS`.
        backbone: the trained backbone (runs only for ``importance``).
        rows: rows covering every class of ``class_column``.
        inverse: importance -> domain knowledge (``importance``).
        table: image rows (``path``, ``image_id``, ``class_column``).
        batch_size, device, trunk: how the network runs (see
            :func:`~niwt_pipeline.core.explain.textual.predicted_row_importance`).
        features: ``(N, D)`` the images' penultimate features (``features``).
        predictor: features -> attributes (``features``).
        class_column: the column holding the class each image's evidence is for.

    Returns:
        kind -> ``(N, A)`` float64: ``importance``: the inverse map on the importance of the
        class's row on the image; ``features``: the attribute predictor on the image's
        features (the same for every class).

    Raises:
        ValueError: on an unknown kind, or ``features`` without its inputs or of the wrong
            length.
        InputError: a missing image file or a class without a row.
    """
    unknown = sorted(set(kinds) - set(EVIDENCE_KINDS))
    if unknown:
        raise ValueError(f"unknown evidence {unknown}; expected some of {list(EVIDENCE_KINDS)}")
    out: dict[str, np.ndarray] = {}
    if "importance" in kinds:
        if len(table):
            require_image_files(table["path"].tolist())
            importance = predicted_row_importance(
                backbone,
                rows,
                table.assign(predicted_class_id=table[class_column].to_numpy()),
                batch_size=batch_size,
                device=device,
                trunk=trunk,
            )
            out["importance"] = inverse.predict(importance).numpy()
        else:
            out["importance"] = np.zeros((0, inverse.weight.shape[1]))
    if "features" in kinds:
        if features is None or predictor is None:
            raise ValueError("evidence 'features' needs the images' features and a predictor")
        if len(features) != len(table):
            raise ValueError(f"features has {len(features)} rows for {len(table)} images")
        out["features"] = (
            predictor.predict(features) if len(table) else np.zeros((0, predictor.bias.shape[0]))
        )
    return out


def explain_grounded(
    backbone: TrainedBackbone,
    rows: ClassRows,
    inverse: InverseMap,
    table: pd.DataFrame,
    dk: pd.DataFrame,
    dk_names: Sequence[str],
    class_names: Mapping[int, str],
    class_seen: Mapping[int, bool],
    *,
    evidence: str,
    weight: float,
    contrast_weight: float = 0.0,
    top_k: int,
    batch_size: int,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
    features: np.ndarray | None = None,
    predictor: AttributePredictor | None = None,
) -> pd.DataFrame:
    """Explain each image's prediction by :func:`blend_scores` of its predicted class's
    prior and its evidence (made contrastive with the runner-up when ``contrast_weight > 0``),
    beside the paper's explanation of the same prediction.

    Args:
        backbone, rows, inverse: the network, rows covering every predicted and runner-up
            class, and the inverse map.
        table: image rows: ``image_id``, ``path``, ``split``, ``class_id`` (true class),
            ``predicted_class_id``, ``runner_up_class_id``.
        dk: ``(C, A)`` domain knowledge indexed by class id (the class prior), covering
            every predicted and runner-up class.
        dk_names: the A dimension names.
        class_names, class_seen: class id -> name, and whether it is a seen class.
        evidence: one of :data:`EVIDENCE_KINDS`.
        weight: the evidence's weight in ``[0, 1]``.
        contrast_weight: ``>= 0``, see :func:`contrastive_scores`.
        top_k: dimensions per explanation.
        batch_size, device, trunk: how the network runs.
        features, predictor: the images' ``(N, D)`` features and the attribute predictor
            (evidence ``features``).

    Returns:
        The rows of :func:`~niwt_pipeline.core.explain.textual.explanations_table`
        (``score_<r>`` in z units, :func:`blend_scores`), plus ``runner_up_class_id``,
        ``runner_up_class`` and ``inverse_map_dimension_id_<r>``: the paper's explanation
        (the inverse map on the predicted row's importance alone).

    Raises:
        InputError: a missing image file, or a class without a row or domain knowledge.
        ValueError: a bad option, ``top_k`` or names that do not fit.
    """
    if evidence not in EVIDENCE_KINDS:
        raise ValueError(f"evidence: expected one of {list(EVIDENCE_KINDS)}, got {evidence!r}")
    weight = _check_weight(weight, "weight", 1.0)
    contrast_weight = _check_weight(contrast_weight, "contrast_weight", None)
    names = _check_names(dk_names, dk.shape[1], f"the domain knowledge {dk.shape}")
    top_k = _check_top_k(top_k, len(names))
    if inverse.weight.shape[1] != len(names):
        raise ValueError(
            f"the inverse map gives {inverse.weight.shape[1]} dimensions, the domain "
            f"knowledge has {len(names)}"
        )
    run = {"batch_size": batch_size, "device": device, "trunk": trunk}
    kinds = ["importance"] + (["features"] if evidence == "features" else [])
    found = predicted_evidence(
        kinds, backbone, rows, inverse, table, features=features, predictor=predictor, **run
    )
    predicted = table["predicted_class_id"].to_numpy(dtype=np.int64)
    scores = blend_scores(_class_rows(dk, predicted), found[evidence], weight)
    if contrast_weight > 0 and len(table):
        other = table["runner_up_class_id"].to_numpy(dtype=np.int64)
        if evidence == "importance":
            against = predicted_evidence(
                ["importance"],
                backbone,
                rows,
                inverse,
                table,
                class_column="runner_up_class_id",
                **run,
            )["importance"]
        else:
            against = found[evidence]  # the image's features do not depend on the class
        scores = contrastive_scores(
            scores, blend_scores(_class_rows(dk, other), against, weight), contrast_weight
        )
    predicted_names = [class_names[int(c)] for c in predicted]
    explained = ranked_explanations(scores, names, predicted_names, top_k)
    frame = explanations_table(table, explained, class_names, class_seen, top_k)
    frame["runner_up_class_id"] = table["runner_up_class_id"].to_numpy(dtype=np.int64)
    frame["runner_up_class"] = pd.array(
        [class_names[int(c)] for c in frame["runner_up_class_id"]], dtype="str"
    )
    paper = _top_k(found["importance"], top_k)
    for r in range(top_k):
        frame[f"inverse_map_dimension_id_{r + 1}"] = paper[:, r].astype(np.int64)
    return frame


def _class_rows(dk: pd.DataFrame, class_ids: np.ndarray) -> np.ndarray:
    position = {int(c): j for j, c in enumerate(dk.index)}
    missing = sorted({int(c) for c in class_ids if int(c) not in position})
    if missing:
        raise InputError(f"class id(s) {missing[:10]} have no domain knowledge")
    return dk.to_numpy(dtype=np.float64)[[position[int(c)] for c in class_ids]].reshape(
        len(class_ids), dk.shape[1]
    )


def features_of(
    outputs: Mapping[str, torch.Tensor | np.ndarray], image_ids: np.ndarray, what: str
) -> np.ndarray:
    """The penultimate features of ``image_ids`` from an extraction's outputs.

    Args:
        outputs: ``image_id`` (M,) and ``features`` (M, D).
        image_ids: ``(N,)`` the images wanted, in that order.
        what: the outputs' name, for the message.

    Returns:
        ``(N, D)`` float64.

    Raises:
        InputError: naming image ids the outputs do not cover.
    """
    ids = np.asarray(outputs["image_id"]).reshape(-1)
    position = {int(i): j for j, i in enumerate(ids)}
    missing = [int(i) for i in image_ids if int(i) not in position]
    if missing:
        raise InputError(
            f"{what}: no features for image id(s) {missing[:10]}; re-run the pipeline that "
            "extracts them"
        )
    features = np.asarray(outputs["features"], dtype=np.float64)
    return features[[position[int(i)] for i in image_ids]].reshape(len(image_ids), -1)


def fit_attribute_predictor_on_images(
    features: np.ndarray,
    table: pd.DataFrame,
    image_attributes: pd.DataFrame,
    dk: pd.DataFrame,
    ridge_alpha: float,
) -> tuple[AttributePredictor, str]:
    """:func:`fit_attribute_predictor` on seen training images, to their own 0/1 attributes
    where the dataset has them for every dimension, else to their class's domain knowledge.

    Args:
        features: ``(N, D)`` penultimate features of the images of ``table``.
        table: ``image_id``, ``class_id`` of seen training images.
        image_attributes: per-image 0/1 attributes (``image_id`` + one column per dimension),
            possibly empty.
        dk: ``(C, A)`` domain knowledge indexed by class id, named columns.
        ridge_alpha: the ridge penalty.

    Returns:
        The predictor and one sentence on what it was fitted to.

    Raises:
        InputError: when no image is left to fit on.
    """
    frame = pd.DataFrame(
        {"image_id": table["image_id"].to_numpy(), "true_class_id": table["class_id"].to_numpy()}
    )
    kept, truth, source = truth_for_explanations(frame, image_attributes, dk)
    if source["source_of_truth"] == "image_attributes":
        keep = frame["image_id"].isin(kept["image_id"]).to_numpy()
        targets, what = truth, "their own attributes"
    else:
        keep = np.ones(len(frame), dtype=bool)
        targets = _class_rows(dk, frame["true_class_id"].to_numpy())
        what = "their class's domain knowledge"
    if not keep.any():
        raise InputError(
            "no seen training image to fit the attribute predictor on (set "
            "explanation.evidence to importance)"
        )
    predictor = fit_attribute_predictor(np.asarray(features)[keep], targets, ridge_alpha)
    return predictor, (
        f"ridge regression (alpha {ridge_alpha:g}) from the penultimate features of "
        f"{int(keep.sum())} seen training images to {what}"
    )
