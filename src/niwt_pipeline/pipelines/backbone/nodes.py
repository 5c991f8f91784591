"""Backbone nodes: seen-class training as a thin call into ``niwt_pipeline.core``."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from niwt_pipeline.core.backbones import (
    build_backbone,
    check_importance_layer,
    default_layer,
    preprocessing,
    split_at_layer,
)
from niwt_pipeline.core.modelio import BackboneSpec, image_loader, stratified_holdout
from niwt_pipeline.core.training import TrainConfig, evaluate, resolve_device, train_classifier

logger = logging.getLogger(__name__)


class BackboneParams(BaseModel):
    """``params:backbone``: the network, its importance layer and its seen-class training."""

    model_config = ConfigDict(extra="forbid")

    arch: str = "small_cnn"
    weights: str | None = None
    layer: str | None = None
    image_size: int | None = Field(None, gt=0)
    crop_fraction: float = Field(1.0, gt=0, le=1)
    augment: bool = False
    holdout_fraction: float = Field(0.15, gt=0, lt=1)
    train: TrainConfig = TrainConfig()


def train_backbone(
    images: pd.DataFrame, classes: pd.DataFrame, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Train the classifier on the seen classes' trainval images.

    A stratified ``holdout_fraction`` of those images is kept out of training: it measures
    seen accuracy during training and later calibrates the seen/unseen trade-off.

    Returns:
        state dict, spec (JSON), split table (``image_id``, ``role`` in {train, holdout}),
        report (JSON), MLflow metrics.
    """
    options = BackboneParams(**params)
    seen_ids = classes.loc[classes["seen"], "class_id"].astype(int).tolist()
    trainval = images[images["split"] == "trainval"].reset_index(drop=True)
    held = stratified_holdout(
        trainval["class_id"].to_numpy(), options.holdout_fraction, options.train.seed
    )
    state, spec, report = fit_backbone(
        options,
        seen_ids,
        trainval[~held],
        trainval[held],
        images[images["split"] == "test_seen"],
    )
    roles = pd.DataFrame(
        {
            "image_id": trainval["image_id"].astype("int64"),
            "role": pd.Series(["holdout" if h else "train" for h in held], dtype="str"),
        }
    )
    metrics = {
        "seen_accuracy": {"value": 100 * float(report["seen_accuracy_test"]), "step": 0},
        "train_seconds": {"value": report["train_seconds"], "step": 0},
    }
    return state, spec, roles, report, metrics


def fit_backbone(
    options: BackboneParams,
    seen_ids: list[int],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    test: pd.DataFrame | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Build ``options.arch`` with one output per class of ``seen_ids`` and train it on
    ``train``; ``holdout`` picks the best epoch, ``test`` (optional) is only measured.

    Returns:
        state dict, spec (JSON), report (JSON; accuracies are fractions).
    """
    default_size, mean, std = preprocessing(options.arch, options.weights)
    spec = BackboneSpec(
        arch=options.arch,
        layer=options.layer or default_layer(options.arch),
        image_size=options.image_size or default_size,
        mean=list(mean),
        std=list(std),
        seen_class_ids=[int(c) for c in seen_ids],
        crop_fraction=options.crop_fraction,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.train.seed)  # the initial weights follow train.seed too
        model = build_backbone(options.arch, num_classes=len(seen_ids), weights=options.weights)
    split = split_at_layer(model, spec.layer)
    check_importance_layer(split, _example_input(spec))

    batch = options.train.batch_size
    train_loader = image_loader(
        train,
        spec,
        batch_size=batch,
        shuffle=True,
        augment=options.augment,
        seed=options.train.seed,
    )
    holdout_loader = image_loader(holdout, spec, batch_size=batch)
    started = time.perf_counter()
    result = train_classifier(
        model, train_loader, options.train, val_loader=holdout_loader if len(holdout) else None
    )
    seconds = time.perf_counter() - started
    device = resolve_device(options.train.device)
    test_acc = (
        evaluate(model, image_loader(test, spec, batch_size=batch), device)[0]
        if test is not None and len(test)
        else float("nan")
    )
    holdout_acc = evaluate(model, holdout_loader, device)[0] if len(holdout) else float("nan")
    logger.info(
        "backbone %s trained on %d images of %d classes in %.0f s: "
        "accuracy %.1f%% (test_seen), %.1f%% (holdout)",
        options.arch,
        len(train),
        len(seen_ids),
        seconds,
        100 * test_acc,
        100 * holdout_acc,
    )
    report = {
        "arch": options.arch,
        "layer": spec.layer,
        "n_train_images": len(train),
        "n_holdout_images": len(holdout),
        "seen_accuracy_test": float(test_acc),
        "seen_accuracy_holdout": float(holdout_acc),
        "train_seconds": round(seconds, 1),
        "history": result.history if hasattr(result, "history") else None,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return state, spec.to_dict(), report


def _example_input(spec: BackboneSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, spec.image_size, spec.image_size, generator=generator)
