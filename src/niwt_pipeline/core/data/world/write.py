"""Writing an attribute world to disk in the project's own dataset layout.

Holds :func:`write_world`, which renders the images one at a time into the own layout (see
:mod:`niwt_pipeline.core.data.own`) and adds ``world.json``, the manifest that records the
generating config, the attribute groups and the class prototypes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from niwt_pipeline.core.data.atomic import replaced_atomically

if TYPE_CHECKING:
    from niwt_pipeline.core.data.tables import RawDataset
    from niwt_pipeline.core.data.world.design import World

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _world_manifest(world: World) -> dict[str, Any]:
    cfg = world.world_config()
    return {
        "generator": "niwt_pipeline.core.data.world",
        "config": world.config,
        "groups": {g: list(v) for g, v in cfg.group_values.items()},
        "attributes": world.attribute_names,
        "prototypes": world.prototypes.to_dict("records"),
    }


def _atomic_write_text(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_world(world: World, root: str | Path, *, name: str = "attribute_world") -> RawDataset:
    """Write a world in the project's own layout, plus ``<root>/world.json`` (its config).

    Images are rendered one at a time while writing (never all in memory).  ``world.json``
    holds the generating config, the attribute groups and the class prototypes, so the world
    can be regenerated and checked; it is written atomically after the layout is in place.

    Returns:
        The dataset as :func:`niwt_pipeline.core.data.own.read_own_layout` reads it back.
    """
    from niwt_pipeline.core.data.own import write_own_layout  # lazy: optional at import time

    root = Path(root)
    raw = write_own_layout(
        root,
        classes=world.classes,
        splits=world.splits,
        images=world.iter_images(),
        attributes=world.attributes,
        descriptions=world.descriptions,
        image_attributes=world.image_attributes,
        name=name,
    )
    manifest = _world_manifest(world)
    _atomic_write_text(
        root / "world.json", json.dumps(manifest, indent=2, default=_json_default) + "\n"
    )
    logger.info("wrote attribute world (%d images) to %s", len(world.splits), root)
    return raw


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")
