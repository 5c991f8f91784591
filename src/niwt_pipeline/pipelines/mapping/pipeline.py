"""The ``mapping`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.mapping.nodes import fit_importance_mapper, fit_inverse_mapper


def create_pipeline(**kwargs) -> Pipeline:
    """importance matrix + domain knowledge -> mapper, predicted class importances, inverse map."""
    return Pipeline(
        [
            Node(
                fit_importance_mapper,
                inputs=[
                    "image_importance",
                    "domain_knowledge",
                    "classes",
                    "validation_choice",
                    "params:mapping",
                ],
                outputs=[
                    "mapper_weights",
                    "predicted_importance",
                    "mapper_report",
                    "mapper_metrics",
                ],
                name="fit_importance_mapper",
            ),
            Node(
                fit_inverse_mapper,
                inputs=["image_importance", "domain_knowledge", "params:mapping"],
                outputs="inverse_map_weights",
                name="fit_inverse_mapper",
            ),
        ]
    )
