"""Mapping nodes: fit the domain-knowledge -> importance mapper and its inverse."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.importance import importance_columns
from niwt_pipeline.core.mapper import fit_inverse_map, fit_mapper, predicted_importance_table
from niwt_pipeline.params import MappingParams
from niwt_pipeline.tracking import as_metrics

logger = logging.getLogger(__name__)


def fit_importance_mapper(
    image_importance: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    classes: pd.DataFrame,
    validation_choice: dict[str, Any],
    options: MappingParams,
) -> tuple[dict[str, torch.Tensor], pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Fit the mapper on all seen classes, with ``mapping.mapper`` updated by the settings
    the validation pipeline chose, and predict every class's importance.

    Returns:
        mapper state dict; ``predicted_importance`` (``class_id``, ``name``, ``seen``, then
        ``k_0000..``); report (JSON); MLflow metrics.
    """
    config = replace(options.mapper, **validation_choice.get("mapper", {}))
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(dtype=np.float32)
    importance = image_importance[importance_columns(image_importance)].to_numpy(np.float32)
    labels = image_importance["class_id"].to_numpy()
    seen_ids = classes.loc[classes["seen"], "class_id"].to_numpy()
    mapper, report = fit_mapper(dk, importance, labels, seen_ids, config)
    logger.info(
        "mapper: held-out cosine %.3f (per image), %.3f (class mean), best epoch %d",
        report.heldout_cosine,
        report.heldout_class_cosine,
        report.best_epoch,
    )
    summary = {
        "config": asdict(config),
        "validated_overrides": dict(validation_choice.get("mapper", {})),
        "final": {**report.as_dict(), "heldout_class_ids": report.heldout_class_ids},
    }
    metrics = as_metrics(
        {
            "heldout_cosine": report.heldout_cosine,
            "heldout_class_cosine": report.heldout_class_cosine,
        }
    )
    return mapper.state(), predicted_importance_table(mapper, dk, classes), summary, metrics


def fit_inverse_mapper(
    image_importance: pd.DataFrame, domain_knowledge: pd.DataFrame, options: MappingParams
) -> dict[str, torch.Tensor]:
    """Ridge map importance -> domain knowledge, fitted on the seen images (for explanations)."""
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(dtype=np.float32)
    inverse = fit_inverse_map(
        image_importance[importance_columns(image_importance)].to_numpy(dtype=np.float32),
        dk[image_importance["class_id"].to_numpy()],
        options.inverse_ridge_alpha,
    )
    return inverse.state()
