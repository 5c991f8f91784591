"""The ``predict`` pipeline.

``kedro run --pipelines=predict --params=predict.images=/path/to/photos`` classifies a folder
(or a CSV of paths) with ``zero_shot_classifier``; nothing upstream re-runs.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.predict.nodes import classify_images, render_predictions


def create_pipeline(**kwargs) -> Pipeline:
    """packaged classifier + images -> predictions (parquet, CSV) and the gallery page."""
    return Pipeline(
        [
            Node(
                classify_images,
                inputs=["zero_shot_classifier", "images", "params:predict"],
                outputs="predictions",
                name="classify_images",
            ),
            Node(
                render_predictions,
                inputs=["predictions", "zero_shot_classifier", "params:predict"],
                outputs=["predictions_csv", "predictions_gallery", "predictions_gradcam"],
                name="render_predictions",
            ),
        ]
    )
