"""Backbone node: train the network on the seen classes (a call into ``niwt_pipeline.core``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from niwt_pipeline.core.roles import backbone_roles
from niwt_pipeline.core.trained import TrainedBackbone, fit_backbone
from niwt_pipeline.params import BackboneParams
from niwt_pipeline.tracking import as_metrics


def train_backbone(
    images: pd.DataFrame, classes: pd.DataFrame, options: BackboneParams
) -> tuple[TrainedBackbone, pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Train the classifier on the seen classes' trainval images.

    A stratified ``holdout_fraction`` of those images is kept out of training: it picks the
    best epoch and is the seen half of the validation problem.

    Returns:
        The trained backbone; its image roles (``image_id``, ``role`` in {train, holdout});
        the report (JSON); MLflow metrics (``seen_accuracy`` in percent, ``train_seconds``).
    """
    seen_ids = classes.loc[classes["seen"], "class_id"].astype(int).tolist()
    trainval = images[images["split"] == "trainval"].reset_index(drop=True)
    roles = backbone_roles(trainval, options.holdout_fraction, options.train.seed)
    held = (roles["role"] == "holdout").to_numpy()
    backbone, report = fit_backbone(
        options.recipe(),
        seen_ids,
        trainval[~held],
        trainval[held],
        images[images["split"] == "test_seen"],
    )
    metrics = as_metrics(
        {
            "seen_accuracy": 100 * float(report["seen_accuracy_test"]),
            "train_seconds": report["train_seconds"],
        }
    )
    return backbone, roles, report, metrics
