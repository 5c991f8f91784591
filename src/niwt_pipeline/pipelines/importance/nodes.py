"""Importance nodes: tables of the seen images' importances and their class means."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def channel_columns(k: int) -> list[str]:
    """Column names of the K importance channels: ``k_0000``, ``k_0001``, ..."""
    return [f"k_{i:04d}" for i in range(k)]


def build_importance_tables(
    image_outputs: dict[str, Any], images: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The importance matrix per image (seen trainval images) and per class (their mean).

    Returns:
        ``image_importance``: ``image_id``, ``class_id``, then ``k_0000..`` (float32);
        ``class_importance``: ``class_id``, ``n_images``, then the mean over the class's images.
    """
    ids = image_outputs["image_id"].numpy()
    importance = image_outputs["importance_gt"].numpy()
    table = images.set_index("image_id").loc[ids]
    keep = (table["split"].to_numpy() == "trainval") & ~np.isnan(importance).any(axis=1)
    columns = channel_columns(importance.shape[1])
    per_image = pd.DataFrame(importance[keep], columns=columns)
    per_image.insert(0, "class_id", table["class_id"].to_numpy()[keep].astype("int64"))
    per_image.insert(0, "image_id", ids[keep].astype("int64"))
    per_class = per_image.drop(columns="image_id").groupby("class_id").mean()
    per_class.insert(0, "n_images", per_image.groupby("class_id").size())
    logger.info(
        "importance matrix: %d seen images x %d channels, %d classes",
        len(per_image),
        importance.shape[1],
        len(per_class),
    )
    return per_image, per_class.reset_index()
