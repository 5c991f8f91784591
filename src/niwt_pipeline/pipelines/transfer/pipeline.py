"""The ``transfer`` pipeline: weight transfer + GZSL scoring.

It reads only persisted outputs of the earlier pipelines, so
``kedro run --pipeline=transfer --params=transfer.niwt.lr=0.01`` re-runs just this part.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from niwt_pipeline.pipelines.transfer.nodes import (
    cache_reference,
    fit_baselines,
    report_gzsl,
    score_methods,
    transfer_niwt_rows,
)


def create_pipeline(**kwargs) -> Pipeline:
    """predicted importances + backbone -> NIWT rows, baselines, GZSL metrics and plots."""
    return Pipeline(
        [
            Node(
                cache_reference,
                inputs=["backbone_weights", "backbone_spec", "images", "params:transfer"],
                outputs="reference_cache",
                name="cache_reference",
            ),
            Node(
                transfer_niwt_rows,
                inputs=[
                    "reference_cache",
                    "predicted_importance",
                    "backbone_weights",
                    "backbone_spec",
                    "baseline_models",
                    "validation_choice",
                    "params:transfer",
                ],
                outputs=["niwt_rows", "transfer_report"],
                name="transfer_niwt_rows",
            ),
            Node(
                fit_baselines,
                inputs=[
                    "image_outputs",
                    "images",
                    "backbone_split",
                    "domain_knowledge",
                    "backbone_weights",
                    "backbone_spec",
                    "params:transfer",
                ],
                outputs=["baseline_models", "baseline_report"],
                name="fit_baselines",
            ),
            Node(
                score_methods,
                inputs=[
                    "image_outputs",
                    "images",
                    "classes",
                    "domain_knowledge",
                    "backbone_weights",
                    "backbone_spec",
                    "niwt_rows",
                    "baseline_models",
                    "validation_choice",
                ],
                outputs=["test_scores", "calibration"],
                name="score_methods",
            ),
            Node(
                report_gzsl,
                inputs=[
                    "test_scores",
                    "calibration",
                    "images",
                    "classes",
                    "ingestion_summary",
                    "backbone_spec",
                ],
                outputs=[
                    "gzsl_metrics",
                    "gzsl_mlflow_metrics",
                    "seen_unseen_curve_plot",
                    "confusion_matrix_plot",
                ],
                name="report_gzsl",
            ),
        ]
    )
