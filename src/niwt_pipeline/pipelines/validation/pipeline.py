"""The ``validation`` pipeline.

Some seen classes are treated as pseudo-unseen: a second backbone is trained without them
(same recipe as ``backbone``), and every hyper-parameter choice (mapper, NIWT variant and
its transfer settings, fusion with ESZSL) and every method's calibration gamma is made on
them.  Test images are never read.  It replays the recipes of the backbone, extraction,
mapping and transfer stages, so it reads their parameter blocks (one parameter per decision).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.validation.nodes import (
    cache_validation_reference,
    extract_validation_outputs,
    select_hyperparameters,
    split_for_validation,
    train_validation_backbone,
)


def create_pipeline(**kwargs) -> Pipeline:
    """images + backbone roles + domain knowledge -> validated choices and gammas."""
    return Pipeline(
        [
            Node(
                split_for_validation,
                inputs=["images", "classes", "backbone_roles", "params:validation"],
                outputs="validation_roles",
                name="split_for_validation",
            ),
            Node(
                train_validation_backbone,
                inputs=["images", "validation_roles", "params:backbone", "trunk_activations"],
                outputs=["validation_backbone", "validation_backbone_report"],
                name="train_validation_backbone",
            ),
            Node(
                extract_validation_outputs,
                inputs=[
                    "validation_backbone",
                    "images",
                    "validation_roles",
                    "params:extraction",
                    "trunk_activations",
                ],
                outputs="validation_image_outputs",
                name="extract_validation_outputs",
            ),
            Node(
                cache_validation_reference,
                inputs=[
                    "validation_backbone",
                    "images",
                    "params:validation",
                    "params:transfer",
                    "trunk_activations",
                ],
                outputs="validation_reference_cache",
                name="cache_validation_reference",
            ),
            Node(
                select_hyperparameters,
                inputs=[
                    "validation_image_outputs",
                    "validation_reference_cache",
                    "validation_backbone",
                    "validation_roles",
                    "domain_knowledge",
                    "params:validation",
                    "params:mapping",
                    "params:transfer",
                ],
                outputs=[
                    "validation_choice",
                    "validation_results",
                    "validation_metrics",
                    "validation_niwt_rows",
                ],
                name="select_hyperparameters",
            ),
        ]
    )
