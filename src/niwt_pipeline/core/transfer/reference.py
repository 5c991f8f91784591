"""The reference images of weight transfer, and what transfer needs of them, computed once.

NIWT (Selvaraju et al., "Choose Your Neuron", ECCV 2018, sec. 3.3) measures the
importance of a new row on a set of *reference images* (any images will do: the paper
uses generic ImageNet images; here by default a seeded sample of the seen classes'
trainval images, or a folder).  Since ``alpha_w(x) = G(x) w``, transfer needs
only ``G`` of those images (:class:`ReferenceCache` with ``gram``), or, when ``G`` would
exceed the memory budget, their activations at the importance layer, from which each step
runs only the head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from niwt_pipeline.core.backbones.cut import CutModel
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import folder_images, sample_rows
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.transfer.gram import reference_gram
from niwt_pipeline.core.trunk import TrunkActivations

logger = logging.getLogger(__name__)

#: ``ReferenceConfig.images`` value for a seeded sample of the seen classes' trainval images.
TRAINVAL_SEEN = "trainval_seen"


@dataclass
class ReferenceConfig:
    """Which reference images, and how G of them is computed and kept.

    Attributes:
        images: ``"trainval_seen"`` (the trainval images of the backbone's seen classes)
            or a folder of image files.
        max_images: a seeded sample of at most this many (``None``: all).
        batch_size: images per forward pass and per G batch.
        seed: seeds the sample.
        gram_memory_budget_mb: G (``N * K * D`` float32) is kept when it fits in this many
            MiB; otherwise the activations are kept and every transfer step runs the head.
    """

    images: str = TRAINVAL_SEEN
    max_images: int | None = None
    batch_size: int = 64
    seed: int = 0
    gram_memory_budget_mb: int = 1024

    @property
    def gram_budget_bytes(self) -> int:
        """The budget in bytes."""
        return int(self.gram_memory_budget_mb) * 2**20


@dataclass
class ReferenceCache:
    """What weight transfer needs of the reference images: G or the activations.

    Attributes:
        gram: (N, K, D) float32, ``G(x)`` per reference image, or ``None``.
        activations: (N, K, h, w) float32 activations at the importance layer, or ``None``.
        n_images: N.
    """

    gram: torch.Tensor | None = None
    activations: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.gram is None) == (self.activations is None):
            raise ValueError("ReferenceCache: exactly one of gram and activations is expected")

    @property
    def n_images(self) -> int:
        """N, the number of reference images."""
        held = self.gram if self.gram is not None else self.activations
        return int(held.shape[0])

    def sources(self, backbone: TrainedBackbone) -> dict[str, Any]:
        """The keyword arguments of :func:`~niwt_pipeline.core.transfer.transfer_rows`:
        ``gram``, or ``head`` (of ``backbone``) and ``activations``."""
        if self.gram is not None:
            return {"gram": self.gram}
        return {"head": backbone.cut.head, "activations": self.activations}

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON metadata for a safetensors file."""
        if self.gram is not None:
            return {"gram": self.gram}, {"kind": "gram"}
        return {"activations": self.activations}, {"kind": "activations"}

    @classmethod
    def from_safetensors(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> ReferenceCache:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            InputError: when the file holds neither ``gram`` nor ``activations``.
        """
        if "gram" in tensors:
            return cls(gram=tensors["gram"])
        if "activations" in tensors:
            return cls(activations=tensors["activations"])
        raise InputError(
            f"reference cache: expected a 'gram' or 'activations' tensor, got {sorted(tensors)}"
        )


def reference_images(
    images: pd.DataFrame, seen_class_ids: list[int], config: ReferenceConfig
) -> pd.DataFrame:
    """The reference images: a table with a ``path`` column (a seeded sample).

    Raises:
        InputError: when the folder is missing or holds no images.
    """
    if config.images == TRAINVAL_SEEN:
        seen = set(seen_class_ids)
        table = images[(images["split"] == "trainval") & images["class_id"].isin(seen)]
        return sample_rows(table, config.max_images, config.seed)
    return folder_images(config.images, config.max_images, config.seed)


@torch.no_grad()
def layer_activations(cut: CutModel, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Activations at the importance layer for every image of ``loader``: (N, K, h, w) float32.

    Streams batches into one preallocated tensor (memory = the output alone).

    Raises:
        InputError: when the loader yields no images.
    """
    out: torch.Tensor | None = None
    start = 0
    total = len(loader.dataset)
    for batch in loader:
        a = cut.stem(batch[0].to(device)).float().cpu()
        if out is None:
            out = torch.empty((total, *a.shape[1:]), dtype=a.dtype)
        out[start : start + len(a)] = a
        start += len(a)
    if out is None:
        raise InputError("no reference images to compute activations on")
    return out


def reference_cache(
    backbone: TrainedBackbone,
    images: pd.DataFrame,
    config: ReferenceConfig,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
) -> ReferenceCache:
    """G of the reference images when it fits in the memory budget, else their activations.

    Args:
        backbone: the trained backbone (its seen classes choose the trainval images).
        images: the canonical images table.
        config: which images and the budget.
        device: where to run the network.
        trunk: stored activations of the backbone's frozen trunk (read instead of running
            the stem when they cover the reference images).

    Returns:
        A :class:`ReferenceCache` (CPU tensors).

    Raises:
        InputError: when there are no reference images.
    """
    dev = resolve_device(device)
    cut = backbone.on(dev)
    table = reference_images(images, backbone.spec.seen_class_ids, config)
    model, loader = backbone.inputs(
        table, trunk, batch_size=config.batch_size, labels=np.zeros(len(table), dtype=np.int64)
    )
    activations = layer_activations(model, loader, dev)
    with torch.no_grad():
        d = cut.head(activations[:1].to(dev)).shape[1]
    gram_mb = activations.shape[0] * activations.shape[1] * d * 4 / 2**20
    if gram_mb > config.gram_memory_budget_mb:
        logger.info(
            "reference cache: %d images, activations %s (G would need %.0f MB)",
            len(table),
            tuple(activations.shape),
            gram_mb,
        )
        return ReferenceCache(activations=activations)
    gram = reference_gram(cut.head, activations.to(dev), batch_size=config.batch_size)
    logger.info(
        "reference cache: G for %d images, %s (%.0f MB)", len(table), tuple(gram.shape), gram_mb
    )
    return ReferenceCache(gram=gram.cpu())
