"""The ``importance`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.importance.nodes import build_importance_tables


def create_pipeline(**kwargs) -> Pipeline:
    """per-image outputs -> importance matrices per image and per class."""
    return Pipeline(
        [
            Node(
                build_importance_tables,
                inputs=["image_outputs", "images"],
                outputs=["image_importance", "class_importance"],
                name="build_importance_tables",
            )
        ]
    )
