"""Transfer: NIWT weight transfer, the baselines, and GZSL scoring of all of them."""

from niwt_pipeline.pipelines.transfer.pipeline import create_pipeline

__all__ = ["create_pipeline"]
