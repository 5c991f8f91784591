"""Explanation: neuron names, textual and visual explanations, their scores, the run report."""

from niwt_pipeline.pipelines.explanation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
