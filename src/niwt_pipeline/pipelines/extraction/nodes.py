"""Extraction node: one streamed pass of the backbone over every image, optionally in
resumable shards (``niwt_pipeline.core.extraction``)."""

from __future__ import annotations

import pandas as pd
import torch

from niwt_pipeline.core.extraction import image_outputs
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.params import ExtractionParams


def extract_image_outputs(
    backbone: TrainedBackbone,
    images: pd.DataFrame,
    options: ExtractionParams,
    image_output_shards: ShardStore | None = None,
    trunk_activations: TrunkActivations | None = None,
) -> dict[str, torch.Tensor]:
    """Features, logits and importances (true and predicted class) of every image.

    Importance of class c at the layer: alpha_k = sum over positions of d logit_c / d A_k
    (one ``torch.autograd.grad`` per batch); with a frozen trunk only the head runs, on
    its stored activations; see
    :func:`niwt_pipeline.core.extraction.image_outputs` for the outputs and the shards.

    Returns:
        ``image_id`` (N,), ``features`` (N, D), ``logits`` (N, S), ``predicted`` (N,),
        ``importance_gt`` (N, K) and, unless ``targets == "gt"``, ``importance_pred`` (N, K).
    """
    return image_outputs(backbone, images, options.config(), image_output_shards, trunk_activations)
