"""Explanation nodes: neuron names, textual and visual explanations, their scores, the report.

Thin glue around :mod:`niwt_pipeline.core.explain` (the method) and
:mod:`niwt_pipeline.core.report` (the HTML page).  The predictions explained are NIWT's
validated rows' (``niwt_tuned``: the seen rows plus the rows of the variant the validation
chose) at their calibrated gamma, read from the GZSL evaluation; the gamma was chosen on
pseudo-unseen classes, never on test data.  The textual explanations' evidence and its
weight against the class prior are chosen on the same pseudo-unseen classes
(:func:`choose_explanation_evidence`).
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
    EVIDENCE_KINDS,
    ValidationImages,
    choose_evidence_on_validation,
    choose_example_classes,
    class_prior_ranking,
    contrast_and_diversity_by_group,
    departs_from_prototype,
    example_maps,
    explain_grounded,
    features_of,
    fit_attribute_predictor_on_images,
    json_ready,
    neuron_name_agreement,
    precision_by_group,
    require_image_files,
    runner_up_columns,
    table_class_prototypes,
    table_dimension_names,
    truth_for_explanations,
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
from niwt_pipeline.params import ExplanationParams, MappingParams
from niwt_pipeline.tracking import flatten_metrics

logger = logging.getLogger(__name__)

METHOD = "niwt_tuned"
"""Whose predictions are explained: NIWT's validated rows (seen rows + transferred rows)."""


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


def _class_maps(classes: pd.DataFrame) -> tuple[dict[int, str], dict[int, bool]]:
    ordered = classes.sort_values("class_id")
    ids = ordered["class_id"].astype(int)
    return (
        dict(zip(ids, ordered["name"].astype(str), strict=True)),
        dict(zip(ids, ordered["seen"].astype(bool), strict=True)),
    )


def choose_explanation_evidence(
    validation_image_outputs: dict[str, torch.Tensor],
    validation_roles: pd.DataFrame,
    validation_niwt_rows: RowSet,
    validation_backbone: TrainedBackbone,
    images: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    image_attributes: pd.DataFrame,
    validation_choice: dict[str, Any],
    mapping: MappingParams,
    options: ExplanationParams,
    trunk_activations: TrunkActivations | None = None,
) -> dict[str, Any]:
    """Choose the textual explanations' evidence and its weight against the class prior
    (:func:`niwt_pipeline.core.explain.choose_evidence`) on the validation problem: the
    images of the pseudo-unseen classes, predicted by the validation backbone (which never
    saw them) with the NIWT rows the validation chose for them (``validation_niwt_rows``:
    the explained method's rows, made as the explained rows are made for the unseen
    classes) at the validation's gamma, scored against each image's truth.  Never test
    images.

    A configured ``explanation.evidence`` and ``explanation.evidence_weight`` are used as
    they are (nothing is chosen).

    Returns:
        ``explanation_choice`` (JSON): ``evidence``, ``evidence_weight``, ``chosen_on`` and,
        when chosen, the validation numbers of every candidate.

    Raises:
        InputError: when there is something to choose but no pseudo-unseen image.
    """
    kinds = list(EVIDENCE_KINDS) if options.evidence == "auto" else [options.evidence]
    weights = (
        list(options.evidence_weights)
        if options.evidence_weight is None
        else [float(options.evidence_weight)]
    )
    if len(kinds) == 1 and len(weights) == 1:
        return {
            "evidence": kinds[0],
            "evidence_weight": weights[0],
            "chosen_on": "configuration (explanation.evidence, explanation.evidence_weight)",
        }
    names, _ = table_dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    dk = domain_knowledge_by_class(domain_knowledge)
    outputs = validation_image_outputs
    roles = validation_roles.set_index("image_id").loc[outputs["image_id"].numpy()]
    role = roles["role"].to_numpy()
    labels = roles["class_id"].to_numpy(dtype=np.int64)
    if not (role == "pseudo_unseen").any():
        raise InputError(
            "explanation: the validation problem has no pseudo-unseen images to choose the "
            "explanations' evidence on; set explanation.evidence and explanation.evidence_weight"
        )
    seen = validation_backbone.seen_rows()
    rows = validation_niwt_rows[METHOD]
    return choose_evidence_on_validation(
        kinds,
        weights,
        ValidationImages(
            image_ids=outputs["image_id"].numpy(),
            class_ids=labels,
            roles=role,
            features=outputs["features"].numpy(),
            importance=outputs["importance_gt"].numpy(),
        ),
        validation_backbone,
        seen + rows,
        float(validation_choice["methods"][METHOD]["gamma"]),
        images,
        image_attributes,
        dk,
        top_k=options.top_k,
        attribute_ridge_alpha=options.attribute_ridge_alpha,
        inverse_ridge_alpha=mapping.inverse_ridge_alpha,
        batch_size=options.batch_size,
        device=options.device,
        trunk=trunk_activations,
    )


def explain_predictions(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    classifier_domain_knowledge: pd.DataFrame,
    image_attributes: pd.DataFrame,
    image_outputs: dict[str, torch.Tensor],
    backbone: TrainedBackbone,
    niwt_rows: RowSet,
    inverse_map_weights: dict[str, torch.Tensor],
    gzsl_evaluation: GZSLEvaluation,
    explanation_choice: dict[str, Any],
    options: ExplanationParams,
    trunk_activations: TrunkActivations | None = None,
) -> pd.DataFrame:
    """Explain NIWT's calibrated prediction on every test image (or a seeded sample of
    ``explanation.max_images``) in domain-knowledge words: the predicted class's prior
    blended with the image's evidence as ``explanation_choice`` says
    (:func:`niwt_pipeline.core.explain.explain_grounded`), contrastive with the runner-up
    class when ``explanation.contrast_weight > 0``, beside the paper's explanation (with a
    frozen trunk, from its stored activations).

    Returns:
        One row per explained image (see
        :func:`niwt_pipeline.core.explain.explain_grounded`).
    """
    started = time.perf_counter()
    names, _ = table_dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    class_name, class_seen = _class_maps(classes)
    result = gzsl_evaluation.results[METHOD]
    calibrated = result.scores.astype(np.float64) - result.gamma * gzsl_evaluation.seen[None, :]
    runner_up = gzsl_evaluation.class_ids[
        runner_up_columns(calibrated, gzsl_evaluation.columns_of(result.predicted))
    ]
    table = images.set_index("image_id").loc[gzsl_evaluation.image_ids].reset_index()
    table["predicted_class_id"] = result.predicted
    table["runner_up_class_id"] = runner_up
    table = sample_rows(table, options.max_images, options.seed)
    without = sorted(set(class_name) - set(table["class_id"].astype(int)))
    if without:
        logger.info(
            "textual explanations: %d class(es) without test images to explain, skipped: %s",
            len(without),
            ", ".join(class_name[c] for c in without[:10]) + (", ..." if len(without) > 10 else ""),
        )
    evidence = str(explanation_choice["evidence"])
    features = predictor = None
    if evidence == "features":
        dk = domain_knowledge_by_class(domain_knowledge)
        seen_train = images[
            (images["split"] == "trainval")
            & images["class_id"].isin(backbone.seen_rows().class_ids)
        ]
        predictor, fitted_on = fit_attribute_predictor_on_images(
            features_of(image_outputs, seen_train["image_id"].to_numpy(), "image_outputs"),
            seen_train,
            image_attributes,
            dk,
            options.attribute_ridge_alpha,
        )
        logger.info("attribute predictor: %s", fitted_on)
        features = features_of(image_outputs, table["image_id"].to_numpy(), "image_outputs")
    frame = explain_grounded(
        backbone,
        backbone.seen_rows() + niwt_rows[METHOD],
        InverseMap.from_state(inverse_map_weights),
        table,
        domain_knowledge_by_class(classifier_domain_knowledge),
        names,
        class_name,
        class_seen,
        evidence=evidence,
        weight=float(explanation_choice["evidence_weight"]),
        contrast_weight=options.contrast_weight,
        top_k=options.top_k,
        batch_size=options.batch_size,
        device=options.device,
        trunk=trunk_activations,
        features=features,
        predictor=predictor,
    )
    logger.info(
        "textual explanations (%s evidence, weight %.2f, contrast %.2f): %d test images "
        "(%d predicted unseen) at gamma %.3g in %.1f s; correct %.1f%%",
        evidence,
        float(explanation_choice["evidence_weight"]),
        options.contrast_weight,
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
    images: pd.DataFrame,
    image_attributes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    classifier_domain_knowledge: pd.DataFrame,
    validation_choice: dict[str, Any],
    explanation_choice: dict[str, Any],
    options: ExplanationParams,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """How good the explanations are, as numbers (JSON and MLflow metrics): the agreement
    of the two neuron namings; precision@k of the textual explanations against each image's
    truth, overall, on seen / unseen classes and on the images that depart from their class's
    prototype (:func:`niwt_pipeline.core.explain.precision_by_group`); how contrastive
    and how varied they are (:func:`niwt_pipeline.core.explain.
    contrast_and_diversity_by_group`); each beside the paper's explanation
    (``inverse_map``), the class prior and random dimensions.  The truth comes from the
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
    class_dk = domain_knowledge_by_class(classifier_domain_knowledge)
    scored, truth, source = truth_for_explanations(textual_explanations, image_attributes, dk)
    departing = None
    if source["source_of_truth"] == "image_attributes":
        departing = departs_from_prototype(
            truth,
            scored["true_class_id"].to_numpy(),
            table_class_prototypes(images, image_attributes, dk),
        )
    rankings = {
        "explanation": scored[[f"dimension_id_{r + 1}" for r in range(k)]].to_numpy(np.int64),
        "class_prior": class_prior_ranking(class_dk, scored["predicted_class_id"].to_numpy(), k),
    }
    paper_columns = [f"inverse_map_dimension_id_{r + 1}" for r in range(k)]
    if all(c in scored.columns for c in paper_columns):
        rankings["inverse_map"] = scored[paper_columns].to_numpy(np.int64)
    groups = precision_by_group(
        scored,
        truth,
        class_dk,
        k,
        rankings={n: v for n, v in rankings.items() if n == "inverse_map"},
        departing=departing,
    )
    contrast, diversity = contrast_and_diversity_by_group(
        scored, rankings, class_dk, names, k, departing=departing, seed=options.seed
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
                "explanation": {
                    "evidence": explanation_choice.get("evidence"),
                    "evidence_weight": explanation_choice.get("evidence_weight"),
                    "contrast_weight": float(options.contrast_weight),
                    "chosen_on": explanation_choice.get("chosen_on"),
                    "validation_precision_at_k": explanation_choice.get(
                        "validation_precision_at_k"
                    ),
                },
                "departing": "An image departs from its class's prototype (the attributes more "
                "than half of the class's images show) when it shows another attribute"
                if departing is not None
                else "not scored: no per-image attributes",
                "n_images_explained": int(len(textual_explanations)),
                "n_images_scored": int(len(scored)),
                "precision_at_k": groups,
                "contrastive_share": contrast,
                "naming_diversity": diversity,
            },
        }
    )
    mlflow_metrics = {
        **flatten_metrics(
            "neuron_names",
            {"agreement": agreement.agreement, "random_baseline": agreement.random_baseline},
        ),
        **flatten_metrics(f"precision_at_{k}", metrics["textual"]["precision_at_k"]),
        **flatten_metrics("contrastive_share", metrics["textual"]["contrastive_share"]),
        **flatten_metrics("naming_diversity", metrics["textual"]["naming_diversity"]),
    }
    unseen = metrics["textual"]["precision_at_k"].get("unseen", {})
    logger.info(
        "explanation scores (%s): precision@%d unseen %s vs class prior %s, inverse map %s, "
        "random %s; neuron-name agreement %.3f vs random %.3f",
        source["source_of_truth"],
        k,
        _pct(unseen.get("all")),
        _pct(unseen.get("class_prior")),
        _pct(unseen.get("inverse_map")),
        _pct(unseen.get("random")),
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
