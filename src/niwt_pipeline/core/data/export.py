"""Export the features NIWT used in the xlsa17 layout, so other GZSL code can run on them.

A folder written by :func:`export_xlsa17` holds

``res101.mat``             named as in xlsa17 (whatever the backbone), so scripts written for
                           it read it unchanged: ``features`` (D x N float32), ``labels``
                           (N x 1, **1-based** class indices in ``allclasses_names`` order)
                           and ``image_files`` (N x 1 cell array of relative paths)
``att_splits.mat``         as :func:`~niwt_pipeline.core.data.xlsa17.write_att_splits` writes
                           it: ``att`` (A x C, L2-normalised columns), ``original_att``,
                           ``allclasses_names``, ``trainval_loc`` / ``test_seen_loc`` /
                           ``test_unseen_loc`` (1-based columns of ``features``); with the
                           validation's roles also ``train_loc`` / ``val_loc`` (the trainval
                           images of its train classes / of its pseudo-unseen classes, as
                           xlsa17's own train/validation split), and with the backbone's
                           roles ``backbone_train_loc`` / ``backbone_holdout_loc`` (the images
                           the backbone was trained on / that picked its epoch)
``classifier.safetensors`` the trained seen classifier: ``weight`` (S, D), ``bias`` (S,),
                           ``labels`` (S,) 1-based class index of each row

Images are written in sorted relative-path order, so the xlsa17 convention "positions in
the sorted list of image paths" and "columns of ``features``" are the same thing.
The folder is written to a temporary sibling and renamed into place: a failure leaves no
partial export (and an earlier export at the same place untouched).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.io
from safetensors.numpy import load_file, save_file

from niwt_pipeline.core.data.atomic import replaced_folder
from niwt_pipeline.core.data.tables import SPLITS, domain_knowledge_by_class
from niwt_pipeline.core.data.xlsa17 import (
    SPLIT_KEYS,
    Xlsa17Splits,
    load_mat,
    mat_strings,
    read_att_splits,
    write_att_splits,
)
from niwt_pipeline.core.errors import fail
from niwt_pipeline.core.rows import ClassRows

logger = logging.getLogger(__name__)

FEATURES_FILE = "res101.mat"
#: The features file's name in exports written before it took xlsa17's name (still read).
LEGACY_FEATURES_FILE = "features.mat"
#: Per-image role values -> the position lists they are written to.
VALIDATION_LOC = {"train": "train_loc", "val": "val_loc"}
BACKBONE_LOC = {"train": "backbone_train_loc", "holdout": "backbone_holdout_loc"}
SPLITS_FILE = "att_splits.mat"
CLASSIFIER_FILE = "classifier.safetensors"


@dataclass(frozen=True)
class Xlsa17Export:
    """An export read back by :func:`read_xlsa17_export`.

    Attributes:
        features: (N, D) float32, row i for ``image_files[i]`` (sorted relative paths).
        labels: (N,) int64 **1-based** class indices (column of ``splits.att``).
        image_files: N relative image paths, sorted.
        splits: ``att_splits.mat`` as :func:`read_att_splits` reads it (0-based positions).
        classifier_weight: (S, D) float32 seen classifier rows.
        classifier_bias: (S,) float32.
        classifier_labels: (S,) int64 1-based class index of each row.
        validation_roles: (N,) ``"train"`` / ``"val"`` / ``""`` from ``train_loc`` /
            ``val_loc``, or None when the export has no validation split.
        backbone_roles: (N,) ``"train"`` / ``"holdout"`` / ``""``, or None.
    """

    features: np.ndarray
    labels: np.ndarray
    image_files: list[str]
    splits: Xlsa17Splits
    classifier_weight: np.ndarray
    classifier_bias: np.ndarray
    classifier_labels: np.ndarray
    validation_roles: np.ndarray | None = None
    backbone_roles: np.ndarray | None = None

    def as_arrays(self) -> dict[str, Any]:
        """The keyword arguments of :func:`export_xlsa17` that would write this export again
        (labels and class ids 0-based; ``att`` the original, unnormalised one)."""
        split = np.full(len(self.image_files), "", dtype=object)
        for key, loc in self.splits.locations().items():
            split[loc] = SPLIT_KEYS[key]
        att = self.splits.original_att if self.splits.original_att is not None else self.splits.att
        return {
            "features": self.features,
            "labels": self.labels - 1,
            "image_files": np.asarray(self.image_files, dtype=str),
            "splits": split.astype(str),
            "class_names": np.asarray(self.splits.allclasses_names, dtype=str),
            "att": att,
            "seen_rows": self.classifier_weight,
            "seen_bias": self.classifier_bias,
            "seen_class_ids": self.classifier_labels - 1,
            "validation_roles": self.validation_roles,
            "backbone_roles": self.backbone_roles,
        }


def _cell(strings: Sequence[str]) -> np.ndarray:
    """An n x 1 cell array of strings, as MATLAB writes them."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, value in enumerate(strings):
        cell[i, 0] = np.array([value])
    return cell


def l2_normalise_columns(att: np.ndarray) -> np.ndarray:
    """(A, C) -> columns of unit L2 norm (all-zero columns stay zero), as in xlsa17."""
    att = np.asarray(att, dtype=np.float64)
    norms = np.linalg.norm(att, axis=0, keepdims=True)
    return att / np.where(norms > 0, norms, 1.0)


def _check(
    features: np.ndarray,
    labels: np.ndarray,
    image_files: np.ndarray,
    splits: np.ndarray,
    n_classes: int,
    att: np.ndarray,
    seen_rows: np.ndarray,
    seen_bias: np.ndarray,
    seen_class_ids: np.ndarray,
) -> None:
    n = len(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    for name, value in (("labels", labels), ("image_files", image_files), ("splits", splits)):
        if value.shape != (n,):
            raise ValueError(f"{name} must be ({n},) like features, got shape {value.shape}")
    if len(set(image_files.tolist())) != n:
        raise ValueError("image_files must be unique")
    unknown = sorted(set(splits.tolist()) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits must be in {SPLITS}, found {unknown}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be class ids 0..{n_classes - 1}")
    if att.ndim != 2 or att.shape[1] != n_classes:
        raise ValueError(f"att must be (A, {n_classes}), got shape {att.shape}")
    s = len(seen_class_ids)
    if seen_rows.shape != (s, features.shape[1]) or seen_bias.shape != (s,):
        raise ValueError(
            f"seen_rows {seen_rows.shape} / seen_bias {seen_bias.shape} do not fit "
            f"{s} seen classes and D={features.shape[1]}"
        )
    if s and (seen_class_ids.min() < 0 or seen_class_ids.max() >= n_classes):
        raise ValueError(f"seen_class_ids must be class ids 0..{n_classes - 1}")


def export_xlsa17(
    folder: str | Path,
    *,
    features: np.ndarray,
    labels: Sequence[int],
    image_files: Sequence[str],
    splits: Sequence[str],
    class_names: Sequence[str],
    att: np.ndarray,
    seen_rows: np.ndarray,
    seen_bias: np.ndarray,
    seen_class_ids: Sequence[int],
    validation_roles: Sequence[str] | None = None,
    backbone_roles: Sequence[str] | None = None,
) -> Path:
    """Write ``res101.mat``, ``att_splits.mat`` and ``classifier.safetensors`` to ``folder``.

    Args:
        features: (N, D) penultimate features, any image order.
        labels: (N,) canonical 0-based class ids (column of ``att``, index of ``class_names``).
        image_files: (N,) unique relative image paths ('/' separated).
        splits: (N,) ``trainval``, ``test_seen`` or ``test_unseen``.
        class_names: (C,) names in class-id order (written as ``allclasses_names``).
        att: (A, C) class domain knowledge, column c for class c (written as
            ``original_att``, and L2-normalised column by column as ``att``).
        seen_rows: (S, D) classifier rows; seen_bias: (S,); seen_class_ids: (S,) their
            canonical class ids.
        validation_roles: (N,) ``"train"`` (a trainval image of the validation's train
            classes), ``"val"`` (of its pseudo-unseen classes) or ``""``: written as
            ``train_loc`` / ``val_loc``.
        backbone_roles: (N,) ``"train"``, ``"holdout"`` or ``""``: written as
            ``backbone_train_loc`` / ``backbone_holdout_loc``.

    Returns:
        ``folder``.  Rows are reordered to sorted ``image_files``; labels written 1-based.

    Raises:
        ValueError: on inconsistent shapes, unknown splits or roles, or class ids out of range.
    """
    folder = Path(folder)
    roles = {
        name: _roles(values, len(features), name, allowed)
        for name, values, allowed in (
            ("validation_roles", validation_roles, VALIDATION_LOC),
            ("backbone_roles", backbone_roles, BACKBONE_LOC),
        )
        if values is not None
    }
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    image_files = np.asarray(image_files, dtype=str).reshape(-1)
    splits = np.asarray(splits, dtype=str).reshape(-1)
    names = [str(n) for n in class_names]
    att = np.asarray(att, dtype=np.float64)
    seen_rows = np.asarray(seen_rows, dtype=np.float32)
    seen_bias = np.asarray(seen_bias, dtype=np.float32).reshape(-1)
    seen_class_ids = np.asarray(seen_class_ids, dtype=np.int64).reshape(-1)
    _check(
        features, labels, image_files, splits, len(names), att, seen_rows, seen_bias, seen_class_ids
    )

    order = np.argsort(image_files, kind="stable")
    features, labels, image_files, splits = (
        features[order],
        labels[order],
        image_files[order],
        splits[order],
    )
    locations = {key: np.flatnonzero(splits == split) for key, split in SPLIT_KEYS.items()}
    for name, values in roles.items():
        written = VALIDATION_LOC if name == "validation_roles" else BACKBONE_LOC
        locations |= {key: np.flatnonzero(values[order] == role) for role, key in written.items()}

    with replaced_folder(folder) as tmp:
        scipy.io.savemat(
            tmp / FEATURES_FILE,
            {
                "features": features.T,
                "labels": (labels + 1).reshape(-1, 1),
                "image_files": _cell(image_files.tolist()),
            },
        )
        write_att_splits(
            tmp / SPLITS_FILE,
            att=l2_normalise_columns(att),
            original_att=att,
            allclasses_names=names,
            **locations,
        )
        save_file(
            {
                "weight": np.ascontiguousarray(seen_rows),
                "bias": np.ascontiguousarray(seen_bias),
                "labels": seen_class_ids + 1,
            },
            str(tmp / CLASSIFIER_FILE),
        )
    logger.info(
        "xlsa17 export: %d images x %d features, %d classes (%d seen rows) -> %s",
        features.shape[0],
        features.shape[1],
        len(names),
        len(seen_class_ids),
        folder,
    )
    return folder


def _roles(values: Sequence[str], n: int, name: str, allowed: dict[str, str]) -> np.ndarray:
    array = np.asarray(values, dtype=str).reshape(-1)
    if array.shape != (n,):
        raise ValueError(f"{name} must be ({n},) like features, got shape {array.shape}")
    unknown = sorted(set(array.tolist()) - set(allowed) - {""})
    if unknown:
        raise ValueError(f"{name} must be in {sorted(allowed)} or '', found {unknown}")
    return array


def _roles_from(positions: dict[str, np.ndarray | None], n: int) -> np.ndarray | None:
    """Per-image roles from ``{role: 0-based positions}``; None when no list is present."""
    if all(loc is None for loc in positions.values()):
        return None
    roles = np.full(n, "", dtype=object)
    for role, loc in positions.items():
        if loc is not None:
            roles[np.asarray(loc, dtype=np.int64)] = role
    return roles.astype(str)


def read_xlsa17_export(folder: str | Path) -> Xlsa17Export:
    """Read a folder written by :func:`export_xlsa17` (splits via :func:`read_att_splits`).

    Raises:
        InputError: naming the file when a file is missing or malformed, or when the
            features, labels, image files and split positions disagree.
    """
    folder = Path(folder)
    features_path = folder / FEATURES_FILE
    if not features_path.is_file() and (folder / LEGACY_FEATURES_FILE).is_file():
        features_path = folder / LEGACY_FEATURES_FILE
    content = load_mat(features_path)
    for key in ("features", "labels", "image_files"):
        if key not in content:
            raise fail(features_path, f"missing key {key!r}", key=key)
    features = np.asarray(content["features"], dtype=np.float32).T
    labels = np.asarray(content["labels"], dtype=np.int64).reshape(-1)
    files = mat_strings(content["image_files"], features_path, "image_files")
    n = len(features)
    if len(labels) != n or len(files) != n:
        raise fail(
            features_path,
            f"{n} feature columns, {len(labels)} labels and {len(files)} image files",
        )
    splits = read_att_splits(folder / SPLITS_FILE)
    located = np.sort(np.concatenate(list(splits.locations().values())))
    if not np.array_equal(located, np.arange(n)):
        raise fail(folder / SPLITS_FILE, f"the split positions do not cover the {n} images")
    if n and (labels.min() < 1 or labels.max() > len(splits.allclasses_names)):
        raise fail(features_path, "labels are not 1-based indices of allclasses_names")
    classifier_path = folder / CLASSIFIER_FILE
    if not classifier_path.is_file():
        raise fail(classifier_path, "file not found")
    classifier = load_file(str(classifier_path))
    split_content = load_mat(folder / SPLITS_FILE)
    backbone_loc = {
        role: np.asarray(split_content[key], dtype=np.int64).reshape(-1) - 1
        if key in split_content
        else None
        for role, key in BACKBONE_LOC.items()
    }
    return Xlsa17Export(
        features=features,
        labels=labels,
        image_files=files,
        splits=splits,
        classifier_weight=classifier["weight"],
        classifier_bias=classifier["bias"],
        classifier_labels=classifier["labels"].astype(np.int64),
        validation_roles=_roles_from({"train": splits.train_loc, "val": splits.val_loc}, n),
        backbone_roles=_roles_from(backbone_loc, n),
    )


def relative_paths(paths: pd.Series) -> np.ndarray:
    """(N,) '/'-separated paths relative to the deepest folder holding every image."""
    parents = [os.path.dirname(p) for p in paths]
    root = os.path.commonpath(parents) if parents else ""
    return np.array([Path(os.path.relpath(p, root)).as_posix() for p in paths], dtype=str)


def xlsa17_arrays(
    outputs: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    seen: ClassRows,
    backbone_roles: pd.DataFrame | None = None,
    validation_roles: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """The keyword arguments of :func:`export_xlsa17` for the features NIWT used.

    Image paths are made relative to the deepest folder common to all images, so their
    sorted order is the ``image_id`` order of the canonical tables.

    Args:
        outputs: the extraction's ``image_id`` (N,) and ``features`` (N, D) tensors.
        images, classes, domain_knowledge: the canonical tables.
        seen: the backbone's seen rows.
        backbone_roles: ``image_id``, ``role`` in {train, holdout} (optional).
        validation_roles: ``image_id``, ``role`` in {train, holdout, pseudo_unseen}
            (optional): train and holdout images become xlsa17's ``train_loc``, the
            pseudo-unseen classes' images its ``val_loc``.

    Returns:
        ``features`` (N, D) float32, ``labels`` (N,) class ids, ``image_files`` (N,),
        ``splits`` (N,), ``class_names`` (C,), ``att`` (A, C), ``seen_rows`` (S, D),
        ``seen_bias`` (S,), ``seen_class_ids`` (S,), ``validation_roles`` and
        ``backbone_roles`` ((N,) or None).

    Raises:
        ValueError: when ``outputs`` has images that ``images`` lacks.
    """
    ids = outputs["image_id"].numpy().astype(np.int64)
    table = images.set_index("image_id")
    missing = np.setdiff1d(ids, table.index.to_numpy())
    if len(missing):
        raise ValueError(f"image_outputs has image ids not in images, e.g. {missing[:5].tolist()}")
    rows = table.loc[ids]
    by_class = classes.set_index("class_id").sort_index()
    dk = domain_knowledge_by_class(domain_knowledge)
    return {
        "features": outputs["features"].numpy().astype(np.float32),
        "labels": rows["class_id"].to_numpy(dtype=np.int64),
        "image_files": relative_paths(rows["path"]),
        "splits": rows["split"].to_numpy(dtype=str),
        "class_names": by_class["name"].to_numpy(dtype=str),
        "att": dk.to_numpy(dtype=np.float64).T,
        "seen_rows": seen.weight,
        "seen_bias": seen.bias,
        "seen_class_ids": seen.class_ids,
        "validation_roles": None
        if validation_roles is None
        else _role_column(
            ids, validation_roles, {"train": "train", "holdout": "train", "pseudo_unseen": "val"}
        ),
        "backbone_roles": None
        if backbone_roles is None
        else _role_column(ids, backbone_roles, {"train": "train", "holdout": "holdout"}),
    }


def _role_column(ids: np.ndarray, roles: pd.DataFrame, names: dict[str, str]) -> np.ndarray:
    """(N,) the exported role of each image id ("" where it has none)."""
    by_id = dict(zip(roles["image_id"].astype(int), roles["role"].astype(str), strict=True))
    return np.array([names.get(by_id.get(int(i), ""), "") for i in ids], dtype=str)
