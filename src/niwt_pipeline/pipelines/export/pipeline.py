"""The ``export`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.export.nodes import build_xlsa17_export


def create_pipeline(**kwargs) -> Pipeline:
    """image outputs + canonical tables + backbone -> an xlsa17-layout folder."""
    return Pipeline(
        [
            Node(
                build_xlsa17_export,
                inputs=[
                    "image_outputs",
                    "images",
                    "classes",
                    "domain_knowledge",
                    "backbone",
                    "backbone_roles",
                    "validation_roles",
                ],
                outputs="xlsa17_export",
                name="build_xlsa17_export",
            )
        ]
    )
