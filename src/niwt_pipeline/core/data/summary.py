"""Small derived tables of an ingested dataset: per-image true attributes and a summary."""

from __future__ import annotations

from typing import Any

import pandas as pd

from niwt_pipeline.core.data.canonical import subset_summary
from niwt_pipeline.core.data.tables import RawDataset


def image_attribute_table(raw: RawDataset, images: pd.DataFrame) -> pd.DataFrame:
    """True per-image attributes keyed by canonical ``image_id``.

    Args:
        raw: the dataset as read; ``raw.image_attributes`` has ``relpath`` then 0/1 columns.
        images: canonical images table (``image_id``, ``path``, ...).

    Returns:
        ``image_id`` then one int column per attribute, for the images of ``images``; a table
        with only ``image_id`` (no rows) when the layout records no per-image attributes.
    """
    if raw.image_attributes is None:
        return pd.DataFrame({"image_id": pd.Series([], dtype="int64")})
    relpaths = images["path"].map(lambda p: _relative(p, raw))
    table = raw.image_attributes.set_index("relpath")
    found = table.reindex(relpaths.to_numpy())
    found.insert(0, "image_id", images["image_id"].to_numpy())
    return found.dropna().astype({c: "int64" for c in table.columns}).reset_index(drop=True)


def _relative(path: str, raw: RawDataset) -> str:
    from pathlib import Path

    return Path(path).resolve().relative_to(Path(raw.image_root).resolve()).as_posix()


def summarise(
    raw: RawDataset, images: pd.DataFrame, classes: pd.DataFrame, domain_knowledge: pd.DataFrame
) -> dict[str, Any]:
    """A JSON-ready summary of what ingestion produced (the counts of
    :func:`~niwt_pipeline.core.data.canonical.subset_summary`, plus names and notes;
    ``classes_left_out`` names the dataset's classes the class selection dropped)."""
    return {
        "dataset": raw.name,
        "root": str(raw.root),
        **subset_summary(images, classes),
        "unseen_classes": classes.loc[~classes["seen"], "name"].tolist(),
        "classes_left_out": [n for n in raw.classes["class_name"] if n not in set(classes["name"])],
        "domain_knowledge_dims": int(domain_knowledge.shape[1] - 2),
        "notes": list(raw.notes),
    }
