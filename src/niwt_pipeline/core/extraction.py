"""Per-image outputs of a trained backbone: features, logits and importances, in one
streamed pass or in resumable shards.

The importance of class c at the importance layer is ``alpha_k = sum over positions of
d logit_c / d A_k`` (Selvaraju et al., ECCV 2018, eq. 1, with the sum the authors' code
takes), computed by :func:`niwt_pipeline.core.importance.extract` with one
``torch.autograd.grad`` per batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.importance import extract
from niwt_pipeline.core.shards import ShardStore, fingerprint, merge_shards, plan_shards, run_shards
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.trunk import TrunkActivations

logger = logging.getLogger(__name__)

#: The columns of ``images`` a shard's outputs depend on (its fingerprint covers them).
IDENTITY_COLUMNS = ["image_id", "path", "class_id"]


@dataclass
class ExtractionConfig:
    """How the per-image outputs are computed.

    Attributes:
        batch_size: images per forward/backward pass.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        targets: ``"gt"`` (importance of the true class) or ``"gt_and_pred"`` (also of the
            predicted class).
        shard_size: ``None`` extracts every image in one pass; a number of images (a
            multiple of ``batch_size``, so every batch is the one the single pass would see
            and the merged outputs are bit-identical to it) extracts them in resumable shards.
        num_workers: image-decoding worker processes (the batches do not change).
    """

    batch_size: int = 64
    device: str = "auto"
    targets: Literal["gt", "gt_and_pred"] = "gt_and_pred"
    shard_size: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.shard_size is not None and self.shard_size % self.batch_size:
            batch, value = self.batch_size, self.shard_size
            below, above = max(batch, value // batch * batch), -(-value // batch) * batch
            raise ValueError(
                f"shard_size {value} must be a multiple of batch_size {batch} (e.g. {below} or "
                f"{above}), so that the shards' batches are those of the unsharded pass"
            )


def image_outputs(
    backbone: TrainedBackbone,
    images: pd.DataFrame,
    config: ExtractionConfig,
    store: ShardStore | None = None,
    trunk: TrunkActivations | None = None,
) -> dict[str, torch.Tensor]:
    """Features, logits and importances (true and predicted class) of every image.

    With ``config.shard_size`` set, ``images`` is cut in table order into shards of that
    many images; each shard missing from ``store`` or stale there (its fingerprint of the
    weights, spec, the shard's ids/paths/classes, ``targets``, ``batch_size``, device type
    and torch version differs) is extracted and written atomically before the next one
    starts; then every shard is merged.  The result is identical to the unsharded one.

    Args:
        backbone: the trained backbone.
        images: canonical image rows (``image_id``, ``path``, ``class_id``).
        config: batch size, device, targets, sharding.
        store: the shard store; needed only with ``shard_size``.
        trunk: stored activations of the backbone's frozen trunk: when they cover the
            images, only the head runs (see :meth:`TrainedBackbone.inputs`).

    Returns:
        ``image_id`` (N,), ``features`` (N, D), ``logits`` (N, S), ``predicted`` (N,),
        ``importance_gt`` (N, K) (NaN rows for classes the classifier does not have) and,
        unless ``targets == "gt"``, ``importance_pred`` (N, K); rows follow ``images``.

    Raises:
        InputError: ``shard_size`` without a store; unreadable images (naming the file).
    """
    if config.shard_size is not None and store is None:
        raise InputError("extraction.shard_size needs the image_output_shards store")
    spec = backbone.spec
    device = resolve_device(config.device)
    backbone.on(device)

    def outputs_of(rows: pd.DataFrame) -> dict[str, torch.Tensor]:
        model, loader = backbone.inputs(
            rows, trunk, batch_size=config.batch_size, num_workers=config.num_workers
        )
        result = extract(model, loader, device=device, targets=config.targets)
        outputs = {
            "image_id": torch.as_tensor(rows["image_id"].to_numpy()[result.indices]),
            "features": torch.from_numpy(result.features),
            "logits": torch.from_numpy(result.logits),
            "predicted": torch.from_numpy(result.predicted),
            "importance_gt": torch.from_numpy(result.importance_gt),
        }
        if result.importance_pred is not None:
            outputs["importance_pred"] = torch.from_numpy(result.importance_pred)
        return outputs

    started = time.perf_counter()
    computed = len(images)
    if config.shard_size is None:
        outputs = outputs_of(images)
    else:
        settings = {"targets": config.targets, "batch_size": config.batch_size}
        context = fingerprint(
            backbone.state, spec.to_dict(), settings, device.type, torch.__version__
        )
        shards = plan_shards(images[IDENTITY_COLUMNS], config.shard_size, context)
        run = run_shards(
            store, shards, lambda shard: outputs_of(images.iloc[shard.start : shard.stop])
        )
        outputs = merge_shards(store, shards)
        computed = sum(len(shards[i]) for i in run.computed)
    seconds = time.perf_counter() - started
    logger.info(
        "extracted %d images (%d computed now) at layer %s (K=%d) in %.1f s (%.0f images/s)",
        len(images),
        computed,
        spec.layer,
        outputs["importance_gt"].shape[1],
        seconds,
        computed / max(seconds, 1e-9),
    )
    return outputs
