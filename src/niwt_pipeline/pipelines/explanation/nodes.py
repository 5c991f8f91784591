"""Explanation nodes: neuron names, textual and visual explanations, their scores, the report.

Thin glue around :mod:`niwt_pipeline.core.explain` (the method) and
:mod:`niwt_pipeline.core.report` (the HTML page).  The predictions explained are NIWT's
(``niwt``: the seen rows plus the rows with the configured settings) at its calibrated
gamma, read from the GZSL evaluation; the gamma was chosen on pseudo-unseen classes,
never on test data.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain import (
    choose_example_classes,
    example_maps,
    json_ready,
    neuron_name_agreement,
    precision_by_group,
    require_image_files,
    table_dimension_names,
    truth_for_explanations,
)
from niwt_pipeline.core.explain import (
    explain_predictions as explain_images,
)
from niwt_pipeline.core.explain import (
    name_neurons as name_every_neuron,
)
from niwt_pipeline.core.gzsl import GZSLEvaluation
from niwt_pipeline.core.imageset import sample_rows
from niwt_pipeline.core.importance import importance_columns
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.core.report import (
    ReportInputs,
    build_report,
    example_rows,
    explanation_grid,
    gzsl_views,
    neuron_names_markdown,
    stage_timings,
)
from niwt_pipeline.core.rows import RowSet
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.params import ExplanationParams
from niwt_pipeline.tracking import flatten_metrics

logger = logging.getLogger(__name__)

METHOD = "niwt"
"""Whose predictions are explained: NIWT's rows (seen rows + transferred rows)."""


def _check_top_k(top_k: int, n_dims: int) -> None:
    if top_k > n_dims:
        raise InputError(
            f"parameters [explanation.top_k]: {top_k} is more than the {n_dims} "
            "domain-knowledge dimensions"
        )


def name_neurons(
    mapper_weights: dict[str, torch.Tensor],
    image_importance: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    options: ExplanationParams,
) -> tuple[pd.DataFrame, str]:
    """Name every neuron of the importance layer by its top domain-knowledge dimensions,
    from the mapper's weights and, independently, from the correlation of the neuron's
    importance with each dimension over the seen training images.

    Returns:
        ``neuron_names`` (``source``, ``neuron``, ``rank``, ``dimension``, ``score``) and
        its markdown rendering with the agreement.
    """
    started = time.perf_counter()
    names, named = table_dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    dk = domain_knowledge_by_class(domain_knowledge)
    result = name_every_neuron(
        LinearMapper.from_state(mapper_weights),
        image_importance[importance_columns(image_importance)].to_numpy(dtype=np.float64),
        dk.loc[image_importance["class_id"].to_numpy()].to_numpy(dtype=np.float64),
        names,
        options.top_k,
        l2_normalise=options.covariation_l2_normalise,
    )
    markdown = neuron_names_markdown(result.table, result.agreement.as_dict())
    if not named:
        markdown += "\nThe domain knowledge has no usable dimension names: indices are shown.\n"
    logger.info(
        "neuron names: %d neurons x top-%d of %d dimensions in %.1f s; mapper vs covariation "
        "agreement %.3f (random %.3f)",
        result.agreement.n_neurons,
        options.top_k,
        len(names),
        time.perf_counter() - started,
        result.agreement.agreement,
        result.agreement.random_baseline,
    )
    return result.table, markdown


def explain_predictions(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone: TrainedBackbone,
    niwt_rows: RowSet,
    inverse_map_weights: dict[str, torch.Tensor],
    gzsl_evaluation: GZSLEvaluation,
    options: ExplanationParams,
    trunk_activations: TrunkActivations | None = None,
) -> pd.DataFrame:
    """Explain NIWT's calibrated prediction on every test image (or a seeded sample of
    ``explanation.max_images``) in domain-knowledge words (with a frozen trunk, from its
    stored activations).

    Returns:
        One row per explained image (see
        :func:`niwt_pipeline.core.explain.explain_predictions`).
    """
    started = time.perf_counter()
    names, _ = table_dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    ordered = classes.sort_values("class_id")
    class_name = dict(
        zip(ordered["class_id"].astype(int), ordered["name"].astype(str), strict=True)
    )
    class_seen = dict(
        zip(ordered["class_id"].astype(int), ordered["seen"].astype(bool), strict=True)
    )
    result = gzsl_evaluation.results[METHOD]
    table = images.set_index("image_id").loc[gzsl_evaluation.image_ids].reset_index()
    table["predicted_class_id"] = result.predicted
    table = sample_rows(table, options.max_images, options.seed)
    without = sorted(set(class_name) - set(table["class_id"].astype(int)))
    if without:
        logger.info(
            "textual explanations: %d class(es) without test images to explain, skipped: %s",
            len(without),
            ", ".join(class_name[c] for c in without[:10]) + (", ..." if len(without) > 10 else ""),
        )
    frame = explain_images(
        backbone,
        backbone.seen_rows() + niwt_rows[METHOD],
        InverseMap.from_state(inverse_map_weights),
        table,
        names,
        class_name,
        class_seen,
        top_k=options.top_k,
        batch_size=options.batch_size,
        device=options.device,
        trunk=trunk_activations,
    )
    logger.info(
        "textual explanations: %d test images (%d predicted unseen) at gamma %.3g in %.1f s; "
        "correct %.1f%%",
        len(frame),
        int((~frame["predicted_seen"]).sum()),
        result.gamma,
        time.perf_counter() - started,
        100.0 * float(frame["correct"].mean()) if len(frame) else math.nan,
    )
    return frame


def visualise_explanations(
    textual_explanations: pd.DataFrame,
    classes: pd.DataFrame,
    backbone: TrainedBackbone,
    niwt_rows: RowSet,
    options: ExplanationParams,
) -> tuple[dict[str, torch.Tensor], Figure]:
    """Grad-CAM maps of the predicted row and of the true class's row (NIWT's new rows for
    unseen classes, the trained rows for seen ones) on a few test images per class.

    Returns:
        ``explanation_examples``: ``image_id`` (N,), ``original``, ``cam_predicted``,
        ``cam_true`` (N, H, W, 3) uint8; and a figure of them beside each textual explanation.
    """
    visual = options.visual
    started = time.perf_counter()
    chosen = choose_example_classes(classes, textual_explanations, visual.max_classes)
    picked = [
        sample_rows(
            textual_explanations[textual_explanations["true_class_id"] == cid].sort_values(
                "image_id"
            ),
            visual.images_per_class,
            options.seed,
        )
        for cid in chosen
    ]
    table = (
        pd.concat(picked, ignore_index=True) if picked else textual_explanations.iloc[:0]
    ).reset_index(drop=True)
    require_image_files(table["path"].tolist())
    cut = backbone.on(resolve_device(options.device))
    examples = example_maps(
        cut, backbone.spec, backbone.seen_rows() + niwt_rows[METHOD], table, visual.alpha
    )
    rows = example_rows(textual_explanations, examples)
    figure = explanation_grid(
        rows,
        title=f"Grad-CAM of NIWT's rows at layer {backbone.spec.layer} "
        f"({sum(not r.true_seen for r in rows)} unseen-class and "
        f"{sum(r.true_seen for r in rows)} seen-class test images)",
    )
    logger.info(
        "visual explanations: Grad-CAM of %d test images from %d classes in %.1f s",
        len(table),
        len(chosen),
        time.perf_counter() - started,
    )
    return examples, figure


def score_explanations(
    neuron_names: pd.DataFrame,
    textual_explanations: pd.DataFrame,
    image_attributes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    classifier_domain_knowledge: pd.DataFrame,
    validation_choice: dict[str, Any],
    options: ExplanationParams,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """How good the explanations are, as numbers (JSON and MLflow metrics): the agreement
    of the two neuron namings, and precision@k of the textual explanations against each
    image's truth beside the random and class-prior baselines
    (:func:`niwt_pipeline.core.explain.precision_by_group`).  The truth comes from the
    dataset's classes (``domain_knowledge``); the class prior names the *predicted* class's
    strongest dimensions, and a prediction may be a class defined by its description alone,
    so the prior reads every class of the classifier (``classifier_domain_knowledge``)."""
    k = options.top_k
    names, named = table_dimension_names(domain_knowledge)
    agreement = neuron_name_agreement(
        neuron_names[neuron_names["source"] == "mapper"],
        neuron_names[neuron_names["source"] == "covariation"],
        k,
        n_dimensions=len(names),
    )
    dk = domain_knowledge_by_class(domain_knowledge)
    scored, truth, source = truth_for_explanations(textual_explanations, image_attributes, dk)
    groups = precision_by_group(
        scored, truth, domain_knowledge_by_class(classifier_domain_knowledge), k
    )
    metrics = json_ready(
        {
            "method": METHOD,
            "top_k": k,
            "dimension_names": "domain-knowledge column names"
            if named
            else "indices dim_000.. (the domain knowledge has no usable dimension names)",
            "neuron_names": {
                **agreement.as_dict(),
                "covariation": "Pearson correlation, over the seen training images, of each "
                "neuron's importance"
                + (" (rows L2-normalised)" if options.covariation_l2_normalise else "")
                + " with the image's class-level domain knowledge",
            },
            "textual": {
                **source,
                "gamma": float(validation_choice["methods"][METHOD]["gamma"]),
                "n_images_explained": int(len(textual_explanations)),
                "n_images_scored": int(len(scored)),
                "precision_at_k": groups,
            },
        }
    )
    mlflow_metrics = {
        **flatten_metrics(
            "neuron_names",
            {"agreement": agreement.agreement, "random_baseline": agreement.random_baseline},
        ),
        **flatten_metrics(f"precision_at_{k}", metrics["textual"]["precision_at_k"]),
    }
    unseen = metrics["textual"]["precision_at_k"].get("unseen", {})
    logger.info(
        "explanation scores (%s): precision@%d correct unseen %s vs random %s; neuron-name "
        "agreement %.3f vs random %.3f",
        source["source_of_truth"],
        k,
        _pct(unseen.get("correct")),
        _pct(unseen.get("random_correct")),
        agreement.agreement,
        agreement.random_baseline,
    )
    return metrics, mlflow_metrics


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def build_run_report(
    ingestion_summary: dict[str, Any],
    gzsl_metrics: dict[str, Any],
    gzsl_evaluation: GZSLEvaluation,
    classes: pd.DataFrame,
    textual_explanations: pd.DataFrame,
    explanation_examples: dict[str, torch.Tensor],
    neuron_names: pd.DataFrame,
    explanation_metrics: dict[str, Any],
    backbone_report: dict[str, Any],
    transfer_report: dict[str, Any],
    options: ExplanationParams,
) -> str:
    """One self-contained HTML page: data and split, GZSL metrics of NIWT and the baselines,
    seen-unseen curves, confusion matrix and per-class accuracy (drawn from the GZSL
    evaluation), example explanations with their Grad-CAM maps, the explanation scores,
    the neuron names and the stage timings."""
    started = time.perf_counter()
    views = gzsl_views(gzsl_evaluation, classes, confusion_method=METHOD)
    examples = example_rows(textual_explanations, explanation_examples)
    notes = []
    if not str(explanation_metrics.get("dimension_names", "")).startswith("domain-knowledge"):
        notes.append(f"Dimension names: {explanation_metrics.get('dimension_names')}.")
    if views.classes_without_images:
        notes.append(
            f"{len(views.classes_without_images)} class(es) without test images were skipped "
            "by the explanations."
        )
    page = build_report(
        ReportInputs(
            summary=ingestion_summary,
            gzsl=gzsl_metrics,
            views=views,
            examples=examples,
            explanation_metrics=explanation_metrics,
            neuron_names=neuron_names,
            timings=stage_timings(backbone_report, transfer_report),
            max_neurons=options.report.max_neurons,
            extra_notes=notes,
        )
    )
    for figure in (views.curve_figure, views.confusion_figure, views.accuracy_figure):
        figure.clear()
    logger.info(
        "run report: %d methods, %d example explanations, %.0f kB of HTML in %.1f s",
        len(gzsl_evaluation.methods),
        len(examples),
        len(page) / 1024,
        time.perf_counter() - started,
    )
    return page
