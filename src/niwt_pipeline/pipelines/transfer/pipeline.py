"""The ``transfer`` pipeline: weight transfer, baselines, and the GZSL evaluation.

It reads only persisted outputs of the earlier pipelines, so
``kedro run --pipelines=transfer --params=transfer.niwt.lr=0.01`` re-runs just this part.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.transfer.nodes import (
    add_extra_classes,
    cache_reference,
    evaluate_gzsl,
    fit_baseline_models,
    package_classifier,
    report_gzsl,
    transfer_niwt_rows,
)


def create_pipeline(**kwargs) -> Pipeline:
    """predicted importances + backbone -> NIWT rows, baselines, GZSL evaluation and plots,
    and the packaged zero-shot classifier."""
    return Pipeline(
        [
            Node(
                add_extra_classes,
                inputs=[
                    "extra_classes",
                    "domain_knowledge_source",
                    "domain_knowledge_info",
                    "classes",
                    "domain_knowledge",
                ],
                outputs=["classifier_classes", "classifier_domain_knowledge"],
                name="add_extra_classes",
            ),
            Node(
                cache_reference,
                inputs=["backbone", "images", "params:transfer", "trunk_activations"],
                outputs="reference_cache",
                name="cache_reference",
            ),
            Node(
                fit_baseline_models,
                inputs=[
                    "image_outputs",
                    "images",
                    "backbone_roles",
                    "classifier_domain_knowledge",
                    "backbone",
                    "validation_choice",
                    "params:transfer",
                ],
                outputs=[
                    "baseline_rows",
                    "eszsl_model",
                    "ale_model",
                    "sje_model",
                    "devise_model",
                    "sae_model",
                    "fclswgan_generator",
                    "baseline_report",
                ],
                name="fit_baseline_models",
            ),
            Node(
                transfer_niwt_rows,
                inputs=[
                    "reference_cache",
                    "predicted_importance",
                    "mapper_weights",
                    "classifier_classes",
                    "classifier_domain_knowledge",
                    "backbone",
                    "baseline_rows",
                    "validation_choice",
                    "image_outputs",
                    "images",
                    "backbone_roles",
                    "params:transfer",
                ],
                outputs=["niwt_rows", "transfer_report"],
                name="transfer_niwt_rows",
            ),
            Node(
                evaluate_gzsl,
                inputs=[
                    "image_outputs",
                    "images",
                    "classifier_classes",
                    "classifier_domain_knowledge",
                    "backbone",
                    "niwt_rows",
                    "baseline_rows",
                    "eszsl_model",
                    "ale_model",
                    "sje_model",
                    "devise_model",
                    "sae_model",
                    "validation_choice",
                ],
                outputs="gzsl_evaluation",
                name="evaluate_gzsl",
            ),
            Node(
                report_gzsl,
                inputs=[
                    "gzsl_evaluation",
                    "validation_choice",
                    "classifier_classes",
                    "ingestion_summary",
                    "backbone",
                ],
                outputs=[
                    "gzsl_metrics",
                    "gzsl_mlflow_metrics",
                    "seen_unseen_curve_plot",
                    "confusion_matrix_plot",
                ],
                name="report_gzsl",
            ),
            Node(
                package_classifier,
                inputs=[
                    "backbone",
                    "niwt_rows",
                    "eszsl_model",
                    "validation_choice",
                    "classifier_classes",
                    "classifier_domain_knowledge",
                    "inverse_map_weights",
                    "domain_knowledge_info",
                ],
                outputs="zero_shot_classifier",
                name="package_classifier",
            ),
        ]
    )
