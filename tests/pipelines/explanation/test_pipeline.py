"""The explanation pipeline run by ``SequentialRunner`` on an in-memory catalog."""

from __future__ import annotations

import json

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from niwt_pipeline.pipelines.explanation import create_pipeline


class _Kept(MemoryDataset):
    """Keeps its data after the runner is done with it, so intermediates can be checked."""

    def __init__(self) -> None:
        super().__init__(copy_mode="assign")

    def _release(self) -> None:
        pass


def _params(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("params:")}


@pytest.fixture(scope="module")
def outputs(upstream, typed_parameters) -> dict:
    pipeline = create_pipeline()
    catalog = DataCatalog({name: _Kept() for name in pipeline.all_outputs()})
    for name in sorted(pipeline.inputs() - _params(pipeline.inputs())):
        catalog[name] = upstream[name]
    for name in _params(pipeline.inputs()):
        catalog[name] = typed_parameters[name.removeprefix("params:")]
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.all_outputs()}


def test_nodes_are_named_after_their_functions():
    for node in create_pipeline().nodes:
        assert node.name == node.func.__name__


def test_pipeline_reads_only_persisted_upstream_outputs(upstream):
    inputs = create_pipeline().inputs()
    assert _params(inputs) == {"params:explanation", "params:mapping"}
    assert inputs - _params(inputs) <= set(upstream)


def test_pipeline_explains_every_test_image(upstream, outputs):
    explained = outputs["textual_explanations"]
    assert explained["image_id"].tolist() == upstream["gzsl_evaluation"].image_ids.tolist()
    metrics = outputs["explanation_metrics"]
    assert metrics["textual"]["n_images_explained"] == len(explained)
    assert metrics["textual"]["source_of_truth"] == "image_attributes"
    json.dumps(metrics, allow_nan=False)
    choice = outputs["explanation_choice"]
    assert metrics["textual"]["explanation"]["evidence"] == choice["evidence"]
    assert metrics["textual"]["explanation"]["evidence_weight"] == choice["evidence_weight"]


def test_pipeline_produces_the_report_names_and_mlflow_metrics(outputs):
    assert outputs["report"].startswith("<!DOCTYPE html>")
    assert "Scored textual explanations (precision@3)" in outputs["report"]
    assert outputs["neuron_names_table"].startswith("# Neuron names")
    assert set(outputs["neuron_names"]["source"]) == {"mapper", "covariation"}
    mlflow_metrics = outputs["explanation_mlflow_metrics"]
    assert {"neuron_names.agreement", "precision_at_3.unseen.random"} <= set(mlflow_metrics)
    examples = outputs["explanation_examples"]
    assert len(outputs["gradcam_examples_plot"].axes) == 4 * len(examples["image_id"]) > 0
