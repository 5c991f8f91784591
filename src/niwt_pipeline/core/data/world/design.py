"""The design of an attribute world: classes, their attributes, images and descriptions.

Holds :class:`World` (the generated tables plus lazily rendered images) and
:func:`generate_world`, which draws everything that precedes the pixels from one seeded
``numpy.random.Generator``: the seen and unseen class prototypes, each class's attribute
distribution, the per-image attribute values and train/test split, the text descriptions and
the per-image nuisance parameters :func:`~niwt_pipeline.core.data.world.render.render_image`
reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from niwt_pipeline.core.data.world.config import (
    COLOUR_HUES,
    GROUPS,
    PATTERN_ADJECTIVES,
    PATTERN_PHRASES,
    SIZE_RADII,
    WorldConfig,
)
from niwt_pipeline.core.data.world.render import render_image
from niwt_pipeline.core.errors import fail

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass
class World:
    """A generated attribute world: tables plus lazily rendered images.

    Attributes:
        classes: ``class_name`` (str), ``seen`` (bool), sorted by name.
        splits: ``relpath`` (``"<class_name>/<index:04d>.png"``), ``split`` (trainval,
            test_seen or test_unseen), sorted by relpath.
        attributes: index ``class_name`` (same order as ``classes``), one float column per
            attribute: the fraction of the class's images that show the value.
        descriptions: ``class_name``, ``text``; several phrasings a class.
        image_attributes: ``relpath`` then one 0/1 int column per attribute: the true values.
        config: the :class:`WorldConfig` as a dict (for a manifest).
        prototypes: ``class_name``, ``seen``, then one column per group with the prototype value.
        image_params: one row per image (same order as ``splits``): ``relpath``, ``class_name``,
            ``split``, the group values and the nuisance parameters :func:`render_image` needs.
    """

    classes: pd.DataFrame
    splits: pd.DataFrame
    attributes: pd.DataFrame
    descriptions: pd.DataFrame
    image_attributes: pd.DataFrame
    config: dict[str, Any]
    prototypes: pd.DataFrame
    image_params: pd.DataFrame = field(repr=False)

    @property
    def attribute_names(self) -> list[str]:
        """The binary attributes' names, in column order."""
        return list(self.attributes.columns)

    def world_config(self) -> WorldConfig:
        """The :class:`WorldConfig` the world was generated from."""
        return WorldConfig.from_dict(self.config)

    def render(self, relpath: str) -> Image.Image:
        """Render one image by its relative path.

        Returns:
            An RGB ``PIL.Image`` of ``image_size`` x ``image_size`` pixels.

        Raises:
            InputError: keyed by ``relpath`` if the world has no such image.
        """
        rows = self.image_params.index[self.image_params["relpath"] == relpath]
        if len(rows) == 0:
            raise fail("World", "no such image", key=relpath)
        cfg = self.world_config()
        params = self.image_params.loc[rows[0]].to_dict()
        return render_image(
            params, cfg.image_size, supersample=cfg.supersample, noise_std=cfg.noise_std
        )

    def iter_images(
        self, relpaths: Sequence[str] | None = None
    ) -> Iterator[tuple[str, Image.Image]]:
        """Yield ``(relpath, PIL.Image)`` one at a time, re-rendering deterministically.

        Args:
            relpaths: only these images (in this order); all images in ``splits`` order if None.

        Raises:
            InputError: keyed by the first unknown path if ``relpaths`` names an image the
                world does not have (raised on the first ``next``).
        """
        cfg = self.world_config()
        table = self.image_params
        if relpaths is not None:
            wanted = list(relpaths)
            unknown = set(wanted) - set(table["relpath"])
            if unknown:
                raise fail("World", f"no such image(s) ({len(unknown)} in all)", key=min(unknown))
            table = table.set_index("relpath", drop=False).loc[wanted]
        for params in table.to_dict("records"):
            yield (
                params["relpath"],
                render_image(
                    params, cfg.image_size, supersample=cfg.supersample, noise_std=cfg.noise_std
                ),
            )


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _choose_prototypes(
    cfg: WorldConfig, rng: np.random.Generator
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Draw distinct seen and unseen prototypes (tuples of value indices, one per group).

    The seen prototypes cover every value of every group where there are enough seen
    classes (``min(n_seen, n_values)`` values otherwise); unseen prototypes are new
    combinations of covered values only.
    """
    counts = [len(v) for v in cfg.group_values.values()]
    n_seen, n_unseen = cfg.n_seen, cfg.n_unseen
    n_cover = min(n_seen, max(counts))

    # Coverage rows: per group, a random permutation of its values tiled to n_cover rows.
    covering: list[tuple[int, ...]] = []
    for _ in range(1000):
        columns = []
        for k in counts:
            reps = -(-n_cover // k)
            col = np.concatenate([rng.permutation(k) for _ in range(reps)])[:n_cover]
            columns.append(col)
        covering = [tuple(int(c[i]) for c in columns) for i in range(n_cover)]
        if len(set(covering)) == n_cover:
            break
    else:  # pragma: no cover - astronomically unlikely for valid configs
        raise RuntimeError("could not draw distinct covering prototypes")

    used = set(covering)
    seen = list(covering)
    total = math.prod(counts)
    while len(seen) < n_seen:
        # Sample without replacement from the unused combinations (small spaces: enumerate).
        code = int(rng.integers(total))
        combo = tuple(int(x) for x in np.unravel_index(code, counts))
        if combo not in used:
            used.add(combo)
            seen.append(combo)

    covered = [sorted({p[g] for p in seen}) for g in range(len(counts))]
    candidates = [
        tuple(
            int(covered[g][j])
            for g, j in enumerate(np.unravel_index(code, [len(c) for c in covered]))
        )
        for code in range(math.prod(len(c) for c in covered))
    ]
    candidates = [c for c in candidates if c not in used]
    if len(candidates) < n_unseen:  # pragma: no cover - excluded by WorldConfig validation
        raise RuntimeError("not enough new combinations for the unseen classes")
    picks = rng.choice(len(candidates), size=n_unseen, replace=False)
    unseen = [candidates[int(i)] for i in picks]
    return seen, unseen


def _class_distribution(
    proto: int, k: int, cfg: WorldConfig, rng: np.random.Generator
) -> np.ndarray:
    """A distribution over a group's k values with most mass on the prototype value."""
    probs = np.zeros(k)
    n_alt = min(cfg.max_alternatives, k - 1)
    if n_alt == 0:
        probs[proto] = 1.0
        return probs
    mass = float(rng.uniform(*cfg.prototype_mass))
    n_alt = int(rng.integers(1, n_alt + 1))
    others = [j for j in range(k) if j != proto]
    alts = rng.choice(others, size=n_alt, replace=False)
    split = rng.dirichlet(np.full(n_alt, 2.0)) * (1.0 - mass)
    probs[proto] = mass
    probs[alts] = split
    return probs


def _stratified_draw(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n value indices whose counts follow probs (largest remainder), in random order."""
    raw = probs * n
    counts = np.floor(raw).astype(int)
    remainder = n - counts.sum()
    if remainder > 0:
        order = np.lexsort((-probs, -(raw - counts)))  # largest remainder, ties: larger prob
        counts[order[:remainder]] += 1
    values = np.repeat(np.arange(len(probs)), counts)
    return rng.permutation(values)


def _class_name(values: Mapping[str, str]) -> str:
    """``<size>_<colour>_<pattern adjective>_<shape>``, e.g. ``large_red_striped_circle``."""
    pattern = PATTERN_ADJECTIVES[values["pattern"]]
    return f"{values['size']}_{values['colour']}_{pattern}_{values['shape']}"


def _frequency_word(p: float) -> str:
    if p >= 0.85:
        return "almost always"
    if p >= 0.6:
        return "usually"
    if p >= 0.3:
        return "often"
    if p >= 0.1:
        return "sometimes"
    return "occasionally"


def _describe(proto: Mapping[str, str], dist: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Several phrasings of a class, each naming every prototype value."""
    size, colour, pattern, shape = proto["size"], proto["colour"], proto["pattern"], proto["shape"]
    adj = PATTERN_ADJECTIVES[pattern]
    texts = [
        f"A {size} {colour} {shape} with {PATTERN_PHRASES[pattern]}.",
        f"A {shape} that is {colour}, {adj} and {size} in size.",
        f"Shape: {shape}. Colour: {colour}. Pattern: {pattern}. Size: {size}.",
    ]
    nouns = {"shape": "a {}", "colour": "{}", "pattern": "{}", "size": "{}"}
    lead = {
        "shape": "This object is",
        "colour": "Its colour is",
        "pattern": "Its surface is",
        "size": "It is",
    }
    sentences = []
    for group in GROUPS:
        ranked = sorted(dist[group].items(), key=lambda kv: -kv[1])
        parts = []
        for value, p in ranked:
            if p <= 0:
                continue
            word = PATTERN_ADJECTIVES[value] if group == "pattern" else value
            parts.append(f"{_frequency_word(p)} {nouns[group].format(word)}")
        sentences.append(f"{lead[group]} {', '.join(parts)}.")
    texts.append(" ".join(sentences))
    return texts


def generate_world(config: WorldConfig | None = None) -> World:
    """Generate the world a config describes (deterministic for ``config.seed``).

    Only tables are built here (fast); images are rendered lazily by
    :meth:`World.iter_images`.

    Raises:
        TypeError: if ``config`` is neither None nor a :class:`WorldConfig`.
        RuntimeError: if distinct class prototypes or names cannot be drawn (excluded by
            :class:`WorldConfig` validation; should not happen).
    """
    cfg = config if config is not None else WorldConfig()
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"generate_world expects a WorldConfig, got {type(cfg).__name__}")
    rng = np.random.default_rng(cfg.seed)
    group_values = cfg.group_values
    seen_protos, unseen_protos = _choose_prototypes(cfg, rng)

    n = cfg.images_per_class
    n_total = cfg.n_classes * n
    class_rows: list[dict[str, Any]] = []
    description_rows: list[dict[str, str]] = []
    value_idx = {g: np.zeros(n_total, dtype=np.int64) for g in GROUPS}
    split_col = np.empty(n_total, dtype=object)
    class_col = np.empty(n_total, dtype=object)
    index_col = np.zeros(n_total, dtype=np.int64)
    attr_rows: list[np.ndarray] = []

    for c, (proto, seen) in enumerate(
        [(p, True) for p in seen_protos] + [(p, False) for p in unseen_protos]
    ):
        values = {g: group_values[g][proto[i]] for i, g in enumerate(GROUPS)}
        name = _class_name(values)
        class_rows.append({"class_name": name, "seen": seen, **values})
        sl = slice(c * n, (c + 1) * n)
        dist: dict[str, dict[str, float]] = {}
        fractions = []
        for i, g in enumerate(GROUPS):
            k = len(group_values[g])
            probs = _class_distribution(proto[i], k, cfg, rng)
            drawn = _stratified_draw(probs, n, rng)
            value_idx[g][sl] = drawn
            frac = np.bincount(drawn, minlength=k) / n
            fractions.append(frac)
            dist[g] = {group_values[g][j]: float(frac[j]) for j in range(k)}
        attr_rows.append(np.concatenate(fractions))
        class_col[sl] = name
        index_col[sl] = np.arange(n)
        if seen:
            split = np.full(n, "trainval", dtype=object)
            split[rng.choice(n, size=cfg.n_test_seen, replace=False)] = "test_seen"
        else:
            split = np.full(n, "test_unseen", dtype=object)
        split_col[sl] = split
        description_rows.extend({"class_name": name, "text": t} for t in _describe(values, dist))

    names = [r["class_name"] for r in class_rows]
    if len(set(names)) != len(names):  # pragma: no cover - prototypes are distinct
        raise RuntimeError("class names are not unique")

    # Nuisance parameters, vectorised.
    size_radius = np.array([SIZE_RADII[s] for s in cfg.sizes])[value_idx["size"]]
    scale = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter, n_total)
    radius = size_radius * scale  # fraction of half side
    room = np.clip(1.0 - radius, 0.0, None)
    max_shift = np.minimum(cfg.position_jitter, room)
    cx = rng.uniform(-1.0, 1.0, n_total) * max_shift
    cy = rng.uniform(-1.0, 1.0, n_total) * max_shift
    rotation = rng.uniform(-cfg.rotation_degrees, cfg.rotation_degrees, n_total)
    hue = np.array([COLOUR_HUES[c] for c in cfg.colours])[value_idx["colour"]]
    hue = (hue + rng.uniform(-cfg.hue_jitter_degrees, cfg.hue_jitter_degrees, n_total)) % 360.0
    saturation = np.clip(
        0.85 + rng.uniform(-cfg.brightness_jitter, cfg.brightness_jitter, n_total), 0, 1
    )
    value = np.clip(0.9 + rng.uniform(-cfg.brightness_jitter, cfg.brightness_jitter, n_total), 0, 1)
    bg_hue = rng.uniform(0.0, 360.0, n_total)
    bg_sat = rng.uniform(0.0, cfg.background_saturation, n_total)
    bg_val = rng.uniform(*cfg.background_value, n_total)
    pattern_phase = rng.uniform(0.0, 1.0, n_total)
    noise_seed = rng.integers(0, 2**31 - 1, n_total)

    relpaths = [f"{name}/{i:04d}.png" for name, i in zip(class_col, index_col, strict=True)]
    params = pd.DataFrame(
        {
            "relpath": relpaths,
            "class_name": class_col.astype(str),
            "index": index_col,
            "split": split_col.astype(str),
            **{g: np.asarray(group_values[g])[value_idx[g]] for g in GROUPS},
            "radius": radius,
            "cx": cx,
            "cy": cy,
            "rotation": rotation,
            "hue": hue,
            "saturation": saturation,
            "value": value,
            "bg_hue": bg_hue,
            "bg_saturation": bg_sat,
            "bg_value": bg_val,
            "pattern_phase": pattern_phase,
            "noise_seed": noise_seed.astype(np.int64),
        }
    )
    params = params.sort_values("relpath", kind="stable").reset_index(drop=True)

    attr_names = cfg.attribute_names
    onehots = []
    for g in GROUPS:
        column = params[g].to_numpy()
        onehots.append(np.stack([(column == v) for v in group_values[g]], axis=1).astype(np.int64))
    image_attributes = pd.DataFrame(np.concatenate(onehots, axis=1), columns=attr_names)
    image_attributes.insert(0, "relpath", params["relpath"].to_numpy())

    order = np.argsort(names, kind="stable")
    prototypes = pd.DataFrame([class_rows[i] for i in order]).reset_index(drop=True)
    classes = prototypes[["class_name", "seen"]].copy()
    attributes = pd.DataFrame(np.stack([attr_rows[i] for i in order]), columns=attr_names)
    attributes.index = pd.Index(prototypes["class_name"].to_numpy(), name="class_name")
    descriptions = pd.DataFrame(description_rows)
    descriptions["_order"] = descriptions["class_name"].map(
        {name: j for j, name in enumerate(sorted(names))}
    )
    descriptions = (
        descriptions.sort_values("_order", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    splits = params[["relpath", "split"]].copy()
    logger.info(
        "generated attribute world: %d classes (%d unseen), %d images, %d attributes (seed %d)",
        cfg.n_classes,
        cfg.n_unseen,
        n_total,
        len(attr_names),
        cfg.seed,
    )
    return World(
        classes=classes,
        splits=splits,
        attributes=attributes,
        descriptions=descriptions,
        image_attributes=image_attributes,
        config=cfg.to_dict(),
        prototypes=prototypes,
        image_params=params,
    )
