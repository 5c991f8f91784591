"""The ``extraction`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.extraction.nodes import extract_image_outputs


def create_pipeline(**kwargs) -> Pipeline:
    """trained backbone + images -> per-image features, logits and importances.

    ``image_output_shards`` is the folder of resumable shards (used with
    ``extraction.shard_size``; see ``ShardStoreDataset``).
    """
    return Pipeline(
        [
            Node(
                extract_image_outputs,
                inputs=[
                    "backbone",
                    "images",
                    "params:extraction",
                    "image_output_shards",
                    "trunk_activations",
                ],
                outputs="image_outputs",
                name="extract_image_outputs",
            )
        ]
    )
