"""Classes defined by their description alone: read from a CSV, described by the dataset's
domain-knowledge source exactly as the dataset's own classes were, and appended to the
classes the classifier knows (they get NIWT rows like every unseen class, but have no
images, so they are left out of the accuracies).

The file is ``class_name,<dim>,...`` (one row a class, the dataset's dimension names) for
attribute-like sources, or ``class_name,text`` (one description a row, several rows a
class allowed) for text embeddings.  NIWT builds a row from the mapper's predicted
importance for the class's domain knowledge (Selvaraju et al., ECCV 2018, sec. 3.3), so a
new class needs neither images nor retraining of the backbone or the mapper.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from niwt_pipeline.core.data.own import read_class_table_csv, read_descriptions_csv
from niwt_pipeline.core.data.text import read_text
from niwt_pipeline.core.errors import InputError, fail, shorten
from niwt_pipeline.core.importance import importance_columns
from niwt_pipeline.core.mapper import LinearMapper


@dataclass(frozen=True)
class ExtraClasses:
    """The classes of an extra-classes file, as written (not yet embedded or scaled).

    Attributes:
        path: the file (for messages).
        values: (E, D) float64 numbers, index ``class_name`` (attribute-like files), or None.
        texts: ``class_name``, ``text`` rows (description files), or None.
        lines: each class name -> the file line it first appears on (for messages).
    """

    path: str
    values: pd.DataFrame | None = None
    texts: pd.DataFrame | None = None
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The class names, in file order, each once."""
        if self.values is not None:
            return [str(n) for n in self.values.index]
        if self.texts is not None:
            return list(dict.fromkeys(str(n) for n in self.texts["class_name"]))
        return []

    def __len__(self) -> int:
        return len(self.names)


def read_extra_classes(path: str | Path) -> ExtraClasses:
    """The extra classes in ``path``; no classes when the file does not exist.

    A header ``class_name,text`` means descriptions; any other header starting with
    ``class_name`` means one number per dimension.

    Raises:
        InputError: naming the file and line for a malformed row, a repeated class, a
            non-number or an empty description (see the CSV readers in
            :mod:`niwt_pipeline.core.data.own`).
    """
    path = Path(path)
    if not path.is_file():
        return ExtraClasses(str(path))
    rows = list(csv.reader(read_text(path).split("\n")))
    header = [cell.strip() for cell in rows[0]] if rows else []
    lines: dict[str, int] = {}
    for number, cells in enumerate(rows[1:], start=2):
        if cells and cells[0].strip():
            lines.setdefault(_key(cells[0]), number)
    if header == ["class_name", "text"]:
        return ExtraClasses(str(path), texts=read_descriptions_csv(path), lines=lines)
    return ExtraClasses(str(path), values=read_class_table_csv(path), lines=lines)


def extra_table(extra: ExtraClasses, columns: Sequence[str]) -> pd.DataFrame:
    """The numbers of an attribute-like extra-classes file, columns in ``columns`` order.

    Raises:
        InputError: naming the file when it holds descriptions instead of numbers, or its
            columns are not exactly ``columns`` (naming the missing and the extra ones).
    """
    if extra.values is None:
        raise fail(
            extra.path,
            "this domain-knowledge source takes one number per dimension: header "
            f"class_name,{','.join(list(columns)[:3])},... (not class_name,text)",
            line=1,
        )
    missing = [c for c in columns if c not in extra.values.columns]
    unexpected = [c for c in extra.values.columns if c not in set(columns)]
    if missing or unexpected:
        raise fail(
            extra.path,
            f"the columns must be the dataset's {len(columns)} dimensions; missing: "
            f"[{shorten(missing)}], not in the dataset: [{shorten(unexpected)}]",
            line=1,
        )
    return extra.values.loc[:, list(columns)].astype(np.float64)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip().casefold()


def add_described_classes(
    rows: pd.DataFrame,
    extra: ExtraClasses,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset's classes and domain knowledge with the extra classes appended.

    Args:
        rows: (E, D) the extra classes' domain knowledge as the source describes it
            (index ``class_name`` in ``extra`` order, the dataset's columns).
        extra: the file they came from (for messages).
        classes: ``class_id``, ``name``, ``seen`` of the dataset's classes.
        domain_knowledge: ``class_id``, ``name``, then the D dimensions.

    Returns:
        ``(classes, domain_knowledge)`` of every class: the extra ones get the next class
        ids, ``seen`` False.

    Raises:
        InputError: naming the file and the classes when an extra class has the name of a
            dataset class (compared after Unicode NFC normalisation, trimmed, ignoring
            case), or a value is not finite.
    """
    if not len(rows):
        return classes.copy(), domain_knowledge.copy()
    known = {_key(str(n)): str(n) for n in classes["name"]}
    clashing = [n for n in rows.index if _key(n) in known]
    if clashing:
        clashes = [f"{n!r} (dataset: {known[_key(n)]!r})" for n in clashing]
        raise fail(
            extra.path,
            f"extra class(es) named like a dataset class: {shorten(clashes)}; "
            "rename them (a dataset class already has its own row)",
            line=extra.lines.get(_key(clashing[0])),
        )
    bad = np.argwhere(~np.isfinite(rows.to_numpy()))
    if len(bad):
        raise InputError(
            f"{extra.path}: class {rows.index[bad[0][0]]!r}: the described value of "
            f"{rows.columns[bad[0][1]]!r} is not finite"
        )
    ids = np.arange(len(rows), dtype=np.int64) + int(classes["class_id"].max()) + 1
    names = pd.array([str(n) for n in rows.index], dtype="str")
    new_classes = pd.DataFrame({"class_id": ids, "name": names, "seen": np.zeros(len(ids), bool)})
    new_dk = pd.DataFrame(rows.to_numpy(), columns=domain_knowledge.columns[2:])
    new_dk.insert(0, "name", names)
    new_dk.insert(0, "class_id", ids)
    return (
        pd.concat([classes, new_classes], ignore_index=True),
        pd.concat([domain_knowledge, new_dk], ignore_index=True),
    )


def new_class_targets(
    predicted_importance: pd.DataFrame,
    mapper: LinearMapper,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """The target importance of every class the backbone was not trained on: the mapping
    pipeline's prediction for the dataset's unseen classes, and the same mapper applied to
    the domain knowledge of the classes defined by their description alone.

    Args:
        predicted_importance: ``class_id``, ``name``, ``seen``, ``k_0000``.. of the dataset.
        mapper: the fitted mapper (domain knowledge (A,) -> importance (K,)).
        classes, domain_knowledge: every class (the dataset's and the extra ones).

    Returns:
        ``(class_ids (U,) int64, targets (U, K) float32)`` in class-id order.
    """
    new = predicted_importance[~predicted_importance["seen"]]
    columns = importance_columns(new)
    ids = new["class_id"].to_numpy(dtype=np.int64)
    target = new[columns].to_numpy(dtype=np.float32)
    extra_ids = np.setdiff1d(
        classes["class_id"].to_numpy(np.int64), predicted_importance["class_id"]
    )
    if not len(extra_ids):
        return ids, target
    dk = domain_knowledge.set_index("class_id").loc[extra_ids].drop(columns="name")
    extra_target = mapper.predict(dk.to_numpy(dtype=np.float32)).numpy().astype(np.float32)
    return np.concatenate([ids, extra_ids]), np.vstack([target, extra_target])
