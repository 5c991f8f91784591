"""Extraction node: one streamed pass of the backbone over every image, optionally in
resumable shards."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.importance import extract
from niwt_pipeline.core.modelio import BackboneSpec, image_loader, rebuild_split
from niwt_pipeline.core.shards import ShardStore, fingerprint, merge_shards, plan_shards, run_shards
from niwt_pipeline.core.training import resolve_device

logger = logging.getLogger(__name__)

#: The columns of ``images`` a shard's outputs depend on (its fingerprint covers them).
IDENTITY_COLUMNS = ["image_id", "path", "class_id"]


class ExtractionParams(BaseModel):
    """``params:extraction``.

    ``num_workers``: image-decoding worker processes (decoding, not the network, limits a
    GPU run: about 4.5x more images/s with 8 workers on a 16-core GPU machine).
    ``shard_size``: ``None`` extracts every image in one pass; a number of images (a
    multiple of ``batch_size``, so every batch is the one the unsharded pass would see and
    the merged outputs are bit-identical to it) extracts them in resumable shards.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1)
    device: str = "auto"
    targets: Literal["gt", "gt_and_pred"] = "gt_and_pred"
    shard_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)

    @field_validator("shard_size")
    @classmethod
    def _whole_batches(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch = info.data.get("batch_size")
        if value is not None and batch and value % batch:
            below, above = max(batch, value // batch * batch), -(-value // batch) * batch
            raise ValueError(
                f"shard_size {value} must be a multiple of batch_size {batch} (e.g. {below} or "
                f"{above}), so that the shards' batches are those of the unsharded pass"
            )
        return value


def extract_image_outputs(
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    images: pd.DataFrame,
    params: dict[str, Any],
    image_output_shards: ShardStore | None = None,
) -> dict[str, torch.Tensor]:
    """Features, logits and importances (ground-truth and predicted class) of every image.

    Importance of class c at the layer: alpha_k = sum over positions of d logit_c / d A_k,
    computed with one ``torch.autograd.grad`` per batch.  Rows follow ``images``;
    ``importance_gt`` is NaN for images of classes the classifier does not have (unseen).

    With ``shard_size`` set, ``images`` is cut in table order into shards of that many
    images; each shard missing from ``image_output_shards`` or stale there (its fingerprint
    of the weights, spec, the shard's ids/paths/classes, ``targets``, ``batch_size``, device
    type and torch version differs) is extracted and written atomically before the next
    one starts; then every shard is merged.  The result is identical to the unsharded one.

    Args:
        image_output_shards: the shard store (catalog ``image_output_shards``); needed only
            with ``shard_size``.

    Returns:
        ``image_id`` (N,), ``features`` (N, D), ``logits`` (N, S), ``predicted`` (N,),
        ``importance_gt`` (N, K) and, unless ``targets == "gt"``, ``importance_pred`` (N, K).
    """
    options = ExtractionParams(**params)
    if options.shard_size is not None and image_output_shards is None:
        raise InputError("extraction.shard_size needs the image_output_shards store")
    spec = BackboneSpec.from_dict(backbone_spec)
    device = resolve_device(options.device)
    split = rebuild_split(spec, backbone_weights).to(device)

    def outputs_of(rows: pd.DataFrame) -> dict[str, torch.Tensor]:
        loader = image_loader(
            rows, spec, batch_size=options.batch_size, num_workers=options.num_workers
        )
        result = extract(split, loader, device=device, targets=options.targets)
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
    if options.shard_size is None:
        outputs = outputs_of(images)
    else:
        settings = {"targets": options.targets, "batch_size": options.batch_size}
        context = fingerprint(
            backbone_weights, backbone_spec, settings, device.type, torch.__version__
        )
        shards = plan_shards(images[IDENTITY_COLUMNS], options.shard_size, context)
        run = run_shards(
            image_output_shards,
            shards,
            lambda shard: outputs_of(images.iloc[shard.start : shard.stop]),
        )
        outputs = merge_shards(image_output_shards, shards)
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
