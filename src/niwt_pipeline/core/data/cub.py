"""Reader for CUB-200-2011 with the xlsa17 proposed split.

Layout (``root`` holds ``CUB_200_2011/`` and ``attributes.txt``, or is ``CUB_200_2011/``)::

    CUB_200_2011/images.txt                 <image_id> <class folder>/<file>.jpg
    CUB_200_2011/image_class_labels.txt     <image_id> <class_id>
    CUB_200_2011/classes.txt                <class_id> <class name>   (ids 1..200 in order)
    CUB_200_2011/attributes/class_attribute_labels_continuous.txt   200 x 312, 0..100
    CUB_200_2011/images/<class folder>/<file>.jpg
    attributes.txt                          <attribute_id> <name>     (ids 1..312 in order)

Row k of the attribute matrix is class id k+1, column k attribute id k+1.  The split comes
from an xlsa17 ``att_splits.mat`` whose positions index the *sorted* ``images.txt`` paths.

This module also holds the parsers for the numbered text lists and whitespace matrices that
the official CUB and AWA2 releases share (:func:`read_numbered_names`, :func:`read_matrix`).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.core.data.text import read_text
from niwt_pipeline.core.data.xlsa17 import assign_splits, read_att_splits
from niwt_pipeline.core.errors import fail

logger = logging.getLogger(__name__)

_NUMBERED_LINE = re.compile(r"^\s*(\d+)\s+(\S(?:.*\S)?)\s*$")


def read_numbered_names(
    path: str | Path, what: str, *, consecutive: bool = True, unique_values: bool = True
) -> pd.DataFrame:
    """Parse a ``<id> <value>`` text file (blank lines skipped).

    Args:
        path: the file.
        what: the expected line format for messages, e.g. ``'<class_id> <class name>'``.
        consecutive: require the ids to be 1, 2, ..., N in file order (otherwise only unique).
        unique_values: require every value to occur once.

    Returns:
        DataFrame with columns ``id`` (int64), ``value`` (str) and ``line`` (int64, 1-based).

    Raises:
        InputError: naming the file and line of a missing file, malformed line or bad id.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    rows: list[tuple[int, str, int]] = []
    first_line_of: dict[int, int] = {}
    value_line: dict[str, int] = {}
    for number, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        match = _NUMBERED_LINE.match(text)
        if match is None:
            raise fail(path, f"expected '{what}', got {text.strip()!r}", line=number)
        ident = int(match.group(1))
        if ident in first_line_of:
            raise fail(path, f"id {ident} already used on line {first_line_of[ident]}", line=number)
        if consecutive and ident != len(rows) + 1:
            raise fail(
                path,
                f"expected id {len(rows) + 1} (ids must be 1..N in order), got {ident}",
                line=number,
            )
        value = match.group(2)
        if unique_values and value in value_line:
            raise fail(path, f"{value!r} already listed on line {value_line[value]}", line=number)
        first_line_of[ident] = number
        value_line[value] = number
        rows.append((ident, value, number))
    if not rows:
        raise fail(path, f"file is empty, expected lines '{what}'")
    ids, values, lines = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "id": np.array(ids, dtype=np.int64),
            "value": pd.array(values, dtype="str"),
            "line": np.array(lines, dtype=np.int64),
        }
    )


def read_matrix(
    path: str | Path, shape: tuple[int, int], *, rows_are: str, columns_are: str
) -> np.ndarray:
    """Parse a whitespace-separated matrix of finite numbers with a known shape.

    Args:
        path: the file, one row a line (blank lines skipped).
        shape: expected (rows, columns).
        rows_are, columns_are: what rows and columns are, for messages
            (e.g. ``'classes in classes.txt'``).

    Returns:
        (rows, columns) float64 array.

    Raises:
        InputError: naming the file and line of a non-number or non-finite value, and the
            file and both shapes when the shape differs.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    rows: list[list[float]] = []
    for number, text in enumerate(read_text(path).splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        rows.append(
            [_number(path, number, col, token) for col, token in enumerate(tokens, start=1)]
        )
        if len(rows[-1]) != len(rows[0]):
            raise fail(
                path, f"{len(rows[-1])} values, but the first row has {len(rows[0])}", line=number
            )
    found = (len(rows), len(rows[0]) if rows else 0)
    if found != tuple(shape):
        raise fail(
            path,
            f"matrix is {found[0]} x {found[1]}, expected {shape[0]} x {shape[1]} "
            f"({shape[0]} {rows_are} x {shape[1]} {columns_are})",
        )
    return np.array(rows, dtype=np.float64)


def _number(path: Path, line: int, column: int, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise fail(path, f"column {column}: {token!r} is not a number", line=line) from None
    if not math.isfinite(value):
        raise fail(path, f"column {column}: {token!r} is not a finite number", line=line)
    return value


def _locate(root: Path) -> tuple[Path, Path]:
    """(the CUB_200_2011 folder, the folder beside it)."""
    if (root / "CUB_200_2011").is_dir():
        return root / "CUB_200_2011", root
    if (root / "images.txt").is_file():
        return root, root.parent
    raise fail(
        root,
        "no CUB_200_2011/ folder (or images.txt) here: pass "
        "the folder holding CUB_200_2011/ or that folder",
    )


def _attribute_names_file(base: Path, outer: Path, given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    for candidate in (outer / "attributes.txt", base / "attributes.txt"):
        if candidate.is_file():
            return candidate
    raise fail(
        outer / "attributes.txt",
        "attribute names file not found (looked here and "
        "in CUB_200_2011/); pass attribute_names=<path>",
    )


def _image_classes(base: Path, images: pd.DataFrame, classes: pd.DataFrame) -> dict[str, str]:
    """Class name of each relpath, from image_class_labels.txt, with consistency checks."""
    labels_path = base / "image_class_labels.txt"
    labels = read_numbered_names(
        labels_path, "<image_id> <class_id>", consecutive=False, unique_values=False
    )
    class_name = dict(zip(classes["id"], classes["value"], strict=True))
    relpath_of = dict(zip(images["id"], images["value"], strict=True))
    out: dict[str, str] = {}
    for image_id, value, line in labels.itertuples(index=False):
        if image_id not in relpath_of:
            raise fail(labels_path, f"image id {image_id} is not in images.txt", line=line)
        if not value.isdigit() or int(value) not in class_name:
            raise fail(labels_path, f"class id {value!r} is not in classes.txt", line=line)
        relpath = relpath_of[image_id]
        name = class_name[int(value)]
        if relpath.split("/")[0] != name:
            raise fail(
                labels_path,
                f"image {image_id} ({relpath}) is labelled {name!r}, not its folder",
                line=line,
            )
        out[relpath] = name
    unlabelled = [r for r in relpath_of.values() if r not in out]
    if unlabelled:
        raise fail(
            labels_path,
            f"{len(unlabelled)} image(s) of images.txt have no label (first: {unlabelled[0]})",
        )
    return out


def _read_images(base: Path) -> pd.DataFrame:
    path = base / "images.txt"
    images = read_numbered_names(path, "<image_id> <relative path>", consecutive=False)
    for relpath, line in zip(images["value"], images["line"], strict=True):
        if " " in relpath or relpath.count("/") != 1:
            raise fail(
                path,
                f"expected '<image_id> <class folder>/<file>', got path {relpath!r}",
                line=int(line),
            )
    return images


def read_cub(
    root: str | Path,
    splits_file: str | Path | None = None,
    attribute_names: str | Path | None = None,
) -> RawDataset:
    """Read CUB-200-2011 metadata, class attributes and the xlsa17 proposed split.

    Args:
        root: folder holding ``CUB_200_2011/`` (and ``attributes.txt``), or that folder.
        splits_file: the xlsa17 ``att_splits.mat`` for CUB (``xlsa17/data/CUB/att_splits.mat``);
            required.
        attribute_names: the ``<id> <name>`` file of the 312 attribute names; default
            ``attributes.txt`` beside ``CUB_200_2011/`` (or inside it).

    Returns:
        RawDataset with all images of ``images.txt`` (rows in sorted relpath order; files are
        not checked here), classes in ``classes.txt`` order (seen = has trainval images),
        ``attributes`` (C, 312) float64 percentages 0..100 as given, index class names like
        ``'002.Laysan_Albatross'``, columns the attribute names.

    Raises:
        InputError: naming the file (and line or key) of any inconsistency.
    """
    base, outer = _locate(Path(root))
    if splits_file is None:
        raise fail(
            base,
            "read_cub needs the proposed split file (Xian et al. 2017): pass "
            "splits_file=<xlsa17>/data/CUB/att_splits.mat",
        )
    images = _read_images(base)
    classes = read_numbered_names(base / "classes.txt", "<class_id> <class name>")
    names_path = _attribute_names_file(base, outer, attribute_names)
    attribute_names_ = read_numbered_names(names_path, "<attribute_id> <name>")
    class_of = _image_classes(base, images, classes)

    splits = read_att_splits(splits_file)
    class_names = list(classes["value"])
    _check_same_classes(splits.path, splits.allclasses_names, class_names, base / "classes.txt")
    relpaths = sorted(class_of)
    split_of = assign_splits(relpaths, splits, class_of)
    seen = {class_of[p] for p in split_of.index[split_of == "trainval"]}

    matrix_path = base / "attributes" / "class_attribute_labels_continuous.txt"
    matrix = read_matrix(
        matrix_path,
        (len(class_names), len(attribute_names_)),
        rows_are="classes in classes.txt",
        columns_are=f"attributes in {names_path.name}",
    )
    attributes = pd.DataFrame(
        matrix,
        index=pd.Index(class_names, name="class_name", dtype="str"),
        columns=pd.Index(list(attribute_names_["value"]), dtype="str"),
    )
    n_seen = sum(name in seen for name in class_names)
    logger.info(
        "CUB: %d images, %d classes (%d seen), %d attributes",
        len(relpaths),
        len(class_names),
        n_seen,
        matrix.shape[1],
    )
    return RawDataset(
        name="CUB",
        root=Path(root),
        images=pd.DataFrame(
            {
                "relpath": pd.array(relpaths, dtype="str"),
                "class_name": pd.array([class_of[p] for p in relpaths], dtype="str"),
                "split": split_of.to_numpy(),
            }
        ),
        image_root=base / "images",
        classes=pd.DataFrame(
            {
                "class_name": pd.array(class_names, dtype="str"),
                "seen": np.array([n in seen for n in class_names]),
            }
        ),
        attributes=attributes,
        notes=[
            f"split from {splits.path}: {n_seen} seen / {len(class_names) - n_seen} unseen classes",
            f"attributes from {matrix_path.name}: class-level percentages 0..100, unscaled",
            "images.txt lists every image; whether the files exist is checked when canonicalising",
        ],
    )


def _check_same_classes(
    mat_path: Path, mat_names: list[str], names: list[str], names_path: Path
) -> None:
    """The split file must name exactly the dataset's classes."""
    missing = sorted(set(names) - set(mat_names))
    extra = sorted(set(mat_names) - set(names))
    if missing or extra:
        raise fail(
            mat_path,
            f"allclasses_names differs from {names_path}: "
            f"missing {missing[:5]}, unknown {extra[:5]}",
            key="allclasses_names",
        )
