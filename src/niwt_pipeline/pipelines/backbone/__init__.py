"""Backbone: train (or fine-tune) the network on the seen classes."""

from niwt_pipeline.pipelines.backbone.pipeline import create_pipeline

__all__ = ["create_pipeline"]
