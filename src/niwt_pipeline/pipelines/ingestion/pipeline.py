"""The ``ingestion`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.ingestion.nodes import build_domain_knowledge, canonicalise_dataset


def create_pipeline(**kwargs) -> Pipeline:
    """raw_source + domain_knowledge_source -> images, classes, domain_knowledge."""
    return Pipeline(
        [
            Node(
                build_domain_knowledge,
                inputs=["raw_source", "domain_knowledge_source"],
                outputs=["raw_domain_knowledge", "domain_knowledge_info"],
                name="build_domain_knowledge",
            ),
            Node(
                canonicalise_dataset,
                inputs=[
                    "raw_source",
                    "raw_domain_knowledge",
                    "domain_knowledge_info",
                    "params:ingestion",
                ],
                outputs=[
                    "images",
                    "classes",
                    "domain_knowledge",
                    "image_attributes",
                    "ingestion_summary",
                ],
                name="canonicalise_dataset",
            ),
        ]
    )
