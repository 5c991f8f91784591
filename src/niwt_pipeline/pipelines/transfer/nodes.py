"""Transfer nodes: reference cache, NIWT rows, baselines, and the GZSL evaluation of every
method (thin calls into ``niwt_pipeline.core``)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from niwt_pipeline.core.baseline_models import fit_every_baseline
from niwt_pipeline.core.baselines import ESZSLModel, SAEModel
from niwt_pipeline.core.classifier import ZeroShotClassifier
from niwt_pipeline.core.compatibility import CompatibilityModel
from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.explain.common import table_dimension_names
from niwt_pipeline.core.extra import ExtraClasses, add_described_classes, new_class_targets
from niwt_pipeline.core.generative import FeatureGenerator
from niwt_pipeline.core.gzsl import GZSLEvaluation, evaluate_methods
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.core.methods import (
    ENSEMBLE,
    METHODS,
    ensemble_weight,
    method_scores,
    validated_baselines,
)
from niwt_pipeline.core.metrics import confusion_matrix
from niwt_pipeline.core.report import plot_confusion, plot_seen_unseen_curves
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.transfer import (
    NIWTVariant,
    ReferenceCache,
    make_variant,
    reference_cache,
    variant_rows,
)
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.params import TransferParams
from niwt_pipeline.tracking import as_metrics

logger = logging.getLogger(__name__)


def add_extra_classes(
    extra_classes: ExtraClasses,
    domain_knowledge_source: Any,
    domain_knowledge_info: dict[str, Any],
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every class the classifier scores: the dataset's, then the classes of
    ``extra_classes`` embedded or scaled by the domain-knowledge source exactly as the
    dataset's were (its recorded state), with the next class ids.

    Returns:
        ``classifier_classes`` (``class_id``, ``name``, ``seen``) and
        ``classifier_domain_knowledge`` (``class_id``, ``name``, dimensions).
    """
    if not len(extra_classes):
        return classes.copy(), domain_knowledge.copy()
    rows = domain_knowledge_source.describe_extra(
        extra_classes, domain_knowledge_info.get("state") or {}, list(domain_knowledge.columns[2:])
    )
    all_classes, all_dk = add_described_classes(rows, extra_classes, classes, domain_knowledge)
    logger.info(
        "%d class(es) defined by their description alone (%s): %s",
        len(rows),
        extra_classes.path,
        ", ".join(map(str, rows.index[:10])),
    )
    return all_classes, all_dk


def cache_reference(
    backbone: TrainedBackbone,
    images: pd.DataFrame,
    options: TransferParams,
    trunk_activations: TrunkActivations | None = None,
) -> ReferenceCache:
    """What weight transfer needs of the reference images, computed once: G (N, K, D) when
    it fits in ``transfer.reference.gram_memory_budget_mb``, else the activations (with a
    frozen trunk, read from its stored activations)."""
    config = options.reference.config()
    return reference_cache(backbone, images, config, options.device, trunk_activations)


def _image_rows(image_outputs: dict[str, Any], images: pd.DataFrame) -> pd.DataFrame:
    """``images`` rows in the order of ``image_outputs`` (which holds the features)."""
    return images.set_index("image_id").loc[image_outputs["image_id"].numpy()].reset_index()


def _training_features(
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    backbone_roles: pd.DataFrame,
    seen: ClassRows,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and class ids (N,) of the backbone's training images."""
    table = _image_rows(image_outputs, images)
    train_ids = set(backbone_roles.loc[backbone_roles["role"] == "train", "image_id"])
    labels = table["class_id"].to_numpy()
    mask = table["image_id"].isin(train_ids).to_numpy() & np.isin(labels, seen.class_ids)
    return image_outputs["features"].numpy()[mask], labels[mask]


def fit_baseline_models(
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    backbone_roles: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone: TrainedBackbone,
    validation_choice: dict[str, Any],
    options: TransferParams,
) -> tuple[
    RowSet,
    ESZSLModel,
    CompatibilityModel,
    CompatibilityModel,
    CompatibilityModel,
    SAEModel,
    FeatureGenerator,
    dict[str, Any],
]:
    """Every baseline on the backbone's training features, for every class the backbone
    was not trained on, with the settings the validation chose
    (``validation_choice["baselines"]``): ridge rows (``weight_regression``), ESZSL, ALE,
    SJE, DeViSE, SAE and f-CLSWGAN (:func:`~niwt_pipeline.core.baseline_models.
    fit_every_baseline`).

    Returns:
        The ``weight_regression`` and ``fclswgan`` rows, the fitted ESZSL, ALE, SJE,
        DeViSE and SAE, f-CLSWGAN's generator, and a report (JSON).

    Raises:
        InputError: a ``validation_choice.json`` without baseline settings (earlier version).
    """
    seen = backbone.seen_rows()
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    new_ids = np.setdiff1d(np.arange(len(dk)), seen.class_ids)
    features, labels = _training_features(image_outputs, images, backbone_roles, seen)
    config = validated_baselines(validation_choice)
    fitted = fit_every_baseline(
        features,
        labels,
        seen,
        dk,
        new_ids,
        config,
        options.compatibility.config(),
        options.fclswgan,
    )
    report = {
        "source": "settings chosen by the validation (validation_choice.json: baselines)",
        "settings": asdict(config),
        "compatibility": options.compatibility.model_dump(),
        "fclswgan": fitted.generator.config.to_dict()
        | {"pretrain_accuracy": fitted.generator.pretrain_accuracy},
    }
    logger.info("baselines fitted with %s", report["settings"])
    compatibility = fitted.compatibility
    return (
        fitted.rows,
        fitted.eszsl,
        compatibility["ale"],
        compatibility["sje"],
        compatibility["devise"],
        fitted.sae,
        fitted.generator,
        report,
    )


def transfer_niwt_rows(
    reference_cache: ReferenceCache,
    predicted_importance: pd.DataFrame,
    mapper_weights: dict[str, torch.Tensor],
    classifier_classes: pd.DataFrame,
    classifier_domain_knowledge: pd.DataFrame,
    backbone: TrainedBackbone,
    baseline_rows: RowSet,
    validation_choice: dict[str, Any],
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    backbone_roles: pd.DataFrame,
    options: TransferParams,
) -> tuple[RowSet, dict[str, Any]]:
    """NIWT rows for every class the backbone was not trained on (the dataset's unseen
    classes and those defined by description alone), whose importance on the reference
    images matches the mapper's prediction, twice: with the paper's settings (``niwt_paper``,
    ``transfer.paper``) and with the variant the validation chose (``niwt_tuned``; its
    logit matching, if chosen, on the backbone's training images).

    Returns:
        The rows of both, and a report (JSON: settings, steps, losses, timings).
    """
    seen = backbone.seen_rows()
    class_ids, target = new_class_targets(
        predicted_importance,
        LinearMapper.from_state(mapper_weights),
        classifier_classes,
        classifier_domain_knowledge,
    )
    budget = options.reference.config().gram_budget_bytes
    rows, results = RowSet(), {}
    variants = {
        "niwt_paper": NIWTVariant(options.paper_config()),
        "niwt_tuned": make_variant(options.niwt, validation_choice["niwt_tuned"]),
    }
    training = (
        _training_features(image_outputs, images, backbone_roles, seen)
        if any(v.logit_matching != "none" for v in variants.values())
        else None
    )
    for method, variant in variants.items():
        rows[method], results[method] = variant_rows(
            method,
            target,
            class_ids,
            seen,
            variant,
            reference_cache,
            backbone,
            baseline_rows["weight_regression"],
            gram_budget_bytes=budget,
            training=training,
        )
        logger.info(
            "NIWT transfer (%s): %d rows, %d steps (%s, loss %.4f)",
            method,
            len(class_ids),
            results[method].steps,
            results[method].stopped_reason,
            results[method].best_loss,
        )
    seen_norm = torch.as_tensor(seen.weight).norm(dim=1).mean()
    report = {
        "config": asdict(options.niwt),
        "niwt_paper_config": asdict(variants["niwt_paper"].config),
        "niwt_tuned_variant": validation_choice["niwt_tuned"],
        "reference_images": options.reference.model_dump(),
        **{
            method: {
                "steps": r.steps,
                "best_step": r.best_step,
                "best_loss": r.best_loss,
                "stopped_reason": r.stopped_reason,
                "method": r.method,
                "timings": r.timings,
                "row_norm_ratio": float(r.weight.norm(dim=1).mean() / seen_norm),
            }
            for method, r in results.items()
        },
    }
    return rows, report


def evaluate_gzsl(
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone: TrainedBackbone,
    niwt_rows: RowSet,
    baseline_rows: RowSet,
    eszsl_model: ESZSLModel,
    ale_model: CompatibilityModel,
    sje_model: CompatibilityModel,
    devise_model: CompatibilityModel,
    sae_model: SAEModel,
    validation_choice: dict[str, Any],
) -> GZSLEvaluation:
    """Score every method on the test images over all classes and evaluate it once, each
    at the calibration gamma the validation pipeline chose (no test data involved)."""
    ordered = classes.sort_values("class_id")
    class_ids = ordered["class_id"].to_numpy(dtype=np.int64)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    table = _image_rows(image_outputs, images)
    test = table["split"].isin(["test_seen", "test_unseen"]).to_numpy()
    scores = method_scores(
        image_outputs["features"].numpy().astype(np.float64)[test],
        class_ids,
        backbone.seen_rows(),
        niwt_rows,
        baseline_rows,
        {
            "eszsl": eszsl_model,
            "ale": ale_model,
            "sje": sje_model,
            "devise": devise_model,
            "sae": sae_model,
        },
        dk[class_ids],
        ensemble_weight(validation_choice),
    )
    return evaluate_methods(
        scores,
        table["image_id"].to_numpy()[test],
        table["class_id"].to_numpy()[test],
        class_ids,
        ordered["seen"].to_numpy(dtype=bool),
        {m: validation_choice["methods"][m]["gamma"] for m in METHODS},
    )


def report_gzsl(
    gzsl_evaluation: GZSLEvaluation,
    validation_choice: dict[str, Any],
    classes: pd.DataFrame,
    ingestion_summary: dict[str, Any],
    backbone: TrainedBackbone,
) -> tuple[dict[str, Any], dict[str, Any], Figure, Figure]:
    """The metrics contract (percent), the same numbers as MLflow metrics, and two plots:
    the seen-unseen curves and the confusion matrix of NIWT's validated rows (``niwt_tuned``)
    at their calibrated gamma."""
    methods = gzsl_evaluation.metrics_percent()
    for method, values in methods.items():
        logger.info(
            "%s: S %.1f U %.1f H %.1f | H_calibrated %.1f (gamma %.3g) | AUSUC %.1f | ZSL %.1f",
            method,
            values["S"],
            values["U"],
            values["H"],
            values["H_calibrated"],
            values["gamma"],
            values["ausuc"],
            values["zsl_top1"],
        )
    names = classes.set_index("class_id").loc[gzsl_evaluation.class_ids, "name"].tolist()
    metrics = {
        "dataset": ingestion_summary["dataset"],
        "domain_knowledge": ingestion_summary.get("domain_knowledge"),
        "backbone": {"arch": backbone.spec.arch, "layer": backbone.spec.layer},
        "n_test_images": int(len(gzsl_evaluation.image_ids)),
        "classes": gzsl_evaluation.class_coverage(names),
        "methods": methods,
        "validation": {
            "source": "validation pipeline: pseudo-unseen classes, a backbone that never saw them",
            **{
                key: validation_choice[key]
                for key in (
                    "pseudo_unseen_class_ids",
                    "mapper",
                    "niwt_paper",
                    "niwt_tuned",
                    ENSEMBLE,
                    "baselines",
                )
            },
        },
    }
    mlflow_metrics = as_metrics(
        {f"{m}.{key}": value for m, values in methods.items() for key, value in values.items()}
    )
    results = gzsl_evaluation.results
    curve_plot = plot_seen_unseen_curves(
        {m: (r.curve_s, r.curve_u) for m, r in results.items()},
        {m: (r.metrics["S_calibrated"], r.metrics["U_calibrated"]) for m, r in results.items()},
    )
    confusion = confusion_matrix(
        gzsl_evaluation.columns_of(results["niwt_tuned"].predicted),
        gzsl_evaluation.label_columns,
        len(gzsl_evaluation.class_ids),
    )
    confusion_plot = plot_confusion(confusion, names, gzsl_evaluation.seen)
    return metrics, mlflow_metrics, curve_plot, confusion_plot


def package_classifier(
    backbone: TrainedBackbone,
    niwt_rows: RowSet,
    eszsl_model: ESZSLModel,
    validation_choice: dict[str, Any],
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    inverse_map_weights: dict[str, torch.Tensor],
    domain_knowledge_info: dict[str, Any],
) -> ZeroShotClassifier:
    """The finished classifier over every class: ``ensemble_niwt_tuned_eszsl`` (the seen
    rows plus the validated NIWT rows, fused with ESZSL at the validated weight; at weight
    0 the rows alone, so it is never worse on the validation problem than ``niwt_tuned``),
    its validated gamma, and the inverse map for explanations; it scores exactly as the
    GZSL evaluation's ``ensemble_niwt_tuned_eszsl``."""
    ordered = classes.sort_values("class_id")
    class_ids = ordered["class_id"].to_numpy(dtype=np.int64)
    weight, bias = (backbone.seen_rows() + niwt_rows["niwt_tuned"]).rows_for(class_ids)
    fusion = ensemble_weight(validation_choice)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    names, _ = table_dimension_names(domain_knowledge)
    return ZeroShotClassifier(
        backbone=backbone,
        rows=ClassRows("niwt_tuned", class_ids, weight, bias),
        class_names=ordered["name"].tolist(),
        seen=ordered["seen"].to_numpy(dtype=bool),
        gamma=float(validation_choice["methods"][ENSEMBLE]["gamma"]),
        method=ENSEMBLE,
        fusion=fusion,
        eszsl=eszsl_model if fusion > 0 else None,
        signatures=dk[class_ids] if fusion > 0 else None,
        inverse=InverseMap.from_state(inverse_map_weights),
        dimension_names=names,
        domain_knowledge=str(domain_knowledge_info.get("source") or ""),
    )
