"""The ``explanation`` pipeline.

It reads only persisted outputs of the earlier pipelines, so
``kedro run --pipelines=explanation --params=explanation.top_k=5`` re-runs just this part.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.explanation.nodes import (
    build_run_report,
    choose_explanation_evidence,
    explain_predictions,
    name_neurons,
    score_explanations,
    visualise_explanations,
)


def create_pipeline(**kwargs) -> Pipeline:
    """models + GZSL evaluation (+ the validation problem, to choose the explanations'
    evidence) -> neuron names, explanations, their scores and the report."""
    return Pipeline(
        [
            Node(
                name_neurons,
                inputs=[
                    "mapper_weights",
                    "image_importance",
                    "domain_knowledge",
                    "params:explanation",
                ],
                outputs=["neuron_names", "neuron_names_table"],
                name="name_neurons",
            ),
            Node(
                choose_explanation_evidence,
                inputs=[
                    "validation_image_outputs",
                    "validation_roles",
                    "validation_niwt_rows",
                    "validation_backbone",
                    "images",
                    "domain_knowledge",
                    "image_attributes",
                    "validation_choice",
                    "params:mapping",
                    "params:explanation",
                    "trunk_activations",
                ],
                outputs="explanation_choice",
                name="choose_explanation_evidence",
            ),
            Node(
                explain_predictions,
                inputs=[
                    "images",
                    "classifier_classes",
                    "domain_knowledge",
                    "classifier_domain_knowledge",
                    "image_attributes",
                    "image_outputs",
                    "backbone",
                    "niwt_rows",
                    "inverse_map_weights",
                    "gzsl_evaluation",
                    "explanation_choice",
                    "params:explanation",
                    "trunk_activations",
                ],
                outputs="textual_explanations",
                name="explain_predictions",
            ),
            Node(
                visualise_explanations,
                inputs=[
                    "textual_explanations",
                    "classifier_classes",
                    "backbone",
                    "niwt_rows",
                    "params:explanation",
                ],
                outputs=["explanation_examples", "gradcam_examples_plot"],
                name="visualise_explanations",
            ),
            Node(
                score_explanations,
                inputs=[
                    "neuron_names",
                    "textual_explanations",
                    "images",
                    "image_attributes",
                    "domain_knowledge",
                    "classifier_domain_knowledge",
                    "validation_choice",
                    "explanation_choice",
                    "params:explanation",
                ],
                outputs=["explanation_metrics", "explanation_mlflow_metrics"],
                name="score_explanations",
            ),
            Node(
                build_run_report,
                inputs=[
                    "ingestion_summary",
                    "gzsl_metrics",
                    "gzsl_evaluation",
                    "classifier_classes",
                    "textual_explanations",
                    "explanation_examples",
                    "neuron_names",
                    "explanation_metrics",
                    "backbone_report",
                    "transfer_report",
                    "params:explanation",
                ],
                outputs="report",
                name="build_run_report",
            ),
        ]
    )
