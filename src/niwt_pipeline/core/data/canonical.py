"""Turn a :class:`RawDataset` plus domain knowledge into the canonical tables of ``tables.py``.

:func:`canonicalise` selects the classes, assigns ids and validates everything the later
stages rely on; :func:`verify_images` decodes image headers to find corrupt files;
:func:`subset_summary` gives counts for logging.
"""

from __future__ import annotations

import difflib
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from niwt_pipeline.core.data.images import UNREADABLE, unreadable_image
from niwt_pipeline.core.data.tables import SPLITS, RawDataset
from niwt_pipeline.core.errors import fail

logger = logging.getLogger(__name__)

ClassSelection = str | Sequence[str]


def _check_raw(raw: RawDataset) -> None:
    """Duplicate paths/classes, unknown classes and bad split names in the raw tables."""
    images, classes = raw.images, raw.classes
    duplicated_classes = classes["class_name"][classes["class_name"].duplicated()]
    if len(duplicated_classes):
        raise fail(raw.root, f"class {duplicated_classes.iloc[0]!r} listed twice", key="classes")
    duplicated = images["relpath"][images["relpath"].duplicated()]
    if len(duplicated):
        raise fail(
            raw.root,
            f"image {duplicated.iloc[0]!r} listed twice (its image_id would not be unique)",
            key="images",
        )
    unknown = sorted(set(images["class_name"]) - set(classes["class_name"]))
    if unknown:
        raise fail(raw.root, f"images of unknown classes {unknown[:5]}", key="images")
    bad = sorted(set(images["split"]) - set(SPLITS))
    if bad:
        raise fail(raw.root, f"unknown split names {bad}; expected {list(SPLITS)}", key="images")


def _file_exists(image_root: Path, relpaths: pd.Series) -> np.ndarray:
    return np.array([(image_root / p).is_file() for p in relpaths], dtype=bool)


def _is(selection: ClassSelection, keyword: str) -> bool:
    return isinstance(selection, str) and selection == keyword


def _select_classes(raw: RawDataset, classes: ClassSelection, with_files: set[str]) -> list[str]:
    """Included class names in dataset order (``with_files``: classes with an image on disk)."""
    names = list(raw.classes["class_name"])
    if _is(classes, "all"):
        return names
    if _is(classes, "present"):
        dropped = [n for n in names if n not in with_files]
        if dropped:
            logger.warning(
                "%s: %d class(es) left out by `classes: present` (no image file of them on "
                "disk): %s",
                raw.root,
                len(dropped),
                ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""),
            )
        return [n for n in names if n in with_files]
    if isinstance(classes, str):
        raise ValueError(
            f"classes must be 'all', 'present' or a list of class names, got {classes!r}"
        )
    wanted = [unicodedata.normalize("NFC", str(n)).strip() for n in classes]
    for name in wanted:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {close}?" if close else f"the classes are: {names[:12]}"
            raise fail(
                raw.root,
                f"ingestion.classes names {name!r}, which is not a class of the dataset; "
                f"{hint} (classes.csv lists them all)",
                key="classes",
            )
    if len(set(wanted)) != len(wanted):
        raise ValueError(
            f"class list has duplicates: {sorted({n for n in wanted if wanted.count(n) > 1})}"
        )
    return [n for n in names if n in set(wanted)]


def _check_class_splits(raw: RawDataset, included: list[str], images: pd.DataFrame) -> None:
    """Seen classes have trainval and no test_unseen images; unseen classes have only
    test_unseen images, or none (a class defined by its domain knowledge alone)."""
    seen = dict(zip(raw.classes["class_name"], raw.classes["seen"], strict=True))
    splits_of = images.groupby("class_name")["split"].agg(set)
    for name in included:
        splits = splits_of.get(name, set())
        if not splits and seen[name]:
            raise fail(raw.root, f"seen class {name!r} has no images in any split", key="classes")
        if not splits:  # an unseen class defined by its domain knowledge alone
            continue
        if seen[name] and "trainval" not in splits:
            raise fail(raw.root, f"seen class {name!r} has no trainval images", key="classes")
        if seen[name] and "test_unseen" in splits:
            raise fail(raw.root, f"seen class {name!r} has test_unseen images", key="classes")
        if not seen[name] and splits != {"test_unseen"}:
            raise fail(
                raw.root,
                f"unseen class {name!r} has {sorted(splits - {'test_unseen'})} images",
                key="classes",
            )


def _domain_table(dk: pd.DataFrame, included: list[str], root: Path) -> pd.DataFrame:
    """The (n_included, D) float64 domain-knowledge rows, validated, with str column names."""
    if dk.index.duplicated().any():
        raise fail(
            root,
            f"class {dk.index[dk.index.duplicated()][0]!r} has two rows",
            key="domain_knowledge",
        )
    missing = [n for n in included if n not in dk.index]
    if missing:
        raise fail(
            root,
            f"no domain knowledge for {len(missing)} class(es): {missing[:10]}",
            key="domain_knowledge",
        )
    if dk.shape[1] == 0:
        raise fail(root, "domain knowledge has no columns", key="domain_knowledge")
    table = dk.loc[included]
    if not all(isinstance(c, str) for c in table.columns):
        logger.info("domain knowledge columns are not all strings: renamed dim_000..")
        width = max(3, len(str(table.shape[1] - 1)))
        table = table.set_axis([f"dim_{i:0{width}d}" for i in range(table.shape[1])], axis=1)
    if table.columns.duplicated().any():
        raise fail(
            root,
            f"duplicate column {table.columns[table.columns.duplicated()][0]!r}",
            key="domain_knowledge",
        )
    try:
        values = table.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise fail(root, f"values must be numbers ({exc})", key="domain_knowledge") from exc
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, col = bad[0]
        raise fail(
            root,
            f"class {included[row]!r}, column {table.columns[col]!r}: "
            f"{values[row, col]} is not finite "
            f"({len(bad)} such values)",
            key="domain_knowledge",
        )
    return pd.DataFrame(values, columns=pd.Index(table.columns, dtype="str"))


def canonicalise(
    raw: RawDataset,
    domain_knowledge: pd.DataFrame,
    *,
    classes: ClassSelection = "all",
    check_images: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Select classes, assign ids and build the canonical images/classes/domain tables.

    Args:
        raw: what a reader returned.
        domain_knowledge: (>= C, D) numbers, index class_name; rows of classes that are not
            included are ignored; non-string column names become ``dim_000``...
        classes: ``"all"``; ``"present"`` (only the classes with at least one image file on
            disk; within them every file must exist); or a list of class names (kept in the
            dataset's class order).
        check_images: check that every included image file exists (always done for
            ``"present"``).  Only existence is checked; see :func:`verify_images` for decoding.

    Returns:
        ``images`` (image_id int64, path str absolute, class_id int64, split str), sorted by
        image_id, where image_id is the position in the sorted relpaths of the *whole* dataset;
        ``classes`` (class_id int64, name str, seen bool); ``domain_knowledge`` (class_id,
        name, one float64 column per dimension).

    Raises:
        InputError: naming the dataset root (and the class, path or key) on duplicate paths,
            unknown classes or splits, missing image files, empty classes, classes without
            domain knowledge or non-finite domain-knowledge values.
    """
    _check_raw(raw)
    image_root = Path(raw.image_root).resolve()
    everything = raw.images.sort_values("relpath", ignore_index=True)
    everything["image_id"] = np.arange(len(everything), dtype=np.int64)
    present = (
        _file_exists(image_root, everything["relpath"])
        if check_images or _is(classes, "present")
        else None
    )
    with_files = set() if present is None else set(everything["class_name"][present])
    included = _select_classes(raw, classes, with_files)
    mask = everything["class_name"].isin(included).to_numpy()
    if present is not None and not present[mask].all():
        first = np.flatnonzero(mask & ~present)
        raise fail(
            image_root / everything["relpath"].iloc[first[0]],
            f"image file not found ({len(first)} missing among the included classes)",
        )
    images = everything[mask]
    _check_class_splits(raw, included, images)
    dk_values = _domain_table(domain_knowledge, included, Path(raw.root))

    class_id = {name: i for i, name in enumerate(included)}
    seen = dict(zip(raw.classes["class_name"], raw.classes["seen"], strict=True))
    images_df = pd.DataFrame(
        {
            "image_id": images["image_id"].to_numpy(dtype=np.int64),
            "path": pd.array([str(image_root / p) for p in images["relpath"]], dtype="str"),
            "class_id": images["class_name"].map(class_id).to_numpy(dtype=np.int64),
            "split": pd.array(images["split"].to_numpy(), dtype="str"),
        }
    )
    classes_df = pd.DataFrame(
        {
            "class_id": np.arange(len(included), dtype=np.int64),
            "name": pd.array(included, dtype="str"),
            "seen": np.array([bool(seen[n]) for n in included], dtype=bool),
        }
    )
    dk_df = pd.concat([classes_df[["class_id", "name"]], dk_values], axis=1)
    logger.info("canonicalised %s: %s", raw.name, subset_summary(images_df, classes_df))
    return images_df, classes_df, dk_df


def verify_images(paths: Iterable[str | Path]) -> None:
    """Decode-check image files with ``PIL.Image.verify`` (cheap: no full decode).

    Raises:
        InputError: naming the first missing, corrupt or too large (Pillow's pixel limit)
            file.
    """
    for path in map(Path, paths):
        if not path.is_file():
            raise fail(path, "image file not found")
        try:
            with Image.open(path) as image:
                image.verify()
        except (Image.DecompressionBombError, *UNREADABLE) as exc:
            raise unreadable_image(path, exc) from exc


def subset_summary(images: pd.DataFrame, classes: pd.DataFrame) -> dict[str, object]:
    """Counts for logging: ``n_classes``, ``n_seen``, ``n_unseen``, ``n_images`` and
    ``images_per_split`` (a dict over :data:`SPLITS`)."""
    counts = images["split"].value_counts()
    n_seen = int(classes["seen"].sum())
    return {
        "n_classes": len(classes),
        "n_seen": n_seen,
        "n_unseen": len(classes) - n_seen,
        "n_images": len(images),
        "images_per_split": {split: int(counts.get(split, 0)) for split in SPLITS},
    }
