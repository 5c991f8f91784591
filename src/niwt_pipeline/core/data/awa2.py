"""Reader for Animals with Attributes 2 (AWA2) with the xlsa17 proposed split.

Layout (``root`` holds ``Animals_with_Attributes2/``, or is it)::

    Animals_with_Attributes2/classes.txt                     "<id>\\t<name>", ids 1..50 in order
    Animals_with_Attributes2/predicates.txt                  "<id>\\t<name>", ids 1..85 in order
    Animals_with_Attributes2/predicate-matrix-continuous.txt 50 x 85, -1.00 marks a missing value
    Animals_with_Attributes2/JPEGImages/<class>/<class>_NNNNN.jpg

There is no image list: images are found by listing ``JPEGImages/``, and the xlsa17
positions index the sorted ``<class>/<file>`` paths, so they only line up with the complete
image set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from niwt_pipeline.core.data.cub import read_matrix, read_numbered_names
from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.core.data.xlsa17 import (
    Xlsa17Splits,
    assign_splits,
    read_att_splits,
    read_class_list,
)
from niwt_pipeline.core.errors import fail

logger = logging.getLogger(__name__)

MISSING_POLICIES: tuple[str, ...] = ("zero", "class_mean", "error")
MISSING_VALUE = -1.0
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


def _locate(root: Path) -> Path:
    if (root / "Animals_with_Attributes2").is_dir():
        return root / "Animals_with_Attributes2"
    if (root / "classes.txt").is_file() and (root / "predicates.txt").is_file():
        return root
    raise fail(
        root, "no Animals_with_Attributes2/ folder here: pass the folder holding it, or that folder"
    )


def handle_missing(
    matrix: np.ndarray, policy: str, path: Path, predicates: list[str]
) -> tuple[np.ndarray, str]:
    """Replace the -1.00 entries of the continuous predicate matrix.

    Args:
        matrix: (C, A) values, -1 for missing.
        policy: ``"zero"`` (set to 0, as the authors' code), ``"class_mean"`` (set to the
            mean of that predicate over the classes where it is known) or ``"error"``.
        path: the matrix file, for messages.
        predicates: the A predicate names, for messages.

    Returns:
        (the filled (C, A) matrix, a note saying what was done).

    Raises:
        ValueError: if ``policy`` is not one of :data:`MISSING_POLICIES`.
        InputError: naming the file and line of a negative value other than -1.00, of the
            first missing value under ``policy="error"``, or a predicate missing for every
            class under ``policy="class_mean"``.
    """
    if policy not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {policy!r}")
    negative = (matrix < 0) & (matrix != MISSING_VALUE)
    if negative.any():
        row, col = np.argwhere(negative)[0]
        raise fail(
            path,
            f"column {col + 1}: negative value {matrix[row, col]} "
            "(only -1.00 marks a missing value)",
            line=row + 1,
        )
    missing = matrix == MISSING_VALUE
    n_missing = int(missing.sum())
    if n_missing == 0:
        return matrix, f"{path.name}: no missing values"
    if policy == "error":
        row, col = np.argwhere(missing)[0]
        raise fail(
            path,
            f"column {col + 1} ({predicates[col]}): missing value -1.00 (missing='error')",
            line=row + 1,
        )
    if policy == "zero":
        filled = np.where(missing, 0.0, matrix)
    else:
        all_missing = np.flatnonzero(missing.all(axis=0))
        if len(all_missing):
            raise fail(
                path,
                f"predicate {predicates[all_missing[0]]!r} "
                "is missing for every class; no class mean",
            )
        means = np.nanmean(np.where(missing, np.nan, matrix), axis=0, keepdims=True)
        filled = np.where(missing, means, matrix)
    rows = int(missing.any(axis=1).sum())
    return (
        filled,
        f"{path.name}: {n_missing} missing values (-1.00) "
        f"in {rows} classes set by missing={policy!r}",
    )


def list_images(image_dir: Path, class_names: list[str]) -> dict[str, str]:
    """``{relpath: class}`` for the image files under ``image_dir/<class>/``.

    Files with other suffixes than .jpg/.jpeg/.png and hidden entries are skipped; a folder
    that is not a class is an error.

    Raises:
        InputError: naming the folder when a (non-hidden) sub-folder of ``image_dir`` is not
            in ``class_names``.
    """
    known = set(class_names)
    out: dict[str, str] = {}
    for folder in sorted(
        p for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        if folder.name not in known:
            raise fail(folder, "folder is not a class of classes.txt")
        for file in sorted(folder.iterdir()):
            if (
                file.is_file()
                and not file.name.startswith(".")
                and file.suffix.lower() in IMAGE_SUFFIXES
            ):
                out[f"{folder.name}/{file.name}"] = folder.name
    return out


def _seen_from_class_lists(splits: Xlsa17Splits, class_names: list[str]) -> set[str]:
    """Seen classes from ``trainvalclasses.txt`` / ``testclasses.txt`` beside the split file."""
    trainval_path = splits.path.parent / "trainvalclasses.txt"
    test_path = splits.path.parent / "testclasses.txt"
    trainval, test = set(read_class_list(trainval_path)), set(read_class_list(test_path))
    if trainval & test:
        raise fail(
            test_path, f"classes also in {trainval_path.name}: {sorted(trainval & test)[:5]}"
        )
    unknown = sorted((trainval | test) - set(class_names))
    uncovered = sorted(set(class_names) - trainval - test)
    if unknown or uncovered:
        raise fail(
            trainval_path,
            "class lists do not match classes.txt: unknown "
            f"{unknown[:5]}, in neither {uncovered[:5]}",
        )
    return trainval


def read_awa2(
    root: str | Path,
    splits_file: str | Path | None = None,
    *,
    missing: str = "zero",
    require_images: bool = True,
) -> RawDataset:
    """Read AWA2 classes, continuous predicates, images and the xlsa17 proposed split.

    Missing values: ``predicate-matrix-continuous.txt`` marks them -1.00.  By default
    (``missing="zero"``) they are set to 0, as the authors' NIWT code does;
    ``missing="class_mean"`` sets each to the mean of its predicate over the classes where it
    is known; ``missing="error"`` refuses them.  The policy and the count are recorded in
    ``RawDataset.notes``; any other negative value is an error.

    Images: every .jpg/.jpeg/.png under ``JPEGImages/<class>/``.  The xlsa17 positions index
    the complete sorted image list, so a partial image set is an error (the split file names
    the positions it cannot match).  With ``require_images=False`` and no ``JPEGImages/``
    folder, only metadata is read: the images table is empty and the seen/unseen classes come
    from ``trainvalclasses.txt`` and ``testclasses.txt`` beside the split file.

    Args:
        root: folder holding ``Animals_with_Attributes2/``, or that folder.
        splits_file: the xlsa17 ``att_splits.mat`` for AWA2; required.
        missing: ``"zero"``, ``"class_mean"`` or ``"error"`` (see above).
        require_images: if False, a missing ``JPEGImages/`` folder is allowed.

    Returns:
        RawDataset: images (sorted relpaths ``<class>/<file>`` relative to ``JPEGImages/``),
        50 classes in ``classes.txt`` order, ``attributes`` (50, 85) float64 indexed by class
        names like ``'antelope'``, columns the predicate names.

    Raises:
        InputError: naming the file (and line or key) when ``root`` holds no AWA2 folder,
            ``splits_file`` is None, a metadata or split file is missing or malformed, the
            split's ``allclasses_names`` differ from ``classes.txt``, a missing value is
            refused by ``missing``, ``JPEGImages/`` is absent with ``require_images=True``,
            the image set does not match the split positions, or (metadata only) the
            xlsa17 class lists overlap or do not match ``classes.txt``.
        ValueError: if ``missing`` is not ``"zero"``, ``"class_mean"`` or ``"error"``.
    """
    base = _locate(Path(root))
    if splits_file is None:
        raise fail(
            base,
            "read_awa2 needs the proposed split file (Xian et al. 2017): "
            "pass splits_file=<xlsa17>/data/AWA2/att_splits.mat",
        )
    class_names = list(
        read_numbered_names(base / "classes.txt", "<class_id> <class name>")["value"]
    )
    predicates = list(
        read_numbered_names(base / "predicates.txt", "<predicate_id> <name>")["value"]
    )
    matrix_path = base / "predicate-matrix-continuous.txt"
    matrix = read_matrix(
        matrix_path,
        (len(class_names), len(predicates)),
        rows_are="classes in classes.txt",
        columns_are="predicates in predicates.txt",
    )
    matrix, missing_note = handle_missing(matrix, missing, matrix_path, predicates)

    splits = read_att_splits(splits_file)
    unknown = sorted(set(class_names) ^ set(splits.allclasses_names))
    if unknown:
        raise fail(
            splits.path,
            f"allclasses_names differs from classes.txt in {unknown[:5]}",
            key="allclasses_names",
        )
    image_dir = base / "JPEGImages"
    if image_dir.is_dir():
        class_of = list_images(image_dir, class_names)
        relpaths = sorted(class_of)
        split_of = assign_splits(relpaths, splits, class_of)
        seen = {class_of[p] for p in split_of.index[split_of == "trainval"]}
        image_note = f"{len(relpaths)} images listed from {image_dir}"
    elif require_images:
        raise fail(
            image_dir, "image folder not found; pass require_images=False to read the metadata only"
        )
    else:
        relpaths, class_of, split_of = [], {}, pd.Series([], dtype="str")
        seen = _seen_from_class_lists(splits, class_names)
        image_note = (
            f"no {image_dir.name}/ folder: metadata only, no images; "
            "seen classes from the xlsa17 class lists"
        )
    n_seen = sum(name in seen for name in class_names)
    logger.info(
        "AWA2: %d images, %d classes (%d seen); %s",
        len(relpaths),
        len(class_names),
        n_seen,
        missing_note,
    )
    return RawDataset(
        name="AWA2",
        root=Path(root),
        images=pd.DataFrame(
            {
                "relpath": pd.array(relpaths, dtype="str"),
                "class_name": pd.array([class_of[p] for p in relpaths], dtype="str"),
                "split": pd.array(split_of.to_numpy(), dtype="str"),
            }
        ),
        image_root=image_dir,
        classes=pd.DataFrame(
            {
                "class_name": pd.array(class_names, dtype="str"),
                "seen": np.array([n in seen for n in class_names]),
            }
        ),
        attributes=pd.DataFrame(
            matrix,
            index=pd.Index(class_names, name="class_name", dtype="str"),
            columns=pd.Index(predicates, dtype="str"),
        ),
        notes=[
            f"split from {splits.path}: {n_seen} seen / {len(class_names) - n_seen} unseen classes",
            missing_note,
            image_note,
        ],
    )
