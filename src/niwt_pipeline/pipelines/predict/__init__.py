"""The ``predict`` pipeline: classify new images with the packaged zero-shot classifier."""

from niwt_pipeline.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
