"""A trained backbone as one object, and the recipe that trains one on the seen classes.

:class:`TrainedBackbone` holds the weights and the :class:`BackboneSpec`; the model and
its cut at the importance layer are built once, the first time they are asked for, and
shared by every computation that needs them (extraction, reference images, Grad-CAM,
the seen classifier rows).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from niwt_pipeline.core.backbones.cut import CutModel, check_importance_layer, cut_at_layer
from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.backbones.zoo import build_backbone, default_layer, preprocessing
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.training import TrainConfig, evaluate, resolve_device, train_classifier
from niwt_pipeline.core.trunk import (
    TrunkActivations,
    TrunkConfig,
    compute_trunk_activations,
    trunk_context,
)

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

    @cached_property
    def head_cut(self) -> CutModel:
        """The cut model without its stem: ``forward(A) = classifier(head(A))`` for stored
        activations ``A: (B, K, h, w)`` at ``spec.layer`` (shares the head and classifier
        with :attr:`cut`)."""
        cut = self.cut
        return CutModel(nn.Identity(), cut.head, cut.classifier, cut.layer, cut.classifier_name)

    def on(self, device: torch.device) -> CutModel:
        """The cut model moved to ``device`` (in place; the CPU copy is the same object)."""
        return self.cut.to(device)

    def inputs(
        self,
        images: pd.DataFrame,
        trunk: TrunkActivations | None,
        *,
        batch_size: int,
        labels: np.ndarray | None = None,
        num_workers: int = 0,
    ) -> tuple[CutModel, DataLoader]:
        """The model and batches that give the backbone's outputs on ``images``.

        With stored activations of this backbone's frozen trunk covering every image
        (:meth:`TrunkActivations.serves`), :attr:`head_cut` and a loader of the stored
        activations (the stem is not run again); otherwise :attr:`cut` and a loader of the
        preprocessed images.  Either way ``model(batch[0])`` are the same logits, and the
        batches are ``(inputs, labels (B,), row positions (B,))`` in table order.

        Args:
            images: image rows (``path``; ``image_id`` to use stored activations;
                ``class_id`` unless ``labels`` is given).
            trunk: the stored activations, or ``None``.
            batch_size: rows per batch.
            labels: (N,) labels; default the classifier index of each image's class.
            num_workers: image-decoding processes (images only).

        Raises:
            InputError: bad sizes or normalisation of the spec.
        """
        if (
            trunk is not None
            and trunk.serves(self.spec)
            and "image_id" in images
            and trunk.covers(images["image_id"].to_numpy())
        ):
            return self.head_cut, trunk.loader(
                images, self.spec, batch_size=batch_size, labels=labels
            )
        loader = image_loader(
            images, self.spec, batch_size=batch_size, labels=labels, num_workers=num_workers
        )
        return self.cut, loader

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
        trunk: whether the network below ``layer`` is frozen (its activations computed
            once and only the head trained: :class:`~niwt_pipeline.core.trunk.TrunkConfig`).
    """

    arch: str = "small_cnn"
    weights: str | None = None
    layer: str | None = None
    image_size: int | None = None
    crop_fraction: float = 1.0
    augment: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)

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


def pretrained_trunk(recipe: BackboneRecipe) -> tuple[CutModel, BackboneSpec]:
    """The recipe's network with its pretrained weights, cut at the importance layer, in eval
    mode, and the spec of its preprocessing (no seen classes yet).

    Raises:
        InputError: ``recipe.trunk.frozen`` without pretrained weights (a random trunk
            would stay random), unknown arch or layer, unusable weights.
    """
    if recipe.weights in (None, "none"):
        raise InputError(
            "backbone.trunk.frozen is true but backbone.weights is null: a frozen trunk keeps "
            "its pretrained weights, so name them (e.g. weights: imagenet, or a weights file), "
            "or set backbone.trunk.frozen: false to train the whole network"
        )
    spec = recipe.spec_for([])
    model = build_backbone(recipe.arch, num_classes=1, weights=recipe.weights)
    return cut_at_layer(model, spec.layer).eval(), spec


def trunk_activations(
    recipe: BackboneRecipe, images: pd.DataFrame, store: ShardStore
) -> TrunkActivations:
    """The frozen trunk's activations of every image (``recipe.trunk.frozen``), stored in
    resumable shards; :meth:`TrunkActivations.none` when the whole network is trained.

    Args:
        recipe: the architecture, pretrained weights, layer, preprocessing and
            :class:`~niwt_pipeline.core.trunk.TrunkConfig`.
        images: canonical image rows (``image_id``, ``path``, ``class_id``, ``split``).
        store: the shard folder (see :func:`~niwt_pipeline.core.trunk.compute_trunk_activations`).

    Raises:
        InputError: see :func:`pretrained_trunk`; an image that cannot be read.
    """
    if not recipe.trunk.frozen:
        return TrunkActivations.none()
    cut, spec = pretrained_trunk(recipe)
    return compute_trunk_activations(cut.stem, spec, images, recipe.trunk, store)


def fit_backbone(
    recipe: BackboneRecipe,
    seen_ids: list[int],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    test: pd.DataFrame | None = None,
    trunk: TrunkActivations | None = None,
) -> tuple[TrainedBackbone, dict[str, Any]]:
    """Build ``recipe.arch`` with one output per class of ``seen_ids`` and train it.

    The initial weights follow ``recipe.train.seed`` (in a forked RNG state); the importance
    layer is checked before training (:func:`check_importance_layer`).  With
    ``recipe.trunk.frozen`` only the head above the importance layer and the classifier are
    trained, on the stored activations ``trunk`` (their random-crop views are the
    augmentation); the stem keeps its pretrained weights and the spec records ``trunk``'s
    fingerprint.

    Args:
        recipe: the architecture, weights, layer, preprocessing and optimisation.
        seen_ids: the classes of the classifier's outputs, in output order.
        train: image rows (``path``, ``class_id``; ``image_id`` with a frozen trunk) to
            train on.
        holdout: image rows that pick the best epoch (may be empty).
        test: image rows that are only measured (optional).
        trunk: the stored activations (needed with ``recipe.trunk.frozen``).

    Returns:
        The trained backbone and a report (JSON; accuracies are fractions, NaN when a set
        is empty; ``history`` has one entry per epoch).

    Raises:
        InputError: unknown arch or layer, a layer after which the scores are linear,
            unusable weights, or (frozen trunk) missing activations or activations of
            another stem, layer, image size, preprocessing or number of views.
    """
    spec = recipe.spec_for(seen_ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)  # the initial weights follow train.seed too
        model = build_backbone(recipe.arch, num_classes=len(seen_ids), weights=recipe.weights)
    cut = cut_at_layer(model, spec.layer)
    check_importance_layer(cut, _example_input(spec))

    batch = recipe.train.batch_size
    seed = recipe.train.seed
    if recipe.trunk.frozen:
        if recipe.weights in (None, "none"):
            pretrained_trunk(recipe)  # raises the message naming the fix
        context = trunk_context(cut.stem, spec, recipe.trunk)
        if trunk is None or not trunk.available or trunk.fingerprint != context:
            raise InputError(
                "backbone.trunk.frozen: the stored trunk activations were computed by another "
                "backbone, layer, image size, preprocessing or number of views (or are "
                "missing); run the backbone pipeline again to recompute them"
            )
        spec.trunk = context
        net: nn.Module = CutModel(
            nn.Identity(), cut.head, cut.classifier, cut.layer, cut.classifier_name
        )

        def loader(rows: pd.DataFrame, **kwargs: Any) -> DataLoader:
            return trunk.loader(rows, spec, batch_size=batch, **kwargs)

        train_loader = loader(train, shuffle=True, augment=recipe.trunk.views > 1, seed=seed)
    else:
        net = model

        def loader(rows: pd.DataFrame, **kwargs: Any) -> DataLoader:
            return image_loader(rows, spec, batch_size=batch, **kwargs)

        train_loader = loader(train, shuffle=True, augment=recipe.augment, seed=seed)
    holdout_loader = loader(holdout)
    started = time.perf_counter()
    result = train_classifier(
        net, train_loader, recipe.train, val_loader=holdout_loader if len(holdout) else None
    )
    seconds = time.perf_counter() - started
    device = resolve_device(recipe.train.device)
    test_acc = (
        evaluate(net, loader(test), device)[0] if test is not None and len(test) else float("nan")
    )
    holdout_acc = evaluate(net, holdout_loader, device)[0] if len(holdout) else float("nan")
    logger.info(
        "backbone %s (%s) trained on %d images of %d classes in %.0f s: "
        "accuracy %s (test_seen), %s (holdout)",
        recipe.arch,
        "frozen trunk, head only" if recipe.trunk.frozen else "whole network",
        len(train),
        len(seen_ids),
        seconds,
        _percent(test_acc),
        _percent(holdout_acc),
    )
    report = {
        "arch": recipe.arch,
        "layer": spec.layer,
        "trunk": "frozen" if recipe.trunk.frozen else "trained",
        "n_train_images": len(train),
        "n_holdout_images": len(holdout),
        "seen_accuracy_test": float(test_acc),
        "seen_accuracy_holdout": float(holdout_acc),
        "train_seconds": round(seconds, 1),
        "history": result.history,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return TrainedBackbone(spec, state), report


def _percent(value: float) -> str:
    return "n/a (no images)" if math.isnan(value) else f"{100 * value:.1f}%"


def _example_input(spec: BackboneSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, spec.image_size, spec.image_size, generator=generator)
