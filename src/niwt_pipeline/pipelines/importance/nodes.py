"""Importance node: tables of the seen images' importances and their class means."""

from __future__ import annotations

import pandas as pd
import torch

from niwt_pipeline.core.importance import importance_tables


def build_importance_tables(
    image_outputs: dict[str, torch.Tensor], images: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The importance matrix per image (seen trainval images) and per class (their mean).

    Returns:
        ``image_importance``: ``image_id``, ``class_id``, then ``k_0000..`` (float32);
        ``class_importance``: ``class_id``, ``n_images``, then the mean over the class's images.
    """
    return importance_tables(image_outputs, images)
