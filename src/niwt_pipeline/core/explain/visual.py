"""Visual explanations: Grad-CAM of a classifier row (seen or new) overlaid on the image
the model saw (Selvaraju et al., ICCV 2017; NIWT, ECCV 2018, sec. 3.4)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from niwt_pipeline.core.backbones.cut import CutModel
from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.gradcam import gradcam, overlay
from niwt_pipeline.core.imageset import denormalise, model_view, network_inputs
from niwt_pipeline.core.rows import ClassRows

logger = logging.getLogger(__name__)


def visual_explanations(
    cut: CutModel,
    paths: Sequence[str],
    rows: torch.Tensor | np.ndarray,
    spec: BackboneSpec,
    *,
    alpha: float = 0.5,
) -> list[Image.Image]:
    """Grad-CAM of a row per image file, overlaid on the image as the model saw it.

    Args:
        cut: the cut model; its state is left as it was.
        paths: N image files, preprocessed as ``spec`` says (resize, centre crop, normalise).
        rows: ``(N, D)`` a classifier row per image (e.g. its predicted row), or ``(D,)``.
        spec: the backbone's input size and normalisation.
        alpha: the heat map's weight in the blend.

    Returns:
        N RGB images of ``spec.image_size`` px; an empty list (with a warning) for no paths.

    Raises:
        InputError: naming the file when an image is missing or unreadable.
    """
    if len(paths) == 0:
        logger.warning("visual_explanations: no images to explain; returning no overlays")
        return []
    x = network_inputs(paths, spec)
    cams = gradcam(cut, x, torch.as_tensor(rows), upsample_to="input").cpu()
    return [
        overlay(Image.fromarray(img), cam, alpha)
        for img, cam in zip(denormalise(x, spec), cams, strict=True)
    ]


def choose_example_classes(
    classes: pd.DataFrame, explained: pd.DataFrame, max_classes: int
) -> list[int]:
    """Up to ``max_classes`` classes with explained test images: about half unseen (first),
    the rest seen; classes without test images are skipped with a notice.

    Args:
        classes: ``class_id``, ``name``, ``seen`` of every class.
        explained: the explained images (``true_class_id``).
        max_classes: how many classes at most.

    Returns:
        The chosen class ids, unseen classes first, each group in ``class_id`` order.
    """
    has_images = set(explained["true_class_id"].tolist())
    ordered = classes.sort_values("class_id")
    pools = {}
    for seen in (False, True):
        pool = []
        members = ordered[ordered["seen"] == seen]
        for cid, name in zip(members["class_id"], members["name"], strict=True):
            if int(cid) in has_images:
                pool.append(int(cid))
            else:
                logger.info(
                    "visual explanations: class %s has no test images to explain: skipped", name
                )
        pools[seen] = pool
    n_unseen = min(len(pools[False]), math.ceil(max_classes / 2))
    n_seen = min(len(pools[True]), max_classes - n_unseen)
    n_unseen = min(len(pools[False]), max_classes - n_seen)
    return pools[False][:n_unseen] + pools[True][:n_seen]


def example_maps(
    cut: CutModel,
    spec: BackboneSpec,
    rows: ClassRows,
    table: pd.DataFrame,
    alpha: float,
) -> dict[str, torch.Tensor]:
    """The image as the model saw it and Grad-CAM of the predicted and of the true class's row.

    Args:
        cut: the cut model.
        spec: its preprocessing.
        rows: rows covering every predicted and true class (seen rows + new rows).
        table: image rows with ``image_id``, ``path``, ``predicted_class_id``,
            ``true_class_id``.
        alpha: the heat map's weight in the overlays.

    Returns:
        ``image_id`` (N,), ``original``, ``cam_predicted``, ``cam_true`` (N, H, W, 3) uint8.

    Raises:
        InputError: a missing or unreadable image, or a class without a row.
    """
    paths = table["path"].tolist()
    side = spec.image_size
    empty = torch.empty((0, side, side, 3), dtype=torch.uint8)

    def maps(class_ids: np.ndarray) -> torch.Tensor:
        if not paths:
            return empty
        weight = torch.as_tensor(rows.rows_for(class_ids)[0], dtype=torch.float32)
        overlays = visual_explanations(cut, paths, weight, spec, alpha=alpha)
        return torch.from_numpy(np.stack([np.asarray(o, dtype=np.uint8) for o in overlays]))

    return {
        "image_id": torch.tensor(table["image_id"].to_numpy(dtype=np.int64)),
        "original": torch.from_numpy(model_view(paths, spec)) if paths else empty,
        "cam_predicted": maps(table["predicted_class_id"].to_numpy()),
        "cam_true": maps(table["true_class_id"].to_numpy()),
    }
