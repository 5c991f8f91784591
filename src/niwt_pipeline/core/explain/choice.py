"""Choosing the textual explanations' evidence and weight on the validation problem.

The explanations of :mod:`.grounded` blend the predicted class's prior with per-image
evidence at a weight; both are chosen here on the images of the *pseudo-unseen* classes
(seen classes held out of a second, validation backbone, :mod:`niwt_pipeline.core.
validation`): those images are predicted with rows made for their classes the way the
explained rows are made for the unseen classes, so the choice sees what the test's unseen
classes will see, without any test image.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain.grounded import (
    choose_evidence,
    fit_attribute_predictor_on_images,
    predicted_evidence,
)
from niwt_pipeline.core.explain.scoring import (
    departs_from_prototype,
    json_ready,
    table_class_prototypes,
    truth_for_explanations,
)
from niwt_pipeline.core.mapper import fit_inverse_map
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.trunk import TrunkActivations

logger = logging.getLogger(__name__)


@dataclass
class ValidationImages:
    """The validation backbone's outputs on the trainval images of the seen classes.

    Attributes:
        image_ids: ``(N,)`` canonical image ids.
        class_ids: ``(N,)`` their classes.
        roles: ``(N,)`` ``train``, ``holdout`` or ``pseudo_unseen``.
        features: ``(N, D)`` penultimate features.
        importance: ``(N, K)`` importance of each image's own class (``importance_gt``).
    """

    image_ids: np.ndarray
    class_ids: np.ndarray
    roles: np.ndarray
    features: np.ndarray | torch.Tensor
    importance: np.ndarray | torch.Tensor


def choose_evidence_on_validation(
    kinds: Sequence[str],
    weights: Sequence[float],
    validation: ValidationImages,
    backbone: TrainedBackbone,
    rows: ClassRows,
    gamma: float,
    images: pd.DataFrame,
    image_attributes: pd.DataFrame,
    dk: pd.DataFrame,
    *,
    top_k: int,
    attribute_ridge_alpha: float,
    inverse_ridge_alpha: float,
    batch_size: int,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
) -> dict[str, Any]:
    """Choose the evidence and weight of the explanations (:func:`~niwt_pipeline.core.
    explain.grounded.choose_evidence`) on the pseudo-unseen images.

    The images are predicted among all classes of ``rows`` by calibrated stacking at
    ``gamma`` (seen scores lowered by ``gamma``); the inverse map and the attribute
    predictor are fitted on the ``train`` images, as their test counterparts are fitted on
    the seen classes.

    Args:
        kinds: the evidence to try (:data:`~niwt_pipeline.core.explain.grounded.
            EVIDENCE_KINDS`).
        weights: the weights to try, each in ``[0, 1]``.
        validation: the validation backbone's outputs.
        backbone: the validation backbone.
        rows: its seen rows plus the new rows of the pseudo-unseen classes.
        gamma: the calibration the validation chose for the explained method (score units).
        images: the images table (``image_id``, ``path``, ``split``, ``class_id``).
        image_attributes: per-image attributes (may be empty: the truth is then the true
            class's thresholded domain knowledge).
        dk: ``(C, A)`` domain knowledge indexed by class id.
        top_k: dimensions per explanation; the choice maximises precision@top_k.
        attribute_ridge_alpha, inverse_ridge_alpha: ridge penalties of the attribute
            predictor and of the inverse map.
        batch_size, device, trunk: how the network runs.

    Returns:
        JSON-ready: ``evidence``, ``evidence_weight``, ``chosen_on``, ``truth``,
        ``n_images``, ``n_departing``, ``validation_precision_at_k`` (``chosen``,
        ``inverse_map``: the paper's explanation, ``class_prior``) and ``candidates`` (every
        (evidence, weight) with its precision@k, also on correctly classified and departing
        images).

    Raises:
        InputError: when there are no pseudo-unseen or no training images.
    """
    started = time.perf_counter()
    roles = np.asarray(validation.roles)
    pseudo_images = roles == "pseudo_unseen"
    train = roles == "train"
    if not pseudo_images.any() or not train.any():
        raise InputError(
            "explanation: the validation problem needs pseudo-unseen and training images to "
            "choose the explanations' evidence on; set explanation.evidence and "
            "explanation.evidence_weight"
        )
    ids = np.asarray(validation.image_ids, dtype=np.int64)
    labels = np.asarray(validation.class_ids, dtype=np.int64)
    features = np.asarray(validation.features, dtype=np.float64)
    importance = np.asarray(validation.importance, dtype=np.float64)
    seen_ids = np.unique(labels[~pseudo_images])
    class_ids = rows.class_ids
    scores = rows.scores(features[pseudo_images], class_ids)
    scores = scores - gamma * np.isin(class_ids, seen_ids)[None, :]
    table = images.set_index("image_id").loc[ids[pseudo_images]].reset_index()
    table["predicted_class_id"] = class_ids[np.argmax(scores, axis=1)]
    predictor = None
    if "features" in kinds:
        predictor, _ = fit_attribute_predictor_on_images(
            features[train],
            pd.DataFrame({"image_id": ids[train], "class_id": labels[train]}),
            image_attributes,
            dk,
            attribute_ridge_alpha,
        )
    values = dk.to_numpy(dtype=np.float64)
    position = {int(c): j for j, c in enumerate(dk.index)}
    inverse = fit_inverse_map(
        importance[train], values[[position[int(c)] for c in labels[train]]], inverse_ridge_alpha
    )
    evidences = predicted_evidence(
        kinds,
        backbone,
        rows,
        inverse,
        table,
        batch_size=batch_size,
        device=device,
        trunk=trunk,
        features=features[pseudo_images],
        predictor=predictor,
    )
    frame = table.rename(columns={"class_id": "true_class_id"})
    kept, truth, source = truth_for_explanations(frame, image_attributes, dk)
    keep = frame["image_id"].isin(kept["image_id"]).to_numpy()
    subsets = {"correct": (kept["true_class_id"] == kept["predicted_class_id"]).to_numpy()}
    if source["source_of_truth"] == "image_attributes":
        subsets["departing"] = departs_from_prototype(
            truth,
            kept["true_class_id"].to_numpy(),
            table_class_prototypes(images, image_attributes, dk),
        )
    prior = values[[position[int(c)] for c in kept["predicted_class_id"]]]
    chosen = choose_evidence(
        prior,
        {kind: evidence[keep] for kind, evidence in evidences.items()},
        truth,
        weights,
        top_k,
        subsets=subsets,
    )
    candidates = chosen.table

    def precision_of(evidence: str | None, weight: float) -> float | None:
        at = candidates["weight"] == weight
        if evidence is not None:
            at &= candidates["evidence"] == evidence
        return float(candidates.loc[at, "precision_at_k"].iloc[0]) if at.any() else None

    class_prior = precision_of(None, 0.0)
    logger.info(
        "explanation evidence chosen on %d pseudo-unseen validation images in %.1f s: %s at "
        "weight %.2f (precision@%d %.3f; class prior %s)",
        len(kept),
        time.perf_counter() - started,
        chosen.evidence,
        chosen.weight,
        top_k,
        chosen.precision,
        "n/a" if class_prior is None else f"{class_prior:.3f}",
    )
    n_classes = len(np.unique(labels[pseudo_images]))
    return json_ready(
        {
            "evidence": chosen.evidence,
            "evidence_weight": chosen.weight,
            "chosen_on": f"the {len(kept)} images of the {n_classes} pseudo-unseen classes of "
            "the validation problem (validation backbone, NIWT rows made for them as for the "
            f"unseen classes, gamma {gamma:.3g}), by precision@{top_k}",
            "truth": source["source_of_truth"],
            "n_images": int(len(kept)),
            "n_departing": int(subsets["departing"].sum()) if "departing" in subsets else None,
            "validation_precision_at_k": {
                "chosen": chosen.precision,
                "inverse_map": precision_of("importance", 1.0),
                "class_prior": math.nan if class_prior is None else class_prior,
            },
            "candidates": candidates.to_dict("records"),
        }
    )
