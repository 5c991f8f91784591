"""Transfer nodes: reference cache, NIWT rows, baselines, calibrated GZSL scoring."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from niwt_pipeline.core.baselines import eszsl_fit, eszsl_scores, eszsl_select, ridge_rows
from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.gzsl import evaluate_scores, problem_for, row_scores, rows_by_class
from niwt_pipeline.core.metrics import confusion_matrix
from niwt_pipeline.core.modelio import (
    BackboneSpec,
    folder_images,
    image_loader,
    layer_activations,
    rebuild_split,
    sample_rows,
)
from niwt_pipeline.core.plots import plot_confusion, plot_seen_unseen_curves
from niwt_pipeline.core.selection import NIWTVariant, fuse_scores, make_variant
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.transfer import (
    GramMoments,
    TransferConfig,
    TransferResult,
    reference_gram,
    transfer_rows,
)
from niwt_pipeline.pipelines.importance.nodes import channel_columns

logger = logging.getLogger(__name__)

METHODS = ("niwt", "niwt_tuned", "weight_regression", "eszsl")


class ReferenceParams(BaseModel):
    """Which images NIWT measures importances on while it optimises the new rows."""

    model_config = ConfigDict(extra="forbid")

    images: str = "trainval_seen"  # or a folder of images
    max_images: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    gram_memory_budget_mb: int = 1024


class BaselineParams(BaseModel):
    """Ridge regression to classifier rows, and ESZSL on the penultimate features."""

    model_config = ConfigDict(extra="forbid")

    ridge_alpha: float = Field(1.0, ge=0)
    eszsl_gamma: float | None = None  # None: chosen on pseudo-unseen seen classes
    eszsl_lambda: float | None = None
    seed: int = 0


class TransferParams(BaseModel):
    """``params:transfer``."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    reference: ReferenceParams = ReferenceParams()
    niwt: TransferConfig = TransferConfig()
    baselines: BaselineParams = BaselineParams()


def cache_reference(
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    images: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """What weight transfer needs of the reference images, computed once.

    ``gram`` (N, K, D) = sum over positions of dz/dA per image when it fits in the memory
    budget (each optimisation step is then one einsum); else the activations at the layer
    (N, K, h, w), from which each step runs only the head.
    """
    options = TransferParams(**params)
    spec = BackboneSpec.from_dict(backbone_spec)
    device = resolve_device(options.device)
    split = rebuild_split(spec, backbone_weights).to(device)
    ref = options.reference
    if ref.images == "trainval_seen":
        seen = set(spec.seen_class_ids)
        table = images[(images["split"] == "trainval") & images["class_id"].isin(seen)]
        table = sample_rows(table, ref.max_images, ref.seed)
    else:
        table = folder_images(ref.images, ref.max_images, ref.seed)
    loader = image_loader(
        table, spec, batch_size=ref.batch_size, labels=np.zeros(len(table), dtype=np.int64)
    )
    activations = layer_activations(split, loader, device)
    with torch.no_grad():
        d = split.head(activations[:1].to(device)).shape[1]
    gram_mb = activations.shape[0] * activations.shape[1] * d * 4 / 2**20
    if gram_mb > ref.gram_memory_budget_mb:
        logger.info(
            "reference cache: %d images, activations %s (G would need %.0f MB)",
            len(table),
            tuple(activations.shape),
            gram_mb,
        )
        return {"activations": activations}
    gram = reference_gram(split.head, activations.to(device), batch_size=ref.batch_size)
    logger.info(
        "reference cache: G for %d images, %s (%.0f MB)", len(table), tuple(gram.shape), gram_mb
    )
    return {"gram": gram.cpu()}


def seen_rows(backbone_weights: dict[str, Any], spec: BackboneSpec):
    """The trained classifier: weight (S, D), bias (S,) and the class id of each row."""
    split = rebuild_split(spec, backbone_weights)
    return (
        split.classifier.weight.detach().cpu(),
        split.classifier.bias.detach().cpu(),
        np.asarray(spec.seen_class_ids, dtype=np.int64),
    )


def niwt_variant_rows(
    target: np.ndarray,
    weight: torch.Tensor,
    bias: torch.Tensor,
    variant: NIWTVariant,
    reference_cache: dict[str, torch.Tensor],
    backbone_weights: dict[str, Any],
    spec: BackboneSpec,
    ridge_weight: torch.Tensor | None = None,
    moments: GramMoments | None = None,
) -> TransferResult:
    """NIWT rows of one variant for the classes of ``target`` (U, K), from the reference
    cache (G, or activations plus the backbone's head); ``ridge_weight`` (U, D) serves the
    ``ridge`` init and anchor; ``moments`` of the same cache spare the least-squares solver
    their computation."""
    gram = reference_cache.get("gram")
    sources = (
        {"gram": gram}
        if gram is not None
        else {
            "head": rebuild_split(spec, backbone_weights).head,
            "activations": reference_cache["activations"],
        }
    )
    needs_ridge = variant.ridge_init or variant.anchor == "ridge"
    if needs_ridge and ridge_weight is None:
        raise ValueError("this NIWT variant needs the ridge-regression rows")
    return transfer_rows(
        target,
        weight,
        bias,
        variant.config,
        init_weight=ridge_weight if variant.ridge_init else None,
        anchor=ridge_weight if variant.anchor == "ridge" else None,
        moments=moments,
        **sources,
    )


def transfer_niwt_rows(
    reference_cache: dict[str, torch.Tensor],
    predicted_importance: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    baseline_models: dict[str, Any],
    validation_choice: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """NIWT: optimise a classifier row per unseen class so its importance matches the
    mapper's prediction, twice: with ``transfer.niwt`` (the reference variant) and with the
    variant the validation pipeline chose (``niwt_tuned``).
    """
    options = TransferParams(**params)
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, _ = seen_rows(backbone_weights, spec)
    k_cols = channel_columns(sum(c.startswith("k_") for c in predicted_importance.columns))
    final = predicted_importance[
        (predicted_importance["role"] == "final") & ~predicted_importance["seen"]
    ]
    unseen_ids = final["class_id"].to_numpy(dtype=np.int64)
    target = final[k_cols].to_numpy(dtype=np.float32)
    ridge_ids = np.asarray(baseline_models["ridge_class_id"], dtype=np.int64)
    if not np.array_equal(ridge_ids, unseen_ids):
        raise InputError(
            f"baseline_models: ridge rows for classes {ridge_ids.tolist()}, expected the "
            f"unseen classes {unseen_ids.tolist()}; re-run the transfer pipeline"
        )
    ridge_weight = torch.as_tensor(np.asarray(baseline_models["ridge_weight"]), dtype=weight.dtype)
    results = {}
    for name, variant in (
        ("unseen", make_variant(options.niwt, {})),
        ("tuned", make_variant(options.niwt, validation_choice["niwt_tuned"])),
    ):
        results[name] = niwt_variant_rows(
            target, weight, bias, variant, reference_cache, backbone_weights, spec, ridge_weight
        )
        logger.info(
            "NIWT transfer (%s): %d unseen rows, %d steps (%s, loss %.4f)",
            name,
            len(unseen_ids),
            results[name].steps,
            results[name].stopped_reason,
            results[name].best_loss,
        )
    rows = {"unseen_class_id": torch.as_tensor(unseen_ids)}
    for name, result in results.items():
        rows[f"{name}_weight"] = result.weight
        rows[f"{name}_bias"] = result.bias
    report = {
        "config": asdict(options.niwt),
        "tuned_variant": validation_choice["niwt_tuned"],
        "reference": options.reference.model_dump(),
        **{
            name: {
                "steps": r.steps,
                "best_step": r.best_step,
                "best_loss": r.best_loss,
                "stopped_reason": r.stopped_reason,
                "method": r.method,
                "timings": r.timings,
                "row_norm_ratio": float(r.weight.norm(dim=1).mean() / weight.norm(dim=1).mean()),
            }
            for name, r in results.items()
        },
    }
    return rows, report


def _features(image_outputs: dict[str, Any], images: pd.DataFrame) -> pd.DataFrame:
    """``images`` rows in the order of ``image_outputs`` (which holds the features)."""
    order = image_outputs["image_id"].numpy()
    return images.set_index("image_id").loc[order].reset_index()


def baseline_rows(
    features: np.ndarray,
    labels: np.ndarray,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seen_ids: np.ndarray,
    dk: np.ndarray,
    new_ids: np.ndarray,
    options: BaselineParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Both baselines for the classes ``new_ids``: ridge-regressed rows from the seen rows
    ``weight`` (S, D), ``bias`` (S,) of the classes ``seen_ids``, and ESZSL fitted on the
    training ``features`` (N, D) with class ids ``labels`` (its regularisers chosen on
    pseudo-unseen seen classes unless ``options`` sets them).

    Returns:
        ridge rows (U, D) and biases (U,), ESZSL's V (D, A), its gamma and lambda.
    """
    features = np.asarray(features, dtype=np.float64)
    w_new, b_new = ridge_rows(
        dk[seen_ids],
        weight.numpy().astype(np.float64),
        bias.numpy().astype(np.float64),
        dk[new_ids],
        options.ridge_alpha,
    )
    position = {int(c): j for j, c in enumerate(seen_ids)}
    y = np.array([position[int(c)] for c in labels])
    gamma, lam = options.eszsl_gamma, options.eszsl_lambda
    if gamma is None or lam is None:
        chosen = eszsl_select(features, y, dk[seen_ids], seed=options.seed)
        gamma, lam = chosen.gamma, chosen.lam
    v = eszsl_fit(features, y, dk[seen_ids], gamma, lam)
    return np.asarray(w_new), np.asarray(b_new), np.asarray(v), float(gamma), float(lam)


def fit_baselines(
    image_outputs: dict[str, Any],
    images: pd.DataFrame,
    backbone_split: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Ridge regression domain knowledge -> classifier rows of the unseen classes, and ESZSL
    on the backbone's training features (its regularisers chosen on pseudo-unseen seen
    classes unless set)."""
    options = TransferParams(**params).baselines
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, seen_ids = seen_rows(backbone_weights, spec)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    unseen_ids = np.setdiff1d(np.arange(len(dk)), seen_ids)

    table = _features(image_outputs, images)
    train_ids = set(backbone_split.loc[backbone_split["role"] == "train", "image_id"])
    labels = table["class_id"].to_numpy()
    mask = table["image_id"].isin(train_ids).to_numpy() & np.isin(labels, seen_ids)
    w_new, b_new, v, gamma, lam = baseline_rows(
        image_outputs["features"].numpy()[mask],
        labels[mask],
        weight,
        bias,
        seen_ids,
        dk,
        unseen_ids,
        options,
    )
    models = {
        "ridge_class_id": torch.as_tensor(unseen_ids),
        "ridge_weight": torch.as_tensor(w_new),
        "ridge_bias": torch.as_tensor(b_new),
        "eszsl_V": torch.as_tensor(v),
    }
    report = {
        "eszsl": {"gamma": float(gamma), "lambda": float(lam)},
        "ridge_alpha": options.ridge_alpha,
    }
    logger.info("baselines fitted: ridge rows, ESZSL %s", report["eszsl"])
    return models, report


def score_methods(
    image_outputs: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    niwt_rows: dict[str, Any],
    baseline_models: dict[str, Any],
    validation_choice: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Score every method on the test images over all classes; each method's calibration
    gamma is the one the validation pipeline chose (no test data involved).

    Returns:
        test scores (``<method>`` (N_test, C) and ``image_id``); calibration (JSON): per
        method the gamma and its validation S/U/H/AUSUC, and the validated choices.
    """
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, seen_ids = seen_rows(backbone_weights, spec)
    seen_table = rows_by_class(weight.numpy(), bias.numpy(), seen_ids)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    all_ids = classes.sort_values("class_id")["class_id"].to_numpy(dtype=np.int64)
    table = _features(image_outputs, images)
    test = table["split"].isin(["test_seen", "test_unseen"]).to_numpy()
    features = image_outputs["features"].numpy().astype(np.float64)[test]

    def linear(weights: dict[str, Any], prefix: str, ids_key: str) -> np.ndarray:
        new = rows_by_class(
            np.asarray(weights[f"{prefix}_weight"]),
            np.asarray(weights[f"{prefix}_bias"]),
            np.asarray(weights[ids_key]),
        )
        return row_scores(features, {**seen_table, **new}, all_ids)

    eszsl = eszsl_scores(features, np.asarray(baseline_models["eszsl_V"]), dk[all_ids])
    fusion = float(validation_choice["niwt_tuned"].get("fusion", 0.0))
    scores = {
        "niwt": linear(niwt_rows, "unseen", "unseen_class_id"),
        "niwt_tuned": fuse_scores(linear(niwt_rows, "tuned", "unseen_class_id"), eszsl, fusion),
        "weight_regression": linear(baseline_models, "ridge", "ridge_class_id"),
        "eszsl": eszsl,
    }
    out = {m: torch.as_tensor(s, dtype=torch.float32) for m, s in scores.items()}
    out["image_id"] = torch.as_tensor(table["image_id"].to_numpy()[test])
    calibration = {
        "source": "validation pipeline: pseudo-unseen classes, a backbone that never saw them",
        "pseudo_unseen_class_ids": validation_choice["pseudo_unseen_class_ids"],
        "mapper": validation_choice["mapper"],
        "niwt_tuned": validation_choice["niwt_tuned"],
        "methods": {m: dict(validation_choice["methods"][m]) for m in METHODS},
    }
    return out, calibration


def report_gzsl(
    test_scores: dict[str, Any],
    calibration: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    ingestion_summary: dict[str, Any],
    backbone_spec: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    """GZSL metrics of every method (percent), the same as MLflow metrics, and two plots:
    the seen-unseen accuracy curves and NIWT's confusion matrix (calibrated)."""
    ordered = classes.sort_values("class_id")
    all_ids = ordered["class_id"].to_numpy(dtype=np.int64)
    unseen_ids = ordered.loc[~ordered["seen"], "class_id"].to_numpy()
    image_classes = images.set_index("image_id").loc[test_scores["image_id"].numpy(), "class_id"]
    problem = problem_for(image_classes.to_numpy(), all_ids, unseen_ids)

    methods, curves, mlflow_metrics = {}, {}, {}
    for method in METHODS:
        scores = test_scores[method].numpy().astype(np.float64)
        result = evaluate_scores(scores, problem, calibration["methods"][method]["gamma"])
        curves[method] = result.pop("curve")
        methods[method] = {k: (100 * v if k not in ("gamma",) else v) for k, v in result.items()}
        for key, value in methods[method].items():
            mlflow_metrics[f"{method}.{key}"] = {"value": float(value), "step": 0}
        logger.info(
            "%s: S %.1f U %.1f H %.1f | calibrated H %.1f (gamma %.3g) | AUSUC %.1f | ZSL %.1f",
            method,
            methods[method]["S"],
            methods[method]["U"],
            methods[method]["H"],
            methods[method]["H_calibrated"],
            methods[method]["gamma"],
            methods[method]["ausuc"],
            methods[method]["zsl_top1"],
        )
    metrics = {
        "dataset": ingestion_summary["dataset"],
        "domain_knowledge": ingestion_summary.get("domain_knowledge"),
        "backbone": {"arch": backbone_spec["arch"], "layer": backbone_spec["layer"]},
        "n_test_images": int(len(problem.labels)),
        "methods": methods,
        "validation": {
            key: calibration[key]
            for key in ("source", "pseudo_unseen_class_ids", "mapper", "niwt_tuned")
        },
    }
    curve_plot = plot_seen_unseen_curves(
        {m: (np.asarray(c["S"]), np.asarray(c["U"])) for m, c in curves.items()},
        {m: (methods[m]["S_calibrated"] / 100, methods[m]["U_calibrated"] / 100) for m in METHODS},
    )
    niwt = test_scores["niwt"].numpy().astype(np.float64)
    gamma = calibration["methods"]["niwt"]["gamma"]
    predicted = (niwt - gamma * (~problem.unseen_columns)).argmax(axis=1)
    confusion = confusion_matrix(predicted, problem.labels, len(all_ids))
    confusion_plot = plot_confusion(confusion, ordered["name"].tolist(), ~problem.unseen_columns)
    return metrics, mlflow_metrics, curve_plot, confusion_plot
