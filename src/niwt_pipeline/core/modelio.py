"""Glue between the canonical tables and the torch library: model specs and image loaders.

A trained backbone is stored as a state dict plus a :class:`BackboneSpec` (JSON), which is
all any later stage needs to rebuild the model, split it at the importance layer and feed
it images the way it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from niwt_pipeline.core.backbones import SplitModel, build_backbone, split_at_layer
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import ImageTableDataset, make_loader


@dataclass
class BackboneSpec:
    """How to rebuild and feed a trained backbone.

    Attributes:
        arch: architecture name (see ``backbones.ARCHS``).
        layer: the importance layer (a torch.fx node name).
        image_size: side of the square network input, in pixels.
        mean, std: per-channel input normalisation.
        seen_class_ids: canonical ``class_id`` of classifier output ``j`` (seen classes only).
        crop_fraction: centre-crop fraction used at evaluation time.
    """

    arch: str
    layer: str
    image_size: int
    mean: list[float]
    std: list[float]
    seen_class_ids: list[int]
    crop_fraction: float = 1.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BackboneSpec:
        """Rebuild from the JSON form written by :meth:`to_dict`."""
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def rebuild_model(spec: BackboneSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The trained backbone from its spec and state dict (loaded strictly, eval mode)."""
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    model = build_backbone(spec.arch, num_classes=len(spec.seen_class_ids), weights=None)
    expected = model.state_dict()
    wrong_shape = [
        f"{k} (weights {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected or wrong_shape:
        raise InputError(
            f"backbone weights do not fit arch {spec.arch!r} with {len(spec.seen_class_ids)} "
            f"seen classes: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong_shape[:5]}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def rebuild_split(spec: BackboneSpec, state: dict[str, torch.Tensor]) -> SplitModel:
    """The trained backbone split at ``spec.layer`` (stem -> A, head -> z, classifier)."""
    return split_at_layer(rebuild_model(spec, state), spec.layer).eval()


def seen_label_map(spec: BackboneSpec) -> dict[int, int]:
    """``class_id -> classifier output index`` for the seen classes."""
    return {cid: j for j, cid in enumerate(spec.seen_class_ids)}


def image_loader(
    images: pd.DataFrame,
    spec: BackboneSpec,
    *,
    batch_size: int,
    labels: np.ndarray | None = None,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A loader over ``images`` (canonical table rows) preprocessed as ``spec`` says.

    Labels default to the classifier index of each image's class (``-1`` for classes the
    classifier does not have, e.g. unseen classes).  The loader's third item is the row
    position in ``images``.  ``num_workers`` decode images in worker processes (the batches
    and their order do not change).
    """
    if labels is None:
        mapping = seen_label_map(spec)
        labels = images["class_id"].map(lambda c: mapping.get(int(c), -1)).to_numpy()
    dataset = ImageTableDataset(
        images["path"].tolist(),
        [int(v) for v in labels],
        spec.image_size,
        spec.mean,
        spec.std,
        augment=augment,
        crop_fraction=spec.crop_fraction,
    )
    return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)


def stratified_holdout(class_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing ``fraction`` of each class's items (at least one item kept in
    training per class; classes with one item are never held out).

    Args:
        class_ids: (N,) class of each item.
        fraction: share of each class to hold out, in [0, 1).
        seed: random seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"holdout fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(class_ids), dtype=bool)
    for cid in np.unique(class_ids):
        members = np.flatnonzero(class_ids == cid)
        n_out = min(int(round(fraction * len(members))), len(members) - 1)
        if n_out > 0:
            held[rng.choice(members, size=n_out, replace=False)] = True
    return held


def choose_classes(class_ids: np.ndarray, amount: int | float, seed: int) -> np.ndarray:
    """A seeded choice of ``amount`` classes (a count, or a fraction of them; at least one
    when the amount is positive, and always leaving at least two unchosen).

    Returns:
        Sorted int64 array of the chosen class ids.
    """
    class_ids = np.unique(np.asarray(class_ids, dtype=np.int64))
    if isinstance(amount, float) and 0.0 < amount < 1.0:
        count = max(1, int(round(amount * len(class_ids))))
    else:
        count = int(amount)
    if count < 0 or count > len(class_ids) - 2:
        raise InputError(
            f"cannot choose {amount} of {len(class_ids)} classes as pseudo-unseen "
            "(at least two must stay seen)"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(class_ids, size=count, replace=False))


@torch.no_grad()
def layer_activations(split: SplitModel, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Activations at the split layer for every image of ``loader``: (N, K, h, w) float32.

    Streams batches into one preallocated tensor (memory = the output alone).
    """
    out: torch.Tensor | None = None
    start = 0
    total = len(loader.dataset)
    for batch in loader:
        a = split.stem(batch[0].to(device)).float().cpu()
        if out is None:
            out = torch.empty((total, *a.shape[1:]), dtype=a.dtype)
        out[start : start + len(a)] = a
        start += len(a)
    if out is None:
        raise InputError("no reference images to compute activations on")
    return out


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_images(folder: str, max_images: int | None, seed: int) -> pd.DataFrame:
    """Every image file under ``folder`` (sorted; a seeded sample of ``max_images``).

    Returns:
        A table with a ``path`` column, the shape :func:`image_loader` reads.
    """
    from pathlib import Path

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: reference image folder not found")
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    table = pd.DataFrame({"path": pd.Series(paths, dtype="str")})
    return sample_rows(table, max_images, seed)


def sample_rows(table: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``max_rows`` rows, in their original order."""
    if max_rows is None or len(table) <= max_rows:
        return table.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(table), size=max_rows, replace=False))
    return table.iloc[keep].reset_index(drop=True)
