"""The ``validation`` pipeline: choose hyper-parameters and calibration on pseudo-unseen classes."""

from niwt_pipeline.pipelines.validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
