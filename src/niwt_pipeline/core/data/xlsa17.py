"""The proposed zero-shot splits of Xian et al. (CVPR 2017, "xlsa17"): ``att_splits.mat``.

An ``att_splits.mat`` (read with :func:`scipy.io.loadmat`) holds

``att``              A x C float, class embeddings (L2-normalised columns for attributes)
``original_att``     A x C float, the unnormalised attributes (absent in ``sent_splits.mat``)
``allclasses_names`` C x 1 cell array of names; the columns of ``att`` follow this order
``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc`` (and sometimes ``train_loc``,
``val_loc``): N x 1 **1-based** positions in the **sorted** list of the dataset's relative
image paths.

:func:`read_att_splits` converts positions to 0-based and validates the file;
:func:`assign_splits` turns them into a split per image path; :func:`read_class_embeddings_mat`
reads any class x dim matrix (e.g. the 1024-d CUB sentence embeddings of ``sent_splits.mat``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from niwt_pipeline.core.data.text import read_text
from niwt_pipeline.core.errors import fail

logger = logging.getLogger(__name__)

#: The three location keys every split file has, with the split each one gives.
SPLIT_KEYS: dict[str, str] = {
    "trainval_loc": "trainval",
    "test_seen_loc": "test_seen",
    "test_unseen_loc": "test_unseen",
}
_OPTIONAL_KEYS: tuple[str, ...] = ("train_loc", "val_loc")


@dataclass(frozen=True)
class Xlsa17Splits:
    """The content of an ``att_splits.mat``, positions converted to 0-based.

    Attributes:
        path: the file read.
        att: (A, C) float64 class embeddings, column j for ``allclasses_names[j]``.
        original_att: (A, C) float64 unnormalised attributes, or None where the file has none.
        allclasses_names: C class names (e.g. ``'002.Laysan_Albatross'``, ``'antelope'``).
        trainval_loc, test_seen_loc, test_unseen_loc: (N,) int64 0-based positions in the
            sorted list of relative image paths.
        train_loc, val_loc: the same for the optional train/validation split, or None.
    """

    path: Path
    att: np.ndarray
    original_att: np.ndarray | None
    allclasses_names: list[str]
    trainval_loc: np.ndarray
    test_seen_loc: np.ndarray
    test_unseen_loc: np.ndarray
    train_loc: np.ndarray | None = None
    val_loc: np.ndarray | None = None

    def locations(self) -> dict[str, np.ndarray]:
        """The three split location arrays keyed by their ``.mat`` key."""
        return {key: getattr(self, key) for key in SPLIT_KEYS}


def load_mat(path: str | Path) -> dict[str, object]:
    """``scipy.io.loadmat`` with errors naming the file; the ``__header__``-style keys dropped.

    Raises:
        InputError: naming the file if it does not exist or is not a readable MATLAB file.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... on bad files
        raise fail(path, f"not a readable MATLAB file ({exc.__class__.__name__}: {exc})") from exc
    return {k: v for k, v in content.items() if not k.startswith("__")}


def mat_strings(value: object, path: Path, key: str) -> list[str]:
    """Strings from a cell array (nested object arrays) or a padded char matrix.

    Raises:
        InputError: naming ``path`` and ``key`` if ``value`` is neither a cell array of
            strings nor a char matrix.
    """
    array = np.asarray(value)
    if array.dtype == object:
        names = []
        for item in array.ravel():
            inner = np.asarray(item).ravel()
            if inner.size != 1 or not isinstance(inner[0], str):
                raise fail(
                    path, f"expected a cell array of strings, found an element {item!r}", key=key
                )
            names.append(str(inner[0]).strip())
        return names
    if array.dtype.kind == "U":
        return [str(s).rstrip() for s in np.atleast_1d(array).ravel()]
    raise fail(path, f"expected a cell array of strings, got dtype {array.dtype}", key=key)


def _matrix(content: Mapping[str, object], path: Path, key: str) -> np.ndarray:
    array = np.asarray(content[key])
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise fail(
            path,
            f"expected a 2-D numeric matrix, got shape {array.shape} dtype {array.dtype}",
            key=key,
        )
    array = array.astype(np.float64)
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        row, col = bad[0]
        raise fail(
            path, f"{len(bad)} non-finite value(s), first at row {row}, column {col}", key=key
        )
    return array


def _locations(content: Mapping[str, object], path: Path, key: str) -> np.ndarray:
    array = np.asarray(content[key])
    if (
        array.ndim > 2
        or (array.ndim == 2 and 1 not in array.shape)
        or array.dtype.kind not in "fiu"
    ):
        raise fail(path, f"expected an N x 1 vector of positions, got shape {array.shape}", key=key)
    values = array.ravel()
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise fail(path, "positions must be whole numbers", key=key)
    values = values.astype(np.int64)
    if values.size and values.min() < 1:
        raise fail(path, f"positions are 1-based, found {values.min()}", key=key)
    if len(np.unique(values)) != len(values):
        raise fail(path, "a position occurs twice", key=key)
    return values - 1


def _check_disjoint(path: Path, locations: Mapping[str, np.ndarray]) -> None:
    keys = list(locations)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            common = np.intersect1d(locations[first], locations[second])
            if len(common):
                raise fail(
                    path,
                    f"{len(common)} position(s) are in both {first} and {second} "
                    f"(first: {common[0] + 1}, 1-based)",
                    key=first,
                )


def read_att_splits(path: str | Path) -> Xlsa17Splits:
    """Read and validate an xlsa17 ``att_splits.mat`` (or ``sent_splits.mat``).

    Checks: the required keys exist; ``att`` (and ``original_att``) are finite (A, C) matrices
    with one column per name; names are unique; positions are whole numbers >= 1 without
    repeats; trainval/test_seen/test_unseen do not overlap.  Whether positions are in range
    depends on the image list: see :func:`assign_splits`.

    Raises:
        InputError: naming the file and key, e.g. ``att_splits.mat [test_unseen_loc]: ...``.
    """
    path = Path(path)
    content = load_mat(path)
    for key in ("att", "allclasses_names", *SPLIT_KEYS):
        if key not in content:
            raise fail(path, f"missing key {key!r}; keys found: {sorted(content)}", key=key)
    names = mat_strings(content["allclasses_names"], path, "allclasses_names")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise fail(path, f"duplicate class names {duplicated}", key="allclasses_names")
    att = _matrix(content, path, "att")
    original = _matrix(content, path, "original_att") if "original_att" in content else None
    for key, matrix in (("att", att), ("original_att", original)):
        if matrix is not None and matrix.shape[1] != len(names):
            raise fail(
                path,
                f"shape {matrix.shape} (A x C) does not match {len(names)} allclasses_names",
                key=key,
            )
    locations = {key: _locations(content, path, key) for key in SPLIT_KEYS}
    _check_disjoint(path, locations)
    optional = {key: _locations(content, path, key) for key in _OPTIONAL_KEYS if key in content}
    return Xlsa17Splits(
        path=path, att=att, original_att=original, allclasses_names=names, **locations, **optional
    )


def assign_splits(
    sorted_relpaths: Sequence[str],
    splits: Xlsa17Splits,
    class_of_relpath: Mapping[str, str],
) -> pd.Series:
    """Give every image its split from the xlsa17 positions.

    Args:
        sorted_relpaths: the dataset's complete list of relative image paths, sorted (the
            positions index this list; a partial list would silently misalign them).
        splits: the split file.
        class_of_relpath: class name of each path (a dict or a Series indexed by relpath).

    Returns:
        Series indexed by relpath (in ``sorted_relpaths`` order), values ``trainval``,
        ``test_seen`` or ``test_unseen``.

    Raises:
        InputError: naming the file and key when a position is out of range, the positions
            do not cover every image exactly once, a located class is not in
            ``allclasses_names``, test_seen has classes without trainval images, or
            test_unseen shares classes with trainval/test_seen.
    """
    relpaths = list(sorted_relpaths)
    if relpaths != sorted(relpaths) or len(set(relpaths)) != len(relpaths):
        raise ValueError("assign_splits needs the sorted list of unique relative paths")
    path, n = splits.path, len(relpaths)
    _check_disjoint(path, splits.locations())
    split = np.full(n, "", dtype=object)
    for key, loc in splits.locations().items():
        if loc.size and loc.max() >= n:
            raise fail(
                path,
                f"position {loc.max() + 1} (1-based) is out of range: the dataset has {n} images",
                key=key,
            )
        split[loc] = SPLIT_KEYS[key]
    uncovered = np.flatnonzero(split == "")
    if len(uncovered):
        raise fail(
            path,
            f"{len(uncovered)} of {n} images are in none of {list(SPLIT_KEYS)} "
            f"(first: {relpaths[uncovered[0]]}); the positions "
            "must index the complete sorted image list",
        )
    classes = np.array([class_of_relpath[p] for p in relpaths], dtype=object)
    _check_split_classes(splits, classes)
    return pd.Series(
        split.astype(str), index=pd.Index(relpaths, name="relpath"), name="split", dtype="str"
    )


def _check_split_classes(splits: Xlsa17Splits, classes: np.ndarray) -> None:
    located = {key: set(classes[loc]) for key, loc in splits.locations().items()}
    path = splits.path
    unknown = sorted(set(classes) - set(splits.allclasses_names))
    if unknown:
        raise fail(
            path,
            f"located images belong to classes not in allclasses_names: {unknown[:5]}",
            key="allclasses_names",
        )
    only_test = sorted(located["test_seen_loc"] - located["trainval_loc"])
    if only_test:
        raise fail(
            path,
            f"classes with test_seen but no trainval images: {only_test[:5]}",
            key="test_seen_loc",
        )
    shared = sorted(
        located["test_unseen_loc"] & (located["trainval_loc"] | located["test_seen_loc"])
    )
    if shared:
        raise fail(
            path,
            f"unseen classes that also have seen-split images: {shared[:5]}",
            key="test_unseen_loc",
        )


def read_class_list(path: str | Path) -> list[str]:
    """A class list such as ``trainvalclasses.txt``: one name a line, blank lines ignored.

    Raises:
        InputError: naming the file if it does not exist or lists a name twice.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise fail(path, f"duplicate class names {duplicated}")
    return names


def dim_names(prefix: str, n: int) -> list[str]:
    """Column names ``prefix_000`` .. (at least 3 digits): ``dim_names('emb', 384)``."""
    width = max(3, len(str(n - 1)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


def read_class_embeddings_mat(path: str | Path, key: str = "att") -> pd.DataFrame:
    """A class x dim table from a ``.mat`` file holding ``key`` (D x C) and ``allclasses_names``.

    Returns:
        DataFrame (C, D) float64, index ``class_name`` in ``allclasses_names`` order, columns
        ``dim_000`` .. (e.g. (200, 1024) for CUB ``sent_splits.mat``).

    Raises:
        InputError: naming the file and key if the file is missing or unreadable, ``key`` or
            ``allclasses_names`` is absent, the matrix is not 2-D numeric and finite, its
            column count differs from the number of names, or a name occurs twice.
    """
    path = Path(path)
    content = load_mat(path)
    for needed in (key, "allclasses_names"):
        if needed not in content:
            raise fail(path, f"missing key {needed!r}; keys found: {sorted(content)}", key=needed)
    names = mat_strings(content["allclasses_names"], path, "allclasses_names")
    matrix = _matrix(content, path, key)
    if matrix.shape[1] != len(names):
        raise fail(
            path,
            f"shape {matrix.shape} (D x C) does not match {len(names)} allclasses_names",
            key=key,
        )
    if len(set(names)) != len(names):
        raise fail(path, "duplicate class names", key="allclasses_names")
    return pd.DataFrame(
        matrix.T,
        index=pd.Index(names, name="class_name", dtype="str"),
        columns=dim_names("dim", matrix.shape[0]),
    )


def write_att_splits(
    path: str | Path,
    *,
    att: np.ndarray,
    allclasses_names: Sequence[str],
    trainval_loc: Sequence[int],
    test_seen_loc: Sequence[int],
    test_unseen_loc: Sequence[int],
    original_att: np.ndarray | None = None,
    **more_loc: Sequence[int],
) -> Path:
    """Write a split file shaped like the xlsa17 ones (cell-array names, 1-based N x 1 positions).

    Args:
        att: (A, C) matrix, column j for ``allclasses_names[j]``.
        trainval_loc, test_seen_loc, test_unseen_loc: **0-based** positions in the sorted
            relative path list (written 1-based, as in the originals).
        more_loc: more position lists written the same way, e.g. ``train_loc`` and
            ``val_loc`` (the xlsa17 train/validation split).
    """
    path = Path(path)
    names = np.empty((len(allclasses_names), 1), dtype=object)
    for i, name in enumerate(allclasses_names):
        names[i, 0] = np.array([name])
    content: dict[str, object] = {
        "att": np.asarray(att, dtype=np.float64),
        "allclasses_names": names,
    }
    if original_att is not None:
        content["original_att"] = np.asarray(original_att, dtype=np.float64)
    for key, loc in (
        ("trainval_loc", trainval_loc),
        ("test_seen_loc", test_seen_loc),
        ("test_unseen_loc", test_unseen_loc),
        *more_loc.items(),
    ):
        content[key] = (np.asarray(loc, dtype=np.int64) + 1).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, content)
    return path
