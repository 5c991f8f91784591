"""Validation nodes: a second backbone that never sees the pseudo-unseen classes, and the
choice of every hyper-parameter and calibration gamma on them
(``niwt_pipeline.core.validation``).

Nothing here reads a test image: the validation problem is the held-out images of the
validation backbone's own classes plus every trainval image of the pseudo-unseen classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.extraction import image_outputs
from niwt_pipeline.core.roles import VALIDATION_ROLES, rows_with_role, validation_roles
from niwt_pipeline.core.rows import RowSet
from niwt_pipeline.core.trained import TrainedBackbone, fit_backbone
from niwt_pipeline.core.transfer.reference import ReferenceCache, reference_cache
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.core.validation import search_candidates
from niwt_pipeline.params import (
    BackboneParams,
    ExtractionParams,
    MappingParams,
    TransferParams,
    ValidationParams,
)
from niwt_pipeline.tracking import as_metrics


def split_for_validation(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    backbone_roles: pd.DataFrame,
    options: ValidationParams,
) -> pd.DataFrame:
    """Choose the pseudo-unseen classes and give every trainval image of a seen class a role.

    Returns:
        ``image_id``, ``class_id``, ``role`` in {train, holdout, pseudo_unseen}.
    """
    seen_ids = classes.loc[classes["seen"], "class_id"].to_numpy(dtype=np.int64)
    return validation_roles(
        images, seen_ids, backbone_roles, options.pseudo_unseen_classes, options.seed
    )


def train_validation_backbone(
    images: pd.DataFrame,
    validation_roles: pd.DataFrame,
    options: BackboneParams,
    trunk_activations: TrunkActivations | None = None,
) -> tuple[TrainedBackbone, dict[str, Any]]:
    """The backbone's recipe (``params:backbone``) trained without the pseudo-unseen classes
    (with a frozen trunk: the head retrained on the same stored activations).

    Returns:
        The validation backbone and its report (JSON).
    """
    pseudo = validation_roles["role"] == "pseudo_unseen"
    backbone, report = fit_backbone(
        options.recipe(),
        sorted(int(c) for c in validation_roles.loc[~pseudo, "class_id"].unique()),
        rows_with_role(images, validation_roles, "train"),
        rows_with_role(images, validation_roles, "holdout"),
        trunk=trunk_activations,
    )
    report["pseudo_unseen_class_ids"] = sorted(
        int(c) for c in validation_roles.loc[pseudo, "class_id"].unique()
    )
    return backbone, report


def extract_validation_outputs(
    validation_backbone: TrainedBackbone,
    images: pd.DataFrame,
    validation_roles: pd.DataFrame,
    options: ExtractionParams,
    trunk_activations: TrunkActivations | None = None,
) -> dict[str, torch.Tensor]:
    """Features and importances of the validation images under the validation backbone
    (``params:extraction``, in one pass)."""
    table = rows_with_role(images, validation_roles, *VALIDATION_ROLES)
    config = options.config(sharded=False)
    return image_outputs(validation_backbone, table, config, trunk=trunk_activations)


def cache_validation_reference(
    validation_backbone: TrainedBackbone,
    images: pd.DataFrame,
    options: ValidationParams,
    transfer: TransferParams,
    trunk_activations: TrunkActivations | None = None,
) -> ReferenceCache:
    """The reference cache (``transfer.reference``) of the validation backbone; its seen
    classes exclude the pseudo-unseen ones, so their images are never reference images."""
    config = transfer.reference.config(max_images=options.reference_max_images)
    return reference_cache(validation_backbone, images, config, transfer.device, trunk_activations)


def select_hyperparameters(
    validation_image_outputs: dict[str, torch.Tensor],
    validation_reference_cache: ReferenceCache,
    validation_backbone: TrainedBackbone,
    validation_roles: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    options: ValidationParams,
    mapping: MappingParams,
    transfer: TransferParams,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], RowSet]:
    """Score every (mapper, NIWT variant, fusion) candidate and the baselines on the
    validation problem; choose the best candidate and every method's gamma.

    Returns:
        The choice (JSON), the table of every candidate, MLflow metrics
        (``<method>.H_calibrated`` and ``<method>.ausuc``, percent), and the chosen
        ``niwt_tuned`` rows of the pseudo-unseen classes (``validation_niwt_rows``).
    """
    choice, results, tuned_rows = search_candidates(
        validation_image_outputs,
        validation_roles,
        validation_reference_cache,
        validation_backbone,
        domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64),
        mapping.mapper,
        transfer.niwt,
        transfer.paper_config(),
        transfer.baselines.config(),
        options.search(),
        transfer.compatibility.config(),
        transfer.fclswgan,
        transfer.reference.config().gram_budget_bytes,
    )
    metrics = as_metrics(
        {
            f"{method}.{key}": 100 * values[key]
            for method, values in choice["methods"].items()
            for key in ("H_calibrated", "ausuc")
        }
    )
    return choice, results, metrics, RowSet({"niwt_tuned": tuned_rows})
