"""Extraction: penultimate features, logits and per-image importances from the backbone."""

from niwt_pipeline.pipelines.extraction.pipeline import create_pipeline

__all__ = ["create_pipeline"]
