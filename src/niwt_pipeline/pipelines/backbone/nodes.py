"""Backbone nodes: hold out some trainval images, store a frozen trunk's activations, and
train the network on the seen classes (calls into ``niwt_pipeline.core``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from niwt_pipeline.core import roles as role_tables
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trained import TrainedBackbone, fit_backbone, trunk_activations
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.params import BackboneParams
from niwt_pipeline.tracking import as_metrics


def compute_trunk_activations(
    images: pd.DataFrame, options: BackboneParams, trunk_activation_shards: ShardStore
) -> TrunkActivations:
    """With ``backbone.trunk.frozen``: the pretrained trunk's activations at the importance
    layer for every image (and ``backbone.trunk.views`` views of each trainval image), in
    resumable shards; otherwise none (the whole network is trained).

    Returns:
        The :class:`~niwt_pipeline.core.trunk.TrunkActivations` (read on demand).
    """
    return trunk_activations(options.recipe(), images, trunk_activation_shards)


def assign_backbone_roles(images: pd.DataFrame, options: BackboneParams) -> pd.DataFrame:
    """Which trainval images train the backbone and which are held out: a stratified
    ``holdout_fraction`` of each seen class's trainval images (seeded by
    ``backbone.train.seed``) picks the best epoch and is the seen half of the validation
    problem.

    Returns:
        ``image_id``, ``role`` in {train, holdout}, one row per trainval image.
    """
    trainval = images[images["split"] == "trainval"].reset_index(drop=True)
    return role_tables.backbone_roles(trainval, options.holdout_fraction, options.train.seed)


def train_backbone(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    backbone_roles: pd.DataFrame,
    options: BackboneParams,
    trunk_activations: TrunkActivations | None = None,
) -> tuple[TrainedBackbone, dict[str, Any], dict[str, Any]]:
    """Train the classifier on the seen classes' trainval images with role ``train``,
    picking the best epoch on those with role ``holdout`` (with a frozen trunk: the head
    above the importance layer, on the stored activations).

    Returns:
        The trained backbone; the report (JSON); MLflow metrics (``seen_accuracy`` in
        percent, ``train_seconds``).
    """
    seen_ids = classes.loc[classes["seen"], "class_id"].astype(int).tolist()
    trainval = images[images["split"] == "trainval"].reset_index(drop=True)
    role = trainval[["image_id"]].merge(backbone_roles, on="image_id", how="left")["role"]
    held = (role == "holdout").to_numpy()
    backbone, report = fit_backbone(
        options.recipe(),
        seen_ids,
        trainval[~held],
        trainval[held],
        images[images["split"] == "test_seen"],
        trunk=trunk_activations,
    )
    metrics = as_metrics(
        {
            "seen_accuracy": 100 * float(report["seen_accuracy_test"]),
            "train_seconds": report["train_seconds"],
        }
    )
    return backbone, report, metrics
