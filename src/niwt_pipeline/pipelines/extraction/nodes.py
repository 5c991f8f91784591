"""Extraction node: one streamed pass of the backbone over every image."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from niwt_pipeline.core.importance import extract
from niwt_pipeline.core.modelio import BackboneSpec, image_loader, rebuild_split
from niwt_pipeline.core.training import resolve_device

logger = logging.getLogger(__name__)


class ExtractionParams(BaseModel):
    """``params:extraction``."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1)
    device: str = "auto"
    targets: Literal["gt", "gt_and_pred"] = "gt_and_pred"


def extract_image_outputs(
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    images: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Features, logits and importances (ground-truth and predicted class) of every image.

    Importance of class c at the layer: alpha_k = sum over positions of d logit_c / d A_k,
    computed with one ``torch.autograd.grad`` per batch.  Rows follow ``images``;
    ``importance_gt`` is NaN for images of classes the classifier does not have (unseen).

    Returns:
        ``image_id`` (N,), ``features`` (N, D), ``logits`` (N, S), ``predicted`` (N,),
        ``importance_gt`` (N, K) and, unless ``targets == "gt"``, ``importance_pred`` (N, K).
    """
    options = ExtractionParams(**params)
    spec = BackboneSpec.from_dict(backbone_spec)
    device = resolve_device(options.device)
    split = rebuild_split(spec, backbone_weights).to(device)
    loader = image_loader(images, spec, batch_size=options.batch_size)
    started = time.perf_counter()
    result = extract(split, loader, device=device, targets=options.targets)
    seconds = time.perf_counter() - started
    logger.info(
        "extracted %d images at layer %s (K=%d) in %.1f s (%.0f images/s)",
        len(images),
        spec.layer,
        result.importance_gt.shape[1],
        seconds,
        len(images) / max(seconds, 1e-9),
    )
    outputs = {
        "image_id": torch.as_tensor(images["image_id"].to_numpy()[result.indices]),
        "features": torch.from_numpy(result.features),
        "logits": torch.from_numpy(result.logits),
        "predicted": torch.from_numpy(result.predicted),
        "importance_gt": torch.from_numpy(result.importance_gt),
    }
    if result.importance_pred is not None:
        outputs["importance_pred"] = torch.from_numpy(result.importance_pred)
    return outputs
