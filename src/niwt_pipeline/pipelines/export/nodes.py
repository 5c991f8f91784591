"""Export node: gather what :func:`niwt_pipeline.core.data.export.export_xlsa17` writes."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.modelio import BackboneSpec, rebuild_split


def relative_paths(paths: pd.Series) -> np.ndarray:
    """(N,) '/'-separated paths relative to the deepest folder holding every image."""
    parents = [os.path.dirname(p) for p in paths]
    root = os.path.commonpath(parents) if parents else ""
    return np.array([PurePath(os.path.relpath(p, root)).as_posix() for p in paths], dtype=str)


def build_xlsa17_export(
    image_outputs: dict[str, torch.Tensor],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
) -> dict[str, np.ndarray]:
    """The arrays of an xlsa17 export of the features NIWT used.

    Image paths are made relative to the deepest folder common to all images, so their
    sorted order is the ``image_id`` order of the canonical tables.

    Returns:
        The keyword arguments of :func:`~niwt_pipeline.core.data.export.export_xlsa17`:
        ``features`` (N, D) float32, ``labels`` (N,) class ids, ``image_files`` (N,),
        ``splits`` (N,), ``class_names`` (C,), ``att`` (A, C), ``seen_rows`` (S, D),
        ``seen_bias`` (S,), ``seen_class_ids`` (S,).

    Raises:
        ValueError: when ``image_outputs`` has images that ``images`` lacks.
    """
    ids = image_outputs["image_id"].numpy().astype(np.int64)
    table = images.set_index("image_id")
    missing = np.setdiff1d(ids, table.index.to_numpy())
    if len(missing):
        raise ValueError(f"image_outputs has image ids not in images, e.g. {missing[:5].tolist()}")
    rows = table.loc[ids]
    by_class = classes.set_index("class_id").sort_index()
    dk = domain_knowledge_by_class(domain_knowledge)
    spec = BackboneSpec.from_dict(backbone_spec)
    classifier = rebuild_split(spec, backbone_weights).classifier
    return {
        "features": image_outputs["features"].numpy().astype(np.float32),
        "labels": rows["class_id"].to_numpy(dtype=np.int64),
        "image_files": relative_paths(rows["path"]),
        "splits": rows["split"].to_numpy(dtype=str),
        "class_names": by_class["name"].to_numpy(dtype=str),
        "att": dk.to_numpy(dtype=np.float64).T,
        "seen_rows": classifier.weight.detach().cpu().numpy(),
        "seen_bias": classifier.bias.detach().cpu().numpy(),
        "seen_class_ids": np.asarray(spec.seen_class_ids, dtype=np.int64),
    }
