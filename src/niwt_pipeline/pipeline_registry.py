"""Project pipelines: one folder per named pipeline, ``__default__`` runs them all.

``__default__`` and ``transfer`` (the pipelines that build ``zero_shot_classifier``) are
bound to the ``serve`` inference pipeline with kedro-mlflow's ``pipeline_ml_factory``: at the
end of each such run the inference pipeline is logged as the MLflow model
``zero_shot_classifier`` (its artifact: the packaged classifier folder) and registered under
``serving.registered_model_name``.  ``serve`` itself is not a ``kedro run`` pipeline: it
answers requests inside ``mlflow models serve`` or ``mlflow.pyfunc.load_model(...).predict``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline
from kedro_mlflow.pipeline import pipeline_ml_factory

from niwt_pipeline.pipelines.serve import create_pipeline as create_serve_pipeline

#: The MLflow model's name inside a run (``runs:/<run_id>/zero_shot_classifier``).
MODEL_NAME = "zero_shot_classifier"
#: The node that builds ``zero_shot_classifier`` (in the ``transfer`` pipeline).
PACKAGER = "package_classifier"
#: The request and answer of the served model.
REQUEST, RESPONSE = "prediction_request", "prediction_response"
#: Recorded as the model's requirements (serve it with ``--env-manager local``: nothing
#: is downloaded).
_REQUIREMENTS = ("torch", "torchvision", "kedro", "kedro-mlflow", "mlflow", "pandas", "pillow")


def _requirements() -> list[str]:
    pinned = []
    for package in _REQUIREMENTS:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return pinned


def _signature():
    """The request's schema: a ``path`` or a base64 ``image`` string column (either may be
    left out)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "path", required=False),
                ColSpec("string", "image", required=False),
            ]
        )
    )


def served(training: Pipeline, serve: Pipeline) -> Pipeline:
    """``training`` bound to the ``serve`` inference pipeline (a kedro-mlflow ``PipelineML``).

    Raises:
        KedroMlflowPipelineMLError: if ``serve`` needs an input ``training`` does not make.
    """
    return pipeline_ml_factory(
        training=training,
        inference=serve,
        input_name=REQUEST,
        log_model_kwargs={
            "name": MODEL_NAME,
            "pip_requirements": _requirements(),
            "signature": _signature(),
        },
    )


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Kedro may ask for only the pipelines a command names; ``serve`` is built here whatever
    was asked for, and a pipeline is bound to it only when it builds the classifier.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; ``__default__`` is their sum.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines.pop("serve", None)
    pipelines.pop("__default__", None)
    serve = create_serve_pipeline()
    total = sum(pipelines.values(), Pipeline([]))
    builds = {n.name for n in total.nodes}
    pipelines["__default__"] = served(total, serve) if PACKAGER in builds else total
    if "transfer" in pipelines:
        pipelines["transfer"] = served(pipelines["transfer"], serve)
    return pipelines
