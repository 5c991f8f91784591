"""The ``serve`` pipeline: ``prediction_request`` -> ``prediction_response``.

It is not run by ``kedro run``: the pipeline registry binds it to the training pipelines
with kedro-mlflow's ``pipeline_ml_factory``, so every ``kedro run`` (and
``kedro run --pipelines=transfer``) logs it, with ``zero_shot_classifier`` as its artifact,
as an MLflow model that ``mlflow models serve`` answers requests with.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.serve.nodes import answer_prediction_request


def create_pipeline(**kwargs) -> Pipeline:
    """packaged classifier + a request DataFrame -> a predictions DataFrame."""
    return Pipeline(
        [
            Node(
                answer_prediction_request,
                inputs=["zero_shot_classifier", "prediction_request"],
                outputs="prediction_response",
                name="answer_prediction_request",
            )
        ]
    )
