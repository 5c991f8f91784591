"""The project's own dataset layout: a reader that validates it and an atomic writer.

Layout (all CSV files UTF-8 with a header line; one record a line)::

    <root>/dataset.json          {"name": ..., "format": "niwt-own-layout", "version": 1}
    <root>/images/<class_name>/<file>      image files (png/jpg/...); folder name == class name
    <root>/classes.csv           class_name,seen          seen: true/false (1/0 accepted);
                                                          row order is the dataset's class order
    <root>/splits.csv            path,split               path relative to images/, e.g.
                                                          red_circle/0001.png; split one of
                                                          trainval, test_seen, test_unseen
    <root>/attributes.csv        class_name,<attr>,...    optional; continuous class-level
                                                          values, one row for every class
    <root>/descriptions.csv      class_name,text          optional; any number of rows a class
    <root>/image_attributes.csv  path,<attr>,...          optional; true per-image 0/1 values

Rules the reader enforces (every message names the file, and the line, class or column):

* every file above except the optional ones exists; ``dataset.json`` has the right format;
* class names are unique and usable as folder names; every folder under ``images/`` is a class;
* ``splits.csv`` paths are unique, ``<class_name>/<file>`` with a known class, split names are
  valid and every listed file exists;
* a seen class has at least one trainval image and only trainval/test_seen images; an unseen
  class has only test_unseen images, or none: then it is defined by its domain knowledge
  alone (it gets a classifier row and is left out of the accuracies);
* ``attributes.csv`` has one row per class, finite numbers only: an empty cell (missing value)
  is an error, since no missing-value policy is applied to user data;
* ``descriptions.csv`` rows name known classes and have non-empty text;
* ``image_attributes.csv`` rows name listed images, once each, with values 0 or 1.

Files under ``images/`` that ``splits.csv`` does not list are **ignored with a warning**
(logged and recorded in ``RawDataset.notes``): keeping extra files is harmless, but silently
dropping them could hide a typo.  Other files in ``<root>`` (e.g. ``world.json``) are ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from niwt_pipeline.core.data.atomic import replaced_folder
from niwt_pipeline.core.data.tables import SPLITS, RawDataset
from niwt_pipeline.core.data.text import read_text
from niwt_pipeline.core.errors import InputError, fail

logger = logging.getLogger(__name__)

FORMAT = "niwt-own-layout"
VERSION = 1
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_SEEN_SPLITS = {"trainval", "test_seen"}

Rows = list[tuple[int, list[str]]]


# --------------------------------------------------------------------------------------------
# CSV helpers
# --------------------------------------------------------------------------------------------


def _name(text: str) -> str:
    """A name or path as compared everywhere: Unicode NFC, surrounding whitespace removed
    (so a name typed on one system matches a folder created on another)."""
    return unicodedata.normalize("NFC", text).strip()


def _read_csv(
    path: Path, required: Collection[str], first: str | None = None
) -> tuple[list[str], Rows]:
    """Header and ``(line, cells)`` rows of a CSV file; blank lines skipped, cells stripped.

    Args:
        required: columns that must be in the header.
        first: a column that must come first (e.g. ``class_name`` for class tables).
    """
    if not path.is_file():
        raise fail(path, "file not found")
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.reader(handle)
        header = [_name(cell) for cell in next(reader, [])]
        if not header:
            raise fail(path, f"file is empty; expected a header with {sorted(required)}", line=1)
        missing = [c for c in required if c not in header]
        if missing or (first is not None and header[0] != first):
            raise fail(
                path,
                f"header {header} must have columns {list(required)}"
                + (f", {first!r} first" if first else ""),
                line=1,
            )
        duplicated = sorted({c for c in header if header.count(c) > 1 or not c})
        if duplicated:
            raise fail(path, f"duplicate or empty column names {duplicated}", line=1)
        rows: Rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise fail(
                    path, f"{len(cells)} fields, the header has {len(header)}", line=reader.line_num
                )
            rows.append((reader.line_num, [_name(cell) for cell in cells]))
    return header, rows


def _float_cell(path: Path, line: int, column: str, cell: str) -> float:
    if cell == "":
        raise fail(
            path, f"column {column!r}: empty cell (missing values are not allowed)", line=line
        )
    try:
        value = float(cell)
    except ValueError:
        raise fail(path, f"column {column!r}: {cell!r} is not a number", line=line) from None
    if not math.isfinite(value):
        raise fail(path, f"column {column!r}: {cell!r} is not a finite number", line=line)
    return value


def read_class_table_csv(
    path: str | Path, known_classes: Collection[str] | None = None
) -> pd.DataFrame:
    """Read a ``class_name,<dim>,...`` CSV of finite numbers (attributes, embeddings).

    Args:
        path: the CSV file.
        known_classes: if given, a row naming another class is an error.

    Returns:
        DataFrame (C, D) float64, index ``class_name`` in file order, the header's column names.

    Raises:
        InputError: naming file and line for a duplicate or unknown class, a non-number,
            an empty cell or a non-finite value.
    """
    path = Path(path)
    header, rows = _read_csv(path, ["class_name"], first="class_name")
    if len(header) < 2:
        raise fail(path, "no value columns after class_name", line=1)
    seen_at: dict[str, int] = {}
    values = np.empty((len(rows), len(header) - 1), dtype=np.float64)
    for i, (line, cells) in enumerate(rows):
        name = cells[0]
        _check_class_cell(path, line, name, seen_at, known_classes)
        values[i] = [
            _float_cell(path, line, col, cell)
            for col, cell in zip(header[1:], cells[1:], strict=True)
        ]
    return pd.DataFrame(
        values,
        index=pd.Index(list(seen_at), name="class_name", dtype="str"),
        columns=pd.Index(header[1:], dtype="str"),
    )


def _check_class_cell(
    path: Path, line: int, name: str, seen_at: dict[str, int], known: Collection[str] | None
) -> None:
    if name in seen_at:
        raise fail(path, f"class {name!r} already on line {seen_at[name]}", line=line)
    if not name:
        raise fail(path, "empty class_name", line=line)
    if known is not None and name not in known:
        raise fail(path, f"unknown class {name!r}", line=line)
    seen_at[name] = line


def read_path_list_csv(path: str | Path) -> list[str]:
    """The ``path`` column of a CSV listing image files (other columns are ignored);
    relative paths are made relative to the CSV's folder.

    Raises:
        InputError: naming the file (and line) when it is missing, has no ``path`` column,
            a row has the wrong number of fields or an empty path.
    """
    path = Path(path)
    header, rows = _read_csv(path, ["path"])
    column = header.index("path")
    paths = []
    for line, cells in rows:
        if not cells[column]:
            raise fail(path, "empty path", line=line, key="path")
        file = Path(cells[column])
        paths.append(str(file if file.is_absolute() else path.parent / file))
    return paths


def read_descriptions_csv(
    path: str | Path, known_classes: Collection[str] | None = None
) -> pd.DataFrame:
    """Read a ``class_name,text`` CSV (several rows a class allowed).

    Returns:
        DataFrame with str columns ``class_name`` and ``text``, in file order.

    Raises:
        InputError: naming file and line for an unknown class or an empty text.
    """
    path = Path(path)
    header, rows = _read_csv(path, ["class_name", "text"])
    name_at, text_at = header.index("class_name"), header.index("text")
    for line, cells in rows:
        if known_classes is not None and cells[name_at] not in known_classes:
            raise fail(path, f"unknown class {cells[name_at]!r}", line=line)
        if not cells[text_at]:
            raise fail(path, f"class {cells[name_at]!r}: empty text", line=line)
    return pd.DataFrame(
        {
            "class_name": pd.array([c[name_at] for _, c in rows], dtype="str"),
            "text": pd.array([c[text_at] for _, c in rows], dtype="str"),
        }
    )


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def _read_manifest(root: Path) -> str:
    path = root / "dataset.json"
    expected = f'{{"name": "<name>", "format": "{FORMAT}", "version": {VERSION}}}'
    if not path.is_file():
        raise fail(path, f"file not found; an own-layout folder needs {expected}")
    try:
        manifest = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise fail(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from exc
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or manifest.get("version") != VERSION
    ):
        raise fail(path, f"expected {expected}, got {manifest!r}")
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        raise fail(path, "'name' must be a non-empty string", key="name")
    return name


def _read_classes(root: Path) -> tuple[list[str], dict[str, bool], dict[str, int]]:
    """(class names in order, seen by name, line by name)."""
    path = root / "classes.csv"
    header, rows = _read_csv(path, ["class_name", "seen"])
    name_at, seen_at = header.index("class_name"), header.index("seen")
    lines: dict[str, int] = {}
    seen: dict[str, bool] = {}
    for line, cells in rows:
        name, flag = cells[name_at], cells[seen_at].lower()
        _check_class_cell(path, line, name, lines, None)
        if name in (".", "..") or "/" in name or "\\" in name:
            raise fail(path, f"class name {name!r} cannot be a folder name", line=line)
        if flag not in _BOOLEANS:
            raise fail(
                path,
                f"class {name!r}: seen must be true or false, got {cells[seen_at]!r}",
                line=line,
            )
        seen[name] = _BOOLEANS[flag]
    if not rows:
        raise fail(path, "no classes")
    return list(lines), seen, lines


def _read_splits(root: Path, seen: dict[str, bool]) -> tuple[dict[str, str], dict[str, int]]:
    """(split by relpath, line by relpath), each path checked for form, class and split."""
    path = root / "splits.csv"
    header, rows = _read_csv(path, ["path", "split"])
    path_at, split_at = header.index("path"), header.index("split")
    split_of: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for line, cells in rows:
        relpath, split = cells[path_at], cells[split_at]
        parts = relpath.split("/")
        if "\\" in relpath or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
            raise fail(
                path,
                f"path {relpath!r} must be '<class_name>/<file>' relative to images/",
                line=line,
            )
        if parts[0] not in seen:
            raise fail(
                path,
                f"path {relpath!r}: unknown class {parts[0]!r} (not in classes.csv)",
                line=line,
            )
        if split not in SPLITS:
            raise fail(
                path, f"path {relpath!r}: split {split!r} is not one of {list(SPLITS)}", line=line
            )
        if relpath in line_of:
            raise fail(
                path, f"path {relpath!r} already listed on line {line_of[relpath]}", line=line
            )
        allowed = _SEEN_SPLITS if seen[parts[0]] else {"test_unseen"}
        if split not in allowed:
            kind = "a seen" if seen[parts[0]] else "an unseen"
            raise fail(
                path, f"path {relpath!r}: {kind} class cannot have {split} images", line=line
            )
        split_of[relpath], line_of[relpath] = split, line
    return split_of, line_of


def _check_class_images(
    root: Path, seen: dict[str, bool], lines: dict[str, int], split_of: dict[str, str]
) -> None:
    has_images = {relpath.split("/")[0] for relpath in split_of}
    has_trainval = {
        relpath.split("/")[0] for relpath, split in split_of.items() if split == "trainval"
    }
    for name, is_seen in seen.items():
        if is_seen and name not in has_images:
            raise fail(
                root / "classes.csv",
                f"seen class {name!r} has no images in splits.csv",
                line=lines[name],
            )
        if not is_seen and name not in has_images:
            logger.info(
                "%s: unseen class %r has no images: it is defined by its domain knowledge "
                "alone (it gets a classifier row and is left out of the accuracies)",
                root / "classes.csv",
                name,
            )
        if is_seen and name not in has_trainval:
            raise fail(
                root / "classes.csv",
                f"seen class {name!r} has no trainval images in splits.csv",
                line=lines[name],
            )


def _files_on_disk(image_root: Path, seen: dict[str, bool]) -> dict[str, str]:
    """The non-hidden files under ``images/``: their relative path as compared (NFC) ->
    as on disk; every folder must be a class."""
    if not image_root.is_dir():
        raise fail(image_root, "image folder not found")
    found: dict[str, str] = {}
    for entry in sorted(image_root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir() or _name(entry.name) not in seen:
            raise fail(
                entry,
                "not a class folder: every entry of images/ must "
                "be a folder named after a class of classes.csv",
            )
        for directory, folders, files in os.walk(entry):
            folders[:] = [f for f in folders if not f.startswith(".")]
            prefix = Path(directory).relative_to(image_root).as_posix()
            for file in files:
                if not file.startswith("."):
                    found[_name(f"{prefix}/{file}")] = f"{prefix}/{file}"
    return found


def _check_files(
    root: Path, split_of: dict[str, str], line_of: dict[str, int], seen: dict[str, bool]
) -> tuple[list[str], dict[str, str]]:
    """Listed files must exist; unlisted ones give a warning.  Returns the notes, and each
    listed path's name on disk."""
    on_disk = _files_on_disk(root / "images", seen)
    missing = [p for p in split_of if p not in on_disk]
    if missing:
        raise fail(
            root / "splits.csv",
            f"image file images/{missing[0]} not found ({len(missing)} missing)",
            line=line_of[missing[0]],
        )
    actual = {p: on_disk[p] for p in split_of}
    unlisted = sorted(set(on_disk) - set(split_of))
    if not unlisted:
        return [], actual
    note = (
        f"{len(unlisted)} file(s) under images/ not listed "
        f"in splits.csv were ignored (first: {unlisted[0]})"
    )
    logger.warning("%s: %s", root, note)
    return [note], actual


def _read_image_attributes(root: Path, split_of: dict[str, str]) -> pd.DataFrame:
    path = root / "image_attributes.csv"
    header, rows = _read_csv(path, ["path"], first="path")
    if len(header) < 2:
        raise fail(path, "no attribute columns after path", line=1)
    line_of: dict[str, int] = {}
    values = np.empty((len(rows), len(header) - 1), dtype=np.int64)
    for i, (line, cells) in enumerate(rows):
        relpath = cells[0]
        if relpath not in split_of:
            raise fail(path, f"path {relpath!r} is not listed in splits.csv", line=line)
        if relpath in line_of:
            raise fail(path, f"path {relpath!r} already on line {line_of[relpath]}", line=line)
        line_of[relpath] = line
        bad = [
            (col, cell)
            for col, cell in zip(header[1:], cells[1:], strict=True)
            if cell not in ("0", "1")
        ]
        if bad:
            raise fail(path, f"column {bad[0][0]!r}: {bad[0][1]!r} is not 0 or 1", line=line)
        values[i] = [int(cell) for cell in cells[1:]]
    table = pd.DataFrame(values, columns=pd.Index(header[1:], dtype="str"))
    table.insert(0, "relpath", pd.array(list(line_of), dtype="str"))
    return table.sort_values("relpath", ignore_index=True)


def read_own_layout(root: str | Path) -> RawDataset:
    """Read and validate a dataset in the project's own layout (see the module docstring).

    Returns:
        RawDataset with ``images`` in sorted relpath order (relative to ``<root>/images``),
        classes in ``classes.csv`` order, ``attributes`` (C, A) float64 in class order or None,
        ``descriptions`` (class_name, text) or None, ``image_attributes`` (relpath + int64 0/1
        columns, sorted by relpath) or None.

    Raises:
        InputError: naming the file and line (or class, column) of the first problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise fail(root, "dataset folder not found")
    name = _read_manifest(root)
    class_names, seen, class_lines = _read_classes(root)
    split_of, line_of = _read_splits(root, seen)
    _check_class_images(root, seen, class_lines, split_of)
    notes, on_disk = _check_files(root, split_of, line_of, seen)

    attributes = None
    if (root / "attributes.csv").exists():
        attributes = read_class_table_csv(root / "attributes.csv", known_classes=seen)
        absent = [c for c in class_names if c not in attributes.index]
        if absent:
            raise fail(
                root / "attributes.csv", f"no row for class(es) {absent[:5]} ({len(absent)} in all)"
            )
        attributes = attributes.loc[class_names]
    descriptions = None
    if (root / "descriptions.csv").exists():
        descriptions = read_descriptions_csv(root / "descriptions.csv", known_classes=seen)
    image_attributes = None
    if (root / "image_attributes.csv").exists():
        image_attributes = _read_image_attributes(root, split_of)
        image_attributes["relpath"] = pd.array(
            [on_disk[p] for p in image_attributes["relpath"]], dtype="str"
        )

    relpaths = sorted(split_of)
    logger.info(
        "%s: %d images, %d classes (%d seen)",
        root,
        len(relpaths),
        len(class_names),
        sum(seen.values()),
    )
    return RawDataset(
        name=name,
        root=root,
        images=pd.DataFrame(
            {
                "relpath": pd.array([on_disk[p] for p in relpaths], dtype="str"),
                "class_name": pd.array([p.split("/")[0] for p in relpaths], dtype="str"),
                "split": pd.array([split_of[p] for p in relpaths], dtype="str"),
            }
        ),
        image_root=root / "images",
        classes=pd.DataFrame(
            {
                "class_name": pd.array(class_names, dtype="str"),
                "seen": np.array([seen[c] for c in class_names]),
            }
        ),
        attributes=attributes,
        descriptions=descriptions,
        image_attributes=image_attributes,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _check_replaceable(root: Path) -> None:
    """Only an own-layout folder (or an empty one) may be replaced."""
    if not root.exists():
        return
    if not root.is_dir():
        raise fail(root, "exists and is not a folder; refusing to replace it")
    if any(root.iterdir()):
        try:
            manifest = json.loads(read_text(root / "dataset.json"))
        except (OSError, json.JSONDecodeError, InputError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise fail(
                root,
                f"exists and is not a {FORMAT} folder (no "
                "valid dataset.json); refusing to replace it",
            )


def _write_images(
    image_root: Path, images: Iterable[tuple[str, Image.Image | str | Path]], listed: set[str]
) -> None:
    written: set[str] = set()
    for relpath, image in images:
        if relpath not in listed:
            raise ValueError(f"write_own_layout: image {relpath!r} is not in splits")
        if relpath in written:
            raise ValueError(f"write_own_layout: image {relpath!r} given twice")
        target = image_root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, Image.Image):
            image.save(target)
        else:
            shutil.copyfile(image, target)
        written.add(relpath)
    absent = sorted(listed - written)
    if absent:
        raise ValueError(
            f"write_own_layout: {len(absent)} image(s) of "
            f"splits were not given (first: {absent[0]})"
        )


def _write_tables(
    folder: Path,
    *,
    classes: pd.DataFrame,
    splits: pd.DataFrame,
    attributes: pd.DataFrame | None,
    descriptions: pd.DataFrame | None,
    image_attributes: pd.DataFrame | None,
) -> None:
    if not pd.api.types.is_bool_dtype(classes["seen"]):
        raise ValueError(
            f"write_own_layout: classes['seen'] must be bool, got {classes['seen'].dtype}"
        )
    options = {"index": False, "lineterminator": "\n"}
    table = pd.DataFrame(
        {"class_name": classes["class_name"], "seen": np.where(classes["seen"], "true", "false")}
    )
    table.to_csv(folder / "classes.csv", **options)
    splits.rename(columns={"relpath": "path"})[["path", "split"]].to_csv(
        folder / "splits.csv", **options
    )
    if attributes is not None:
        attributes.to_csv(folder / "attributes.csv", index_label="class_name", lineterminator="\n")
    if descriptions is not None:
        descriptions[["class_name", "text"]].to_csv(folder / "descriptions.csv", **options)
    if image_attributes is not None:
        image_attributes.rename(columns={"relpath": "path"}).to_csv(
            folder / "image_attributes.csv", **options
        )


def write_own_layout(
    root: str | Path,
    *,
    classes: pd.DataFrame,
    splits: pd.DataFrame,
    images: Iterable[tuple[str, Image.Image | str | Path]],
    attributes: pd.DataFrame | None = None,
    descriptions: pd.DataFrame | None = None,
    image_attributes: pd.DataFrame | None = None,
    name: str,
) -> RawDataset:
    """Write a dataset in the own layout, atomically, and return it as read back.

    Everything is written into a temporary sibling folder, validated with
    :func:`read_own_layout`, then renamed to ``root``; an existing own-layout folder at
    ``root`` is replaced only after the new one is complete (a folder that is not an
    own-layout one is never replaced).  On any error the temporary folder is removed and
    ``root`` is left as it was.

    Args:
        root: the dataset folder to create or replace.
        classes: columns ``class_name`` (str) and ``seen`` (bool); row order = class order.
        splits: columns ``relpath`` (``'<class_name>/<file>'``) and ``split``.
        images: ``(relpath, image)`` pairs, one for every relpath of ``splits``; the image is a
            ``PIL.Image`` (saved in the format of the file suffix) or a file path (copied).
            Consumed lazily, one at a time.
        attributes: optional (C, A) continuous class attributes, index ``class_name``.
        descriptions: optional columns ``class_name``, ``text``.
        image_attributes: optional column ``relpath`` then one 0/1 column per attribute.
        name: the dataset name for ``dataset.json``.

    Returns:
        The written dataset, as :func:`read_own_layout` reads it from ``root``.

    Raises:
        ValueError: when ``images`` and ``splits`` do not match; InputError (naming the
            temporary file and line) when the tables break a rule of the layout.
    """
    root = Path(root)
    _check_replaceable(root)
    with replaced_folder(root) as new:
        manifest = {"name": name, "format": FORMAT, "version": VERSION}
        (new / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _write_tables(
            new,
            classes=classes,
            splits=splits,
            attributes=attributes,
            descriptions=descriptions,
            image_attributes=image_attributes,
        )
        listed = set(splits["relpath"])
        _write_images(new / "images", images, listed)
        raw = read_own_layout(new)
    logger.info(
        "wrote %s (%d images, %d classes) to %s", name, len(raw.images), len(raw.classes), root
    )
    return dataclasses.replace(raw, root=root, image_root=root / "images")
