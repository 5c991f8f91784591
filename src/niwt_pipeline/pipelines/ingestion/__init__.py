"""Ingestion: read a dataset layout and a domain-knowledge source into canonical tables."""

from niwt_pipeline.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
