"""Importance: the per-image and per-class neuron-importance matrices."""

from niwt_pipeline.pipelines.importance.pipeline import create_pipeline

__all__ = ["create_pipeline"]
