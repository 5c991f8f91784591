"""Mapping: domain knowledge -> importance (and the inverse map for explanations)."""

from niwt_pipeline.pipelines.mapping.pipeline import create_pipeline

__all__ = ["create_pipeline"]
