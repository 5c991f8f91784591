"""The ``backbone`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.backbone.nodes import (
    assign_backbone_roles,
    compute_trunk_activations,
    train_backbone,
)


def create_pipeline(**kwargs) -> Pipeline:
    """images + classes -> the trained seen-class backbone and its image roles.

    ``trunk_activation_shards`` is the folder of resumable shards of the frozen trunk's
    activations (with ``backbone.trunk.frozen``); ``trunk_activations`` reads them.
    """
    return Pipeline(
        [
            Node(
                assign_backbone_roles,
                inputs=["images", "params:backbone"],
                outputs="backbone_roles",
                name="assign_backbone_roles",
            ),
            Node(
                compute_trunk_activations,
                inputs=["images", "params:backbone", "trunk_activation_shards"],
                outputs="trunk_activations",
                name="compute_trunk_activations",
            ),
            Node(
                train_backbone,
                inputs=[
                    "images",
                    "classes",
                    "backbone_roles",
                    "params:backbone",
                    "trunk_activations",
                ],
                outputs=["backbone", "backbone_report", "backbone_metrics"],
                name="train_backbone",
            ),
        ]
    )
