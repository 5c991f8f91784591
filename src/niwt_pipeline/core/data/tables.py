"""The in-memory form every reader returns, and the canonical table schema.

Every layout reader (CUB-200-2011, AWA2, the project's own layout, the generated
attribute world) returns a :class:`RawDataset`.
:func:`niwt_pipeline.core.data.canonical.canonicalise` turns it (plus a domain-knowledge
table) into the three canonical tables:

``images``            image_id (int64), path (str, absolute), class_id (int64), split (str)
``classes``           class_id (int64), name (str), seen (bool)
``domain_knowledge``  class_id (int64), name (str), then one float64 column per dimension

``image_id`` is the 0-based position of the image in the sorted list of the dataset's
relative image paths (the xlsa17 convention, so ``image_id == *_loc - 1``); ``class_id``
is the 0-based position of the class among the included classes, in the dataset's own
class order.  ``split`` is one of :data:`SPLITS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

SPLITS: tuple[str, ...] = ("trainval", "test_seen", "test_unseen")


@dataclass
class RawDataset:
    """What a layout reader found on disk, before class subsetting and id assignment.

    Attributes:
        name: dataset name, e.g. ``"CUB"``, ``"AWA2"``, ``"attribute_world"``.
        root: folder the dataset was read from.
        images: one row per image of the dataset, columns ``relpath`` (str, relative to
            ``image_root``, '/' separated), ``class_name`` (str), ``split`` (str in SPLITS).
            Images whose file is absent are still listed (subsetting decides).
        image_root: folder that ``relpath`` is relative to.
        classes: one row per class in the dataset's own order, columns ``class_name`` (str)
            and ``seen`` (bool).
        attributes: class-level attributes native to the layout (index ``class_name``, one
            float column per attribute, named); missing values already handled, or None.
        descriptions: text descriptions, columns ``class_name`` and ``text`` (several rows a
            class allowed), or None.
        image_attributes: true per-image attributes where the layout knows them (the attribute
            world): columns ``relpath`` then one 0/1 column per attribute; or None.
        notes: human-readable notes gathered while reading (e.g. how missing values were handled).
    """

    name: str
    root: Path
    images: pd.DataFrame
    image_root: Path
    classes: pd.DataFrame
    attributes: pd.DataFrame | None = None
    descriptions: pd.DataFrame | None = None
    image_attributes: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def domain_knowledge_by_class(domain_knowledge: pd.DataFrame) -> pd.DataFrame:
    """The canonical ``domain_knowledge`` table as ``(C, A)``: indexed by ``class_id``
    (sorted, so row ``c`` is class ``c``), one column per dimension (``name`` dropped).

    Raises:
        ValueError: when the class ids are not exactly ``0..C-1``.
    """
    table = domain_knowledge.set_index("class_id").sort_index().drop(columns="name")
    if not (table.index.to_numpy() == range(len(table))).all():
        raise ValueError("domain_knowledge: class ids must be 0..C-1")
    return table
