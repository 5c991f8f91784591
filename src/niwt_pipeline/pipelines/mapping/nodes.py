"""Mapping nodes: fit the domain-knowledge -> importance mapper and its inverse."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.mapper import LinearMapper, MapperConfig, fit_inverse_map, fit_mapper
from niwt_pipeline.pipelines.importance.nodes import channel_columns

logger = logging.getLogger(__name__)


class MappingParams(BaseModel):
    """``params:mapping``."""

    model_config = ConfigDict(extra="forbid")

    mapper: MapperConfig = MapperConfig()
    inverse_ridge_alpha: float = Field(1.0, ge=0)


def fit_importance_mapper(
    image_importance: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    classes: pd.DataFrame,
    validation_choice: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Fit the mapper on all seen classes, with ``mapping.mapper`` updated by the settings
    the validation pipeline chose, and predict every class's importance.

    Returns:
        mapper state dict; ``predicted_importance`` (``class_id``, ``name``, ``seen``,
        ``role`` = final, then ``k_0000..``); report (JSON); MLflow metrics.
    """
    options = MappingParams(**params)
    config = replace(options.mapper, **validation_choice.get("mapper", {}))
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(dtype=np.float32)
    columns = [c for c in image_importance.columns if c.startswith("k_")]
    importance = image_importance[columns].to_numpy(dtype=np.float32)
    labels = image_importance["class_id"].to_numpy()
    seen_ids = classes.loc[classes["seen"], "class_id"].to_numpy()

    mapper, report = fit_mapper(dk, importance, labels, seen_ids, config)
    logger.info(
        "mapper: held-out cosine %.3f (per image), %.3f (class mean), best epoch %d",
        report.heldout_cosine,
        report.heldout_class_cosine,
        report.best_epoch,
    )
    predicted = _prediction_table(mapper, dk, classes, "final")
    summary = {
        "config": asdict(config),
        "validated_overrides": dict(validation_choice.get("mapper", {})),
        "final": {**report.as_dict(), "heldout_class_ids": report.heldout_class_ids},
    }
    metrics = {
        "heldout_cosine": {"value": float(report.heldout_cosine), "step": 0},
        "heldout_class_cosine": {"value": float(report.heldout_class_cosine), "step": 0},
    }
    return _state(mapper), predicted, summary, metrics


def _prediction_table(
    mapper: LinearMapper, dk: np.ndarray, classes: pd.DataFrame, role: str
) -> pd.DataFrame:
    predicted = mapper.predict(dk).numpy()
    table = pd.DataFrame(predicted, columns=channel_columns(predicted.shape[1]))
    ordered = classes.sort_values("class_id").reset_index(drop=True)
    table.insert(0, "role", pd.Series([role] * len(table), dtype="str"))
    table.insert(0, "seen", ordered["seen"].to_numpy())
    table.insert(0, "name", ordered["name"].to_numpy())
    table.insert(0, "class_id", ordered["class_id"].to_numpy().astype("int64"))
    return table


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def fit_inverse_mapper(
    image_importance: pd.DataFrame, domain_knowledge: pd.DataFrame, params: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Ridge map importance -> domain knowledge, fitted on the seen images (for explanations)."""
    options = MappingParams(**params)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(dtype=np.float32)
    columns = [c for c in image_importance.columns if c.startswith("k_")]
    inverse = fit_inverse_map(
        image_importance[columns].to_numpy(dtype=np.float32),
        dk[image_importance["class_id"].to_numpy()],
        options.inverse_ridge_alpha,
    )
    return inverse.state()
