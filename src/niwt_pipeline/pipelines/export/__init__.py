"""Export: the features, splits, domain knowledge and seen classifier in the xlsa17 layout."""

from niwt_pipeline.pipelines.export.pipeline import create_pipeline

__all__ = ["create_pipeline"]
