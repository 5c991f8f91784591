"""The ``backbone`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.backbone.nodes import train_backbone


def create_pipeline(**kwargs) -> Pipeline:
    """images + classes -> the trained seen-class backbone and its image roles."""
    return Pipeline(
        [
            Node(
                train_backbone,
                inputs=["images", "classes", "params:backbone"],
                outputs=["backbone", "backbone_roles", "backbone_report", "backbone_metrics"],
                name="train_backbone",
            )
        ]
    )
