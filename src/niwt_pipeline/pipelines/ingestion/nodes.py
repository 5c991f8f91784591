"""Ingestion nodes: thin calls into ``niwt_pipeline.core.data``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from niwt_pipeline.core.data.canonical import canonicalise, verify_images
from niwt_pipeline.core.data.summary import image_attribute_table, summarise
from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.params import IngestionParams

logger = logging.getLogger(__name__)


def build_domain_knowledge(
    raw_source: RawDataset, domain_knowledge_source: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Turn the configured source into a class x dimension table.

    Returns:
        DataFrame with a ``class_name`` column, then one float column per dimension; and
        a description of the source (JSON).
    """
    table = domain_knowledge_source.build(raw_source)
    info = {
        "source": domain_knowledge_source.describe(),
        "n_classes": int(table.shape[0]),
        "n_dims": int(table.shape[1]),
        "state": domain_knowledge_source.state(),
    }
    logger.info("domain knowledge: %s, %d classes x %d dimensions", info["source"], *table.shape)
    return table.rename_axis("class_name").reset_index(), info


def canonicalise_dataset(
    raw_source: RawDataset,
    raw_domain_knowledge: pd.DataFrame,
    domain_knowledge_info: dict[str, Any],
    options: IngestionParams,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Select classes, assign ids and validate; return the canonical tables and a summary."""
    images, classes, domain_knowledge = canonicalise(
        raw_source,
        raw_domain_knowledge.set_index("class_name"),
        classes=options.classes,
        check_images=options.check_images,
    )
    if options.check_images:
        verify_images(images["path"])
    image_attributes = image_attribute_table(raw_source, images)
    summary = summarise(raw_source, images, classes, domain_knowledge)
    summary["domain_knowledge"] = domain_knowledge_info["source"]
    logger.info(
        "ingested %s: %d classes (%d seen, %d unseen), images per split %s",
        summary["dataset"],
        summary["n_classes"],
        summary["n_seen"],
        summary["n_unseen"],
        summary["images_per_split"],
    )
    return images, classes, domain_knowledge, image_attributes, summary
