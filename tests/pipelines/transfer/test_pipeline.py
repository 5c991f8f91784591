"""The transfer pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from niwt_pipeline.core.extra import ExtraClasses
from niwt_pipeline.core.methods import METHODS
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.pipelines.transfer.pipeline import create_pipeline

INPUTS = {
    "extra_classes",
    "domain_knowledge_source",
    "mapper_weights",
    "backbone",
    "backbone_roles",
    "images",
    "classes",
    "domain_knowledge",
    "image_outputs",
    "predicted_importance",
    "validation_choice",
    "ingestion_summary",
    "inverse_map_weights",
    "domain_knowledge_info",
    "params:transfer",
    "trunk_activations",
}
OUTPUTS = {
    "transfer_report",
    "baseline_report",
    "gzsl_metrics",
    "gzsl_mlflow_metrics",
    "seen_unseen_curve_plot",
    "confusion_matrix_plot",
    "zero_shot_classifier",
    "fclswgan_generator",
}
INTERMEDIATES = {
    "classifier_classes",
    "classifier_domain_knowledge",
    "reference_cache",
    "niwt_rows",
    "baseline_rows",
    "eszsl_model",
    "ale_model",
    "sje_model",
    "devise_model",
    "sae_model",
    "gzsl_evaluation",
}
NODES = {
    "add_extra_classes",
    "cache_reference",
    "transfer_niwt_rows",
    "fit_baseline_models",
    "evaluate_gzsl",
    "report_gzsl",
    "package_classifier",
}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == OUTPUTS
    assert pipeline.all_outputs() == OUTPUTS | INTERMEDIATES
    assert {n.name for n in pipeline.nodes} == NODES


def test_pipeline_reads_only_what_earlier_pipelines_write():
    """``kedro run --pipelines=transfer`` restarts from persisted outputs of the others."""
    from niwt_pipeline.pipelines.backbone.pipeline import create_pipeline as backbone
    from niwt_pipeline.pipelines.extraction.pipeline import create_pipeline as extraction
    from niwt_pipeline.pipelines.importance.pipeline import create_pipeline as importance
    from niwt_pipeline.pipelines.ingestion.pipeline import create_pipeline as ingestion
    from niwt_pipeline.pipelines.mapping.pipeline import create_pipeline as mapping
    from niwt_pipeline.pipelines.validation.pipeline import create_pipeline as validation

    upstream = set().union(
        *(
            p().all_outputs()
            for p in (ingestion, backbone, validation, extraction, importance, mapping)
        )
    )

    raw = {"extra_classes", "domain_knowledge_source"}  # catalog entries people write
    assert {name for name in INPUTS if not name.startswith("params:")} - raw <= upstream


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for, domain_source):
    produced = run_pipeline(
        create_pipeline(),
        {
            "backbone": chain.backbone,
            "backbone_roles": chain.backbone_roles,
            "images": chain.images,
            "classes": chain.classes,
            "domain_knowledge": chain.domain_knowledge,
            "image_outputs": chain.image_outputs,
            "predicted_importance": chain.predicted_importance,
            "validation_choice": chain.validation_choice,
            "ingestion_summary": chain.ingestion_summary,
            "inverse_map_weights": chain.inverse_map_weights,
            "extra_classes": ExtraClasses("none.csv"),
            "domain_knowledge_source": domain_source,
            "mapper_weights": chain.mapper_weights,
            "domain_knowledge_info": chain.domain_knowledge_info,
            "params:transfer": params_for("transfer"),
            "trunk_activations": TrunkActivations.none(),
        },
    )
    yield produced
    plt.close(produced["seen_unseen_curve_plot"])
    plt.close(produced["confusion_matrix_plot"])


def test_run_returns_every_output(outputs):
    assert set(outputs) == OUTPUTS | INTERMEDIATES
    assert isinstance(outputs["seen_unseen_curve_plot"], Figure)
    assert isinstance(outputs["confusion_matrix_plot"], Figure)


def test_run_writes_the_metrics_contract(outputs, chain):
    metrics = outputs["gzsl_metrics"]

    assert metrics["dataset"] == "attribute_world"
    assert metrics["backbone"] == {"arch": "small_cnn", "layer": "block3"}
    assert list(metrics["methods"]) == list(METHODS)
    assert metrics["validation"]["baselines"] == chain.validation_choice["baselines"]
    assert metrics["validation"]["niwt_tuned"] == chain.validation_choice["niwt_tuned"]
    assert "fusion" not in metrics["validation"]["niwt_tuned"]  # the rows alone
    assert metrics["validation"]["ensemble_niwt_tuned_eszsl"] == {
        "fusion": chain.validation_choice["ensemble_niwt_tuned_eszsl"]["fusion"]
    }
    assert set(outputs["gzsl_mlflow_metrics"]) >= {
        "niwt_paper.H",
        "niwt_paper.H_calibrated",
        "eszsl.ausuc",
    }
    assert outputs["baseline_report"] == chain.baseline_report


def test_run_equals_the_direct_node_calls(outputs, chain):
    for method, value in chain.niwt_rows.items():
        assert np.array_equal(outputs["niwt_rows"][method].weight, value.weight), method
    for method, result in chain.gzsl_evaluation.results.items():
        produced = outputs["gzsl_evaluation"].results[method]
        assert np.array_equal(produced.scores, result.scores), method
        assert np.array_equal(produced.predicted, result.predicted), method
        assert produced.metrics == result.metrics, method
    assert outputs["gzsl_metrics"] == chain.gzsl_metrics
    assert outputs["gzsl_mlflow_metrics"] == chain.gzsl_mlflow_metrics
    packaged, direct = outputs["zero_shot_classifier"], chain.zero_shot_classifier
    assert np.array_equal(packaged.rows.weight, direct.rows.weight)
    assert (packaged.gamma, packaged.fusion) == (direct.gamma, direct.fusion)
