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
from niwt_pipeline.core.gzsl import (
    calibrate,
    evaluate_scores,
    problem_for,
    row_scores,
    rows_by_class,
)
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
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.transfer import TransferConfig, reference_gram, transfer_rows
from niwt_pipeline.pipelines.importance.nodes import channel_columns

logger = logging.getLogger(__name__)

METHODS = ("niwt", "weight_regression", "eszsl")


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


def _seen_rows(backbone_weights: dict[str, Any], spec: BackboneSpec):
    split = rebuild_split(spec, backbone_weights)
    return (
        split.classifier.weight.detach().cpu(),
        split.classifier.bias.detach().cpu(),
        np.asarray(spec.seen_class_ids, dtype=np.int64),
    )


def transfer_niwt_rows(
    reference_cache: dict[str, torch.Tensor],
    predicted_importance: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """NIWT: optimise a classifier row per unseen class (and per pseudo-unseen calibration
    class, from the mapper fitted without them) so its importance matches the prediction.
    """
    options = TransferParams(**params)
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, seen_ids = _seen_rows(backbone_weights, spec)
    k_cols = channel_columns(sum(c.startswith("k_") for c in predicted_importance.columns))
    sources = {"gram": reference_cache.get("gram")}
    if sources["gram"] is None:
        sources = {
            "head": rebuild_split(spec, backbone_weights).head,
            "activations": reference_cache["activations"],
        }

    def run(targets: pd.DataFrame, keep_seen: np.ndarray):
        result = transfer_rows(
            targets[k_cols].to_numpy(dtype=np.float32),
            weight[keep_seen],
            bias[keep_seen],
            options.niwt,
            **sources,
        )
        return result, targets["class_id"].to_numpy(dtype=np.int64)

    final = predicted_importance[
        (predicted_importance["role"] == "final") & ~predicted_importance["seen"]
    ]
    calib = predicted_importance[predicted_importance["role"] == "calibration"]
    unseen_result, unseen_ids = run(final, np.ones(len(seen_ids), dtype=bool))
    calib_result, calib_ids = run(calib, ~np.isin(seen_ids, calib["class_id"].to_numpy()))
    logger.info(
        "NIWT transfer: %d unseen rows in %d steps (%s, loss %.4f); "
        "%d calibration rows in %d steps",
        len(unseen_ids),
        unseen_result.steps,
        unseen_result.stopped_reason,
        unseen_result.best_loss,
        len(calib_ids),
        calib_result.steps,
    )
    rows = {
        "unseen_class_id": torch.as_tensor(unseen_ids),
        "unseen_weight": unseen_result.weight,
        "unseen_bias": unseen_result.bias,
        "calibration_class_id": torch.as_tensor(calib_ids),
        "calibration_weight": calib_result.weight,
        "calibration_bias": calib_result.bias,
    }
    report = {
        "config": asdict(options.niwt),
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
            for name, r in (("unseen", unseen_result), ("calibration", calib_result))
        },
    }
    return rows, report


def _features(image_outputs: dict[str, Any], images: pd.DataFrame) -> pd.DataFrame:
    """``images`` rows in the order of ``image_outputs`` (which holds the features)."""
    order = image_outputs["image_id"].numpy()
    return images.set_index("image_id").loc[order].reset_index()


def fit_baselines(
    image_outputs: dict[str, Any],
    images: pd.DataFrame,
    backbone_split: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    mapper_report: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Ridge regression domain knowledge -> classifier rows, and ESZSL on the features;
    each fitted on all seen classes and again without the pseudo-unseen calibration classes.
    """
    options = TransferParams(**params).baselines
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, seen_ids = _seen_rows(backbone_weights, spec)
    weight, bias = weight.numpy().astype(np.float64), bias.numpy().astype(np.float64)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    calib_ids = np.asarray(mapper_report["calibration_class_ids"], dtype=np.int64)
    unseen_ids = np.setdiff1d(np.arange(len(dk)), seen_ids)

    table = _features(image_outputs, images)
    train_ids = set(backbone_split.loc[backbone_split["role"] == "train", "image_id"])
    train = table["image_id"].isin(train_ids).to_numpy()
    features = image_outputs["features"].numpy().astype(np.float64)
    labels = table["class_id"].to_numpy()

    models: dict[str, torch.Tensor] = {}
    report: dict[str, Any] = {}
    for name, fit_ids, new_ids in (
        ("", seen_ids, unseen_ids),
        ("calibration_", seen_ids[~np.isin(seen_ids, calib_ids)], calib_ids),
    ):
        keep = np.isin(seen_ids, fit_ids)  # fit_ids keeps the classifier's row order
        w_new, b_new = ridge_rows(
            dk[fit_ids], weight[keep], bias[keep], dk[new_ids], options.ridge_alpha
        )
        models[f"{name}ridge_class_id"] = torch.as_tensor(new_ids)
        models[f"{name}ridge_weight"] = torch.as_tensor(np.asarray(w_new))
        models[f"{name}ridge_bias"] = torch.as_tensor(np.asarray(b_new))
        mask = train & np.isin(labels, fit_ids)
        position = {int(c): j for j, c in enumerate(fit_ids)}
        y = np.array([position[int(c)] for c in labels[mask]])
        gamma, lam = options.eszsl_gamma, options.eszsl_lambda
        if gamma is None or lam is None:
            chosen = eszsl_select(features[mask], y, dk[fit_ids], seed=options.seed)
            gamma, lam = chosen.gamma, chosen.lam
        models[f"{name}eszsl_V"] = torch.as_tensor(
            np.asarray(eszsl_fit(features[mask], y, dk[fit_ids], gamma, lam))
        )
        report[f"{name}eszsl"] = {"gamma": float(gamma), "lambda": float(lam)}
    logger.info("baselines fitted: ridge rows, ESZSL %s", report)
    return models, report


def score_methods(
    image_outputs: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    backbone_split: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    niwt_rows: dict[str, Any],
    baseline_models: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Score every method on the test images over all classes, and choose each method's
    calibration gamma on the held-out seen images with the pseudo-unseen classes.

    Returns:
        test scores (``<method>`` (N_test, C) and ``image_id``); calibration (JSON):
        per method the chosen gamma and the validation S/U/H.
    """
    spec = BackboneSpec.from_dict(backbone_spec)
    weight, bias, seen_ids = _seen_rows(backbone_weights, spec)
    seen_rows = rows_by_class(weight.numpy(), bias.numpy(), seen_ids)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    all_ids = classes.sort_values("class_id")["class_id"].to_numpy(dtype=np.int64)
    table = _features(image_outputs, images)
    features = image_outputs["features"].numpy().astype(np.float64)

    def linear(prefix: str, weights: dict[str, Any], key: str) -> dict:
        return rows_by_class(
            np.asarray(weights[f"{prefix}{key}_weight"]),
            np.asarray(weights[f"{prefix}{key}_bias"]),
            np.asarray(weights[f"{prefix}{key}_class_id"]),
        )

    def method_scores(feats: np.ndarray, ids: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
        niwt_key = "unseen" if prefix == "" else "calibration"
        return {
            "niwt": row_scores(feats, {**seen_rows, **linear("", niwt_rows, niwt_key)}, ids),
            "weight_regression": row_scores(
                feats, {**seen_rows, **linear(prefix, baseline_models, "ridge")}, ids
            ),
            "eszsl": eszsl_scores(feats, np.asarray(baseline_models[f"{prefix}eszsl_V"]), dk[ids]),
        }

    # calibration: held-out seen images, seen classes, the pseudo-unseen ones as "unseen"
    calib_ids = np.asarray(niwt_rows["calibration_class_id"], dtype=np.int64)
    holdout = set(backbone_split.loc[backbone_split["role"] == "holdout", "image_id"])
    val = table["image_id"].isin(holdout).to_numpy()
    val_problem = problem_for(table["class_id"].to_numpy()[val], seen_ids, calib_ids)
    val_scores = method_scores(features[val], seen_ids, "calibration_")
    calibration = {}
    for method, scores in val_scores.items():
        gamma = calibrate(scores, val_problem)
        calibration[method] = {
            "gamma": gamma,
            **{
                k: v for k, v in evaluate_scores(scores, val_problem, gamma).items() if k != "curve"
            },
        }

    test = table["split"].isin(["test_seen", "test_unseen"]).to_numpy()
    test_scores = method_scores(features[test], all_ids, "")
    out = {m: torch.as_tensor(s, dtype=torch.float32) for m, s in test_scores.items()}
    out["image_id"] = torch.as_tensor(table["image_id"].to_numpy()[test])
    return out, {"calibration_class_ids": calib_ids.tolist(), "methods": calibration}


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
