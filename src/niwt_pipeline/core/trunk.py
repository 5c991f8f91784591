"""A frozen trunk's activations at the importance layer, computed once per image.

In frozen-trunk mode the network below the importance layer ``L`` (the *stem* of
:class:`~niwt_pipeline.core.backbones.cut.CutModel`) keeps its pretrained weights, as in the
authors' CUB setting, where the new classifier is trained on top of a frozen ImageNet
network (Selvaraju et al., "Choose Your Neuron", ECCV 2018, sec. 4).  Everything NIWT needs
after ``L`` (training the head, the validation backbone, features, logits and importances,
G of the reference images) depends only on the activations ``A = stem(x)`` and the small
head above ``L``, so ``A`` is computed once per image and stored; every later stage runs
the head on it.

:func:`compute_trunk_activations` writes ``A`` in resumable shards
(:mod:`niwt_pipeline.core.shards`; a kill loses at most one shard, a stale shard is
recomputed), one row per image for its evaluation view (the centre crop) plus, for the
trainval images, ``views - 1`` random-crop views used as training augmentation.
:class:`TrunkActivations` reads them back row by row from the memory-mapped shard files,
so RAM does not grow with the number of images.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import DataLoader, Dataset

from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import ImageTableDataset, make_loader
from niwt_pipeline.core.shards import ShardStore, fingerprint, plan_shards, run_shards

logger = logging.getLogger(__name__)

#: Written into every manifest; a new value makes stored activations unusable.
TRUNK_FORMAT = "niwt-trunk/1"
#: The tensor name inside each shard file.
KEY = "activations"


@dataclass
class TrunkConfig:
    """Whether the trunk below the importance layer is frozen, and how its activations
    are computed.

    Attributes:
        frozen: ``False``: the whole network is trained on the seen classes (fine-tuned
            from pretrained weights, or from scratch).  ``True``: the network below the
            importance layer keeps its pretrained weights (``backbone.weights`` must name
            them); its activations are computed once and only the head above the layer
            and the classifier are trained.
        views: views stored per trainval image: 1 = the centre crop only (no
            augmentation); ``v > 1`` adds ``v - 1`` seeded random crops (80-100% of the
            area, as :class:`~niwt_pipeline.core.imageset.ImageTableDataset` draws them),
            and each training epoch reads one view per image at random.
        shard_size: images (rows) per resumable shard file.
        batch_size: images per forward pass of the stem.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: seeds the random-crop views.
    """

    frozen: bool = False
    views: int = 1
    shard_size: int = 512
    batch_size: int = 64
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.views < 1:
            problems.append(f"views must be >= 1, got {self.views}")
        if self.shard_size < 1:
            problems.append(f"shard_size must be >= 1, got {self.shard_size}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if problems:
            raise InputError("backbone.trunk: " + "; ".join(problems))


def trunk_context(stem: nn.Module, spec: BackboneSpec, config: TrunkConfig) -> str:
    """Fingerprint of everything the stored activations depend on: the stem's weights and
    buffers, the architecture, layer and preprocessing of ``spec``, the number of views,
    their seed, and the torch version (not the seen classes: the stem has no classifier)."""
    preprocessing = {
        "arch": spec.arch,
        "layer": spec.layer,
        "image_size": spec.image_size,
        "crop_fraction": spec.crop_fraction,
        "mean": list(spec.mean),
        "std": list(spec.std),
    }
    settings = {"views": config.views, "seed": config.seed}
    state = {k: v.detach().cpu() for k, v in stem.state_dict().items()}
    return fingerprint(TRUNK_FORMAT, state, preprocessing, settings, torch.__version__)


def _row_table(images: pd.DataFrame, views: int) -> pd.DataFrame:
    """One row per (image, view): view 0 of every image, then views 1.. of trainval ones."""
    base = images[["image_id", "path", "class_id"]].reset_index(drop=True).assign(view=0)
    parts = [base]
    if views > 1 and "split" in images:
        trainval = base[(images["split"] == "trainval").to_numpy()]
        parts += [trainval.assign(view=v) for v in range(1, views)]
    return pd.concat(parts, ignore_index=True)


class _ViewDataset(Dataset):
    """Images preprocessed as the stem sees them: view 0 the centre crop, view ``v > 0`` a
    random crop seeded by (seed, image_id, v), whatever the batch or shard it falls in."""

    def __init__(self, rows: pd.DataFrame, spec: BackboneSpec, seed: int) -> None:
        paths = rows["path"].tolist()
        zeros = [0] * len(paths)
        common = dict(crop_fraction=spec.crop_fraction)
        self.centre = ImageTableDataset(
            paths, zeros, spec.image_size, spec.mean, spec.std, **common
        )
        self.random = ImageTableDataset(
            paths, zeros, spec.image_size, spec.mean, spec.std, augment=True, **common
        )
        self.image_ids = rows["image_id"].to_numpy(dtype=np.int64)
        self.views = rows["view"].to_numpy(dtype=np.int64)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        view = int(self.views[index])
        if view == 0:
            return self.centre[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + int(self.image_ids[index])) * 97 + view)
            return self.random[index]


def compute_trunk_activations(
    stem: nn.Module,
    spec: BackboneSpec,
    images: pd.DataFrame,
    config: TrunkConfig,
    store: ShardStore,
) -> TrunkActivations:
    """Activations of the frozen ``stem`` for every image (and view), stored in shards.

    Each shard missing from ``store`` or stale there (another stem, layer, image size,
    preprocessing, number of views, seed, torch version, or other images) is computed and
    written atomically before the next starts; a killed run resumes after the last stored
    shard.  Shards of another plan are removed.

    Args:
        stem: the pretrained network up to the importance layer, ``x: (B, 3, H, W) ->
            A: (B, K, h, w)`` (run in eval mode, without autograd).
        spec: the input preprocessing (``image_size``, ``crop_fraction``, ``mean``,
            ``std``), ``arch`` and ``layer``.
        images: canonical image rows (``image_id``, ``path``, ``class_id``, ``split``).
        config: views, shard size, batch size, device, seed.
        store: the shard folder.

    Returns:
        The :class:`TrunkActivations` (nothing is held in memory; rows are read from the
        files on demand).

    Raises:
        InputError: when there are no images, or an image cannot be read (naming it).
    """
    if not len(images):
        raise InputError("no images to compute the trunk's activations on")
    from niwt_pipeline.core.training import resolve_device

    device = resolve_device(config.device)
    rows = _row_table(images, config.views)
    context = trunk_context(stem, spec, config)
    shards = plan_shards(rows, config.shard_size, context)
    stem = stem.to(device).eval()

    def compute(shard: Any) -> dict[str, torch.Tensor]:
        part = rows.iloc[shard.start : shard.stop].reset_index(drop=True)
        loader = make_loader(_ViewDataset(part, spec, config.seed), config.batch_size)
        out: torch.Tensor | None = None
        with torch.no_grad():
            for x, _, index in loader:
                a = stem(x.to(device)).float().cpu()
                if out is None:
                    out = torch.empty((len(part), *a.shape[1:]), dtype=torch.float32)
                out[index] = a
        assert out is not None
        return {KEY: out}

    started = time.perf_counter()
    run = run_shards(store, shards, compute)
    with safe_open(str(store.path(shards[0].name)), framework="pt") as handle:
        shape = list(handle.get_slice(KEY).get_shape()[1:])
    manifest = {
        "format": TRUNK_FORMAT,
        "frozen": True,
        "fingerprint": context,
        "views": config.views,
        "shape": shape,
        "arch": spec.arch,
        "layer": spec.layer,
        "rows": {"image_id": rows["image_id"].tolist(), "view": rows["view"].tolist()},
        "shards": [
            {"name": s.name, "start": s.start, "stop": s.stop, "fingerprint": s.fingerprint}
            for s in shards
        ],
    }
    logger.info(
        "trunk activations at %s %s: %d images, %d rows (%d views), %d of %d shards computed "
        "in %.1f s",
        spec.layer,
        tuple(shape),
        len(images),
        len(rows),
        config.views,
        len(run.computed),
        len(shards),
        time.perf_counter() - started,
    )
    return TrunkActivations(store, manifest)


class TrunkActivations:
    """The stored activations of a frozen trunk, by (image, view), read on demand.

    ``TrunkActivations.none()`` stands for "the whole network is trained" (no stored
    activations); every consumer then runs the network on the images.

    Args:
        store: the shard folder, or ``None`` with ``none()``.
        manifest: what :func:`compute_trunk_activations` wrote (``fingerprint``, ``views``,
            ``shape`` = ``[K, h, w]``, ``rows`` = per-row ``image_id`` and ``view``,
            ``shards`` = name, ``start``, ``stop``, ``fingerprint``).

    Raises:
        InputError: a manifest of another format, or one whose rows and shards disagree.
    """

    def __init__(self, store: ShardStore | None, manifest: dict[str, Any]) -> None:
        if manifest.get("format") != TRUNK_FORMAT:
            raise InputError(
                f"trunk activations: format {manifest.get('format')!r}, expected "
                f"{TRUNK_FORMAT!r}; run the backbone pipeline again to recompute them"
            )
        self.store = store
        self.manifest = manifest
        self._handles: dict[str, Any] = {}
        if not self.available:
            return
        ids = manifest["rows"]["image_id"]
        views = manifest["rows"]["view"]
        shards = manifest["shards"]
        if len(ids) != len(views) or (shards and shards[-1]["stop"] != len(ids)):
            raise InputError("trunk activations: the manifest's rows and shards disagree")
        self._starts = [int(s["start"]) for s in shards]
        self._by_image: dict[int, list[int]] = {}
        for row, (image_id, view) in enumerate(zip(ids, views, strict=True)):
            views_of = self._by_image.setdefault(int(image_id), [])
            if view == 0:
                views_of.insert(0, row)
            else:
                views_of.append(row)

    @classmethod
    def none(cls) -> TrunkActivations:
        """No stored activations: the whole network is trained (``backbone.trunk.frozen``
        is false)."""
        return cls(None, {"format": TRUNK_FORMAT, "frozen": False})

    def __repr__(self) -> str:
        if not self.available:
            return "TrunkActivations(none: the whole network is trained)"
        return (
            f"TrunkActivations({len(self._by_image)} images, {self.manifest['views']} views, "
            f"A {tuple(self.manifest['shape'])}, {self.store})"
        )

    @property
    def available(self) -> bool:
        """Whether activations are stored (frozen-trunk mode)."""
        return bool(self.manifest.get("frozen"))

    @property
    def fingerprint(self) -> str | None:
        """What the activations were computed from (:func:`trunk_context`), or ``None``."""
        return self.manifest.get("fingerprint") if self.available else None

    def serves(self, spec: BackboneSpec) -> bool:
        """Whether these activations are those of the backbone with ``spec`` (trained with
        this frozen trunk: ``spec.trunk`` equals :attr:`fingerprint`)."""
        return self.available and spec.trunk is not None and spec.trunk == self.fingerprint

    def covers(self, image_ids: Sequence[int] | np.ndarray) -> bool:
        """Whether every image of ``image_ids`` has stored activations."""
        return self.available and all(int(i) in self._by_image for i in image_ids)

    def check_files(self) -> None:
        """Refuse shard files that are missing or were rewritten since the manifest.

        Raises:
            InputError: naming the first missing or stale shard file.
        """
        assert self.store is not None
        for shard in self.manifest["shards"]:
            if self.store.fingerprint_of(shard["name"]) != shard["fingerprint"]:
                raise InputError(
                    f"{self.store.path(shard['name'])}: missing or stale trunk activations; "
                    "run the backbone pipeline again to recompute them"
                )

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            assert self.store is not None
            handle = safe_open(str(self.store.path(name)), framework="pt")
            self._handles[name] = handle
        return handle

    def row(self, row: int) -> torch.Tensor:
        """Row ``row`` of the stored activations: ``(K, h, w)`` float32 (read from the
        memory-mapped shard file)."""
        index = bisect.bisect_right(self._starts, row) - 1
        shard = self.manifest["shards"][index]
        local = row - int(shard["start"])
        return self._handle(shard["name"]).get_slice(KEY)[local : local + 1][0]

    def views_of(self, image_id: int) -> list[int]:
        """The rows of an image's views, the centre crop first.

        Raises:
            InputError: when the image has no stored activations.
        """
        try:
            return self._by_image[int(image_id)]
        except KeyError:
            raise InputError(f"image_id {image_id} has no stored trunk activations") from None

    def loader(
        self,
        images: pd.DataFrame,
        spec: BackboneSpec,
        *,
        batch_size: int,
        labels: np.ndarray | None = None,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
    ) -> DataLoader:
        """A loader of stored activations with the batches of
        :func:`~niwt_pipeline.core.imageset.image_loader`: ``(A (B, K, h, w), labels (B,),
        row positions (B,))``.

        Args:
            images: rows with ``image_id`` (and ``class_id`` unless ``labels`` is given).
            spec: gives the default labels (the classifier index of each image's class,
                ``-1`` for classes the classifier does not have).
            batch_size: rows per batch.
            labels: (N,) labels overriding the default.
            shuffle, seed: shuffled order following ``seed``.
            augment: each item is one of the image's stored views drawn with torch's RNG
                (the centre crop only when one view is stored).

        Raises:
            InputError: an image without stored activations.
        """
        if labels is None:
            mapping = spec.seen_label_map()
            labels = images["class_id"].map(lambda c: mapping.get(int(c), -1)).to_numpy()
        rows = [self.views_of(i) for i in images["image_id"].to_numpy()]
        dataset = _StoredRows(self, rows, [int(v) for v in labels], augment)
        return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed)


class _StoredRows(Dataset):
    def __init__(
        self, trunk: TrunkActivations, rows: list[list[int]], labels: list[int], augment: bool
    ) -> None:
        self.trunk, self.rows, self.labels, self.augment = trunk, rows, labels, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        views = self.rows[index]
        row = views[int(torch.randint(len(views), ()))] if self.augment else views[0]
        return self.trunk.row(row), self.labels[index], index


__all__ = [
    "TRUNK_FORMAT",
    "TrunkActivations",
    "TrunkConfig",
    "compute_trunk_activations",
    "trunk_context",
]
