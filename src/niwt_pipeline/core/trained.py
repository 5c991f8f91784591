"""A trained backbone as one object, and the recipe that trains one on the seen classes.

:class:`TrainedBackbone` holds the weights and the :class:`BackboneSpec`; the model and
its cut at the importance layer are built once, the first time they are asked for, and
shared by every computation that needs them (extraction, reference images, Grad-CAM,
the seen classifier rows).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from niwt_pipeline.core.backbones.cut import CutModel, check_importance_layer, cut_at_layer
from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.backbones.zoo import build_backbone, default_layer, preprocessing
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.training import TrainConfig, evaluate, resolve_device, train_classifier

logger = logging.getLogger(__name__)


class TrainedBackbone:
    """A backbone trained on the seen classes: weights, spec, and the model built from them.

    Args:
        spec: architecture, importance layer, preprocessing and the seen classes.
        state: the state dict (CPU tensors).

    Attributes:
        model: the rebuilt network in eval mode (built on first use; loading is strict).
        cut: the model cut at ``spec.layer`` (built on first use, from ``model``).

    Raises:
        InputError: (on first use of ``model``) when the weights do not fit the spec's
            architecture and number of seen classes, naming the keys that differ.
    """

    def __init__(self, spec: BackboneSpec, state: dict[str, torch.Tensor]) -> None:
        self.spec = spec
        self.state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def __repr__(self) -> str:
        return (
            f"TrainedBackbone(arch={self.spec.arch!r}, layer={self.spec.layer!r}, "
            f"{len(self.spec.seen_class_ids)} seen classes)"
        )

    @cached_property
    def model(self) -> nn.Module:
        """The network, strictly loaded from ``state``, in eval mode, on the CPU.

        Raises:
            InputError: if ``state`` does not fit ``spec.arch`` with the spec's number of
                seen classes (naming missing, unexpected and wrongly shaped keys), or the
                architecture is unknown.
        """
        spec = self.spec
        model = build_backbone(spec.arch, num_classes=len(spec.seen_class_ids), weights=None)
        expected = model.state_dict()
        wrong_shape = [
            f"{k} (weights {tuple(v.shape)}, model {tuple(expected[k].shape)})"
            for k, v in self.state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        missing = sorted(set(expected) - set(self.state))
        unexpected = sorted(set(self.state) - set(expected))
        if missing or unexpected or wrong_shape:
            raise InputError(
                f"backbone weights do not fit arch {spec.arch!r} with "
                f"{len(spec.seen_class_ids)} seen classes: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}"
            )
        model.load_state_dict(self.state, strict=True)
        return model.eval()

    @cached_property
    def cut(self) -> CutModel:
        """The model cut at ``spec.layer`` (stem -> A, head -> z, classifier), eval mode."""
        return cut_at_layer(self.model, self.spec.layer).eval()

    def on(self, device: torch.device) -> CutModel:
        """The cut model moved to ``device`` (in place; the CPU copy is the same object)."""
        return self.cut.to(device)

    def seen_rows(self) -> ClassRows:
        """The trained classifier as class rows: weight (S, D), bias (S,) float32 on the CPU,
        one row per seen class (``spec.seen_class_ids``)."""
        classifier = self.cut.classifier
        return ClassRows(
            method="seen",
            class_ids=np.asarray(self.spec.seen_class_ids, dtype=np.int64),
            weight=classifier.weight.detach().cpu().numpy(),
            bias=classifier.bias.detach().cpu().numpy(),
        )


@dataclass
class BackboneRecipe:
    """How a backbone is built and trained on the seen classes.

    Attributes:
        arch: one of :data:`~niwt_pipeline.core.backbones.zoo.ARCHS`.
        weights: ``None``, a local weights file, or a named pretrained set
            (see :func:`~niwt_pipeline.core.backbones.zoo.build_backbone`).
        layer: the importance layer (a torch.fx node name); ``None`` = the arch's default.
        image_size: network input side in pixels; ``None`` = the arch's default.
        crop_fraction: evaluation centre-crop share of the resized shorter side.
        augment: random crops during training.
        train: the optimisation (:class:`~niwt_pipeline.core.training.TrainConfig`).
    """

    arch: str = "small_cnn"
    weights: str | None = None
    layer: str | None = None
    image_size: int | None = None
    crop_fraction: float = 1.0
    augment: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    def spec_for(self, seen_ids: list[int]) -> BackboneSpec:
        """The :class:`BackboneSpec` of a backbone with one output per class of ``seen_ids``."""
        default_size, mean, std = preprocessing(self.arch, self.weights)
        return BackboneSpec(
            arch=self.arch,
            layer=self.layer or default_layer(self.arch),
            image_size=self.image_size or default_size,
            mean=list(mean),
            std=list(std),
            seen_class_ids=[int(c) for c in seen_ids],
            crop_fraction=self.crop_fraction,
        )


def fit_backbone(
    recipe: BackboneRecipe,
    seen_ids: list[int],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    test: pd.DataFrame | None = None,
) -> tuple[TrainedBackbone, dict[str, Any]]:
    """Build ``recipe.arch`` with one output per class of ``seen_ids`` and train it.

    The initial weights follow ``recipe.train.seed`` (in a forked RNG state); the importance
    layer is checked before training (:func:`check_importance_layer`).

    Args:
        recipe: the architecture, weights, layer, preprocessing and optimisation.
        seen_ids: the classes of the classifier's outputs, in output order.
        train: image rows (``path``, ``class_id``) to train on.
        holdout: image rows that pick the best epoch (may be empty).
        test: image rows that are only measured (optional).

    Returns:
        The trained backbone and a report (JSON; accuracies are fractions, NaN when a set
        is empty; ``history`` has one entry per epoch).

    Raises:
        InputError: unknown arch or layer, a layer after which the scores are linear, or
            unusable weights.
    """
    spec = recipe.spec_for(seen_ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)  # the initial weights follow train.seed too
        model = build_backbone(recipe.arch, num_classes=len(seen_ids), weights=recipe.weights)
    check_importance_layer(cut_at_layer(model, spec.layer), _example_input(spec))

    batch = recipe.train.batch_size
    train_loader = image_loader(
        train, spec, batch_size=batch, shuffle=True, augment=recipe.augment, seed=recipe.train.seed
    )
    holdout_loader = image_loader(holdout, spec, batch_size=batch)
    started = time.perf_counter()
    result = train_classifier(
        model, train_loader, recipe.train, val_loader=holdout_loader if len(holdout) else None
    )
    seconds = time.perf_counter() - started
    device = resolve_device(recipe.train.device)
    test_acc = (
        evaluate(model, image_loader(test, spec, batch_size=batch), device)[0]
        if test is not None and len(test)
        else float("nan")
    )
    holdout_acc = evaluate(model, holdout_loader, device)[0] if len(holdout) else float("nan")
    logger.info(
        "backbone %s trained on %d images of %d classes in %.0f s: "
        "accuracy %.1f%% (test_seen), %.1f%% (holdout)",
        recipe.arch,
        len(train),
        len(seen_ids),
        seconds,
        100 * test_acc,
        100 * holdout_acc,
    )
    report = {
        "arch": recipe.arch,
        "layer": spec.layer,
        "n_train_images": len(train),
        "n_holdout_images": len(holdout),
        "seen_accuracy_test": float(test_acc),
        "seen_accuracy_holdout": float(holdout_acc),
        "train_seconds": round(seconds, 1),
        "history": result.history,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return TrainedBackbone(spec, state), report


def _example_input(spec: BackboneSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, spec.image_size, spec.image_size, generator=generator)
