"""The ``serve`` pipeline: the inference pipeline logged with every training run as an
MLflow model (one request DataFrame in, one predictions DataFrame out)."""

from niwt_pipeline.pipelines.serve.pipeline import create_pipeline

__all__ = ["create_pipeline"]
