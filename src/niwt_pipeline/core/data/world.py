"""A seeded, procedurally rendered "attribute world" for zero-shot learning.

Each image shows one object on a noisy background.  The object's *shape*, *colour*,
*pattern* (texture) and *size* are attribute values; binary attributes are named
``group::value`` (``shape::circle``, ``colour::red``, ...).

A class is a *prototype* (one value per group) plus intra-class variation: for every group
the class has a distribution that puts most of its mass (``prototype_mass``) on the
prototype value and the rest on one or two alternatives, and every image draws its values
from these distributions (stratified, so the class's images show each value in proportion).
The class-level attribute vector is the fraction of the class's images that show each
value, so it is continuous, like CUB's, and exactly the mean of the images' true
attributes.  Continuous nuisance variation (position, rotation within
``+-rotation_degrees``, scale, hue, brightness, background colour and pixel noise) sits on
top.

Unseen classes are new combinations of values that all occur among the seen classes'
prototypes; all prototypes are distinct.  Everything is drawn from one seeded
``numpy.random.Generator``, so a configuration always gives the same world, pixel for pixel.

Images are not kept in memory: :class:`World` stores a small table of per-image rendering
parameters and :meth:`World.iter_images` re-renders them on demand with :func:`render_image`.

Public API: :class:`WorldConfig`, :class:`World`, :func:`generate_world`,
:func:`render_image`, :func:`write_world`, and the value vocabularies
:data:`SHAPES`, :data:`COLOURS`, :data:`PATTERNS`, :data:`SIZES`.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from niwt_pipeline.core.errors import fail

if TYPE_CHECKING:
    from niwt_pipeline.core.data.tables import RawDataset

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------

#: Shapes the renderer knows.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon")
#: Colours the renderer knows, with their base hue in degrees.
COLOUR_HUES: dict[str, float] = {
    "red": 0.0,
    "orange": 28.0,
    "yellow": 55.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 225.0,
    "purple": 280.0,
    "pink": 325.0,
}
COLOURS: tuple[str, ...] = tuple(COLOUR_HUES)
#: Patterns (textures) the renderer knows.
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "rings")
#: Sizes, with the object's circumradius as a fraction of half the image side.
SIZE_RADII: dict[str, float] = {"small": 0.42, "medium": 0.60, "large": 0.80}
SIZES: tuple[str, ...] = tuple(SIZE_RADII)

#: The attribute groups, in the order used for columns and class names' parts.
GROUPS: tuple[str, ...] = ("shape", "colour", "pattern", "size")
_KNOWN: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "pattern": PATTERNS,
    "size": SIZES,
}

#: Adjective of each pattern used in class names and descriptions.
PATTERN_ADJECTIVES: dict[str, str] = {
    "solid": "solid",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checkered",
    "rings": "ringed",
}
#: Noun phrase of each pattern used in descriptions ("with ...").
PATTERN_PHRASES: dict[str, str] = {
    "solid": "a solid fill",
    "stripes": "stripes",
    "dots": "dots",
    "checker": "a checker pattern",
    "rings": "concentric rings",
}
#: Words a description may use for each value (the value itself, or its adjective).
VALUE_WORDS: dict[str, tuple[str, ...]] = {
    **{v: (v,) for v in SHAPES + COLOURS + SIZES},
    **{p: (p, PATTERN_ADJECTIVES[p]) for p in PATTERNS},
}
# "checker" is contained in "checkered" and "checker pattern"; "rings"/"ringed" likewise.

_SEP = "::"


def attribute_name(group: str, value: str) -> str:
    """Return the binary attribute's column name, ``'<group>::<value>'``."""
    return f"{group}{_SEP}{value}"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _config_error(key: str, message: str) -> Exception:
    return fail("WorldConfig", message, key=key)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a generated world; validated on construction.

    Attributes:
        seed: seed of the one random generator behind classes, variation and noise.
        n_classes: number of classes (seen + unseen).
        n_unseen: how many of them are unseen (all their images go to ``test_unseen``).
        images_per_class: images rendered per class.
        image_size: side of the square RGB images, in pixels.
        test_fraction_seen: fraction of each seen class's images that go to ``test_seen``
            (the rest is ``trainval``); at least one image goes to each side.
        rotation_degrees: objects are rotated uniformly within ``+-rotation_degrees``
            (full rotation makes shape unlearnable for a small CNN).
        shapes, colours, patterns, sizes: the values of each attribute group (subsets of
            :data:`SHAPES`, :data:`COLOURS`, :data:`PATTERNS`, :data:`SIZES`).
        prototype_mass: ``(low, high)``: each class puts a mass drawn uniformly from this
            range on its prototype value of each group, the rest on alternatives.
        max_alternatives: each group's remaining mass is split over 1..max_alternatives
            other values (0 disables intra-class attribute variation).
        position_jitter: the object's centre moves up to this fraction of half the image
            side (less where the object would leave the image).
        scale_jitter: relative jitter of the object's radius, ``+-scale_jitter``.
        hue_jitter_degrees: the object's hue moves within ``+-hue_jitter_degrees``.
        brightness_jitter: the object's HSV value and saturation move within this range.
        background_value: ``(low, high)`` HSV value (brightness) range of the background.
        background_saturation: maximum saturation of the background colour.
        noise_std: standard deviation of the Gaussian pixel noise, as a fraction of 255.
        supersample: objects are drawn at ``supersample * image_size`` and box-downsampled.
    """

    seed: int = 0
    n_classes: int = 40
    n_unseen: int = 8
    images_per_class: int = 60
    image_size: int = 64
    test_fraction_seen: float = 0.2
    rotation_degrees: float = 15.0
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
    colours: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
    patterns: tuple[str, ...] = ("solid", "stripes", "dots", "checker")
    sizes: tuple[str, ...] = ("small", "medium", "large")
    prototype_mass: tuple[float, float] = (0.8, 0.95)
    max_alternatives: int = 2
    position_jitter: float = 0.25
    scale_jitter: float = 0.06
    hue_jitter_degrees: float = 8.0
    brightness_jitter: float = 0.12
    background_value: tuple[float, float] = (0.08, 0.45)
    background_saturation: float = 0.2
    noise_std: float = 0.04
    supersample: int = 2

    def __post_init__(self) -> None:
        # Normalise sequences (lists from JSON/YAML) to tuples.
        for name in (
            "shapes",
            "colours",
            "patterns",
            "sizes",
            "prototype_mass",
            "background_value",
        ):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise _config_error(name, f"expected a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._check_ints()
        self._check_floats()
        self._check_groups()
        self._check_capacity()

    # -- validation helpers ------------------------------------------------------------------

    def _check_ints(self) -> None:
        minimum = {
            "n_classes": 2,
            "n_unseen": 1,
            "images_per_class": 2,
            "image_size": 16,
            "max_alternatives": 0,
            "supersample": 1,
        }
        for name in ("seed", *minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise _config_error(name, f"expected an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
            if name in minimum and value < minimum[name]:
                raise _config_error(name, f"must be at least {minimum[name]}, got {value}")
        if self.n_unseen >= self.n_classes:
            raise _config_error(
                "n_unseen",
                f"must be smaller than n_classes ({self.n_classes}) so that some classes are seen, "
                f"got {self.n_unseen}",
            )
        if self.supersample > 8:
            raise _config_error("supersample", f"must be at most 8, got {self.supersample}")

    def _check_floats(self) -> None:
        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise _config_error(name, f"expected a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise _config_error(name, f"must be finite, got {value!r}")
            return float(value)

        ranges = {
            "test_fraction_seen": (0.0, 1.0, False),
            "rotation_degrees": (0.0, 180.0, True),
            "position_jitter": (0.0, 1.0, True),
            "scale_jitter": (0.0, 0.5, True),
            "hue_jitter_degrees": (0.0, 180.0, True),
            "brightness_jitter": (0.0, 0.5, True),
            "background_saturation": (0.0, 1.0, True),
            "noise_std": (0.0, 1.0, True),
        }
        for name, (low, high, closed) in ranges.items():
            value = number(name, getattr(self, name))
            object.__setattr__(self, name, value)
            ok = low <= value <= high if closed else low < value < high
            if not ok:
                interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
                raise _config_error(name, f"must lie in {interval}, got {value}")
        for name, low_bound, high_bound in (
            ("prototype_mass", 0.5, 1.0),
            ("background_value", 0.0, 1.0),
        ):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise _config_error(name, f"expected (low, high), got {pair!r}")
            low, high = (number(name, v) for v in pair)
            object.__setattr__(self, name, (low, high))
            if not (low_bound <= low <= high <= high_bound):
                raise _config_error(
                    name,
                    f"expected {low_bound} <= low <= high <= {high_bound}, got ({low}, {high})",
                )

    def _check_groups(self) -> None:
        for group, name in zip(GROUPS, ("shapes", "colours", "patterns", "sizes"), strict=True):
            values = getattr(self, name)
            if not values:
                raise _config_error(name, "needs at least one value")
            unknown = [v for v in values if v not in _KNOWN[group]]
            if unknown:
                raise _config_error(
                    name, f"unknown value(s) {unknown}; known: {list(_KNOWN[group])}"
                )
            if len(set(values)) != len(values):
                raise _config_error(name, f"duplicate values in {list(values)}")

    def _check_capacity(self) -> None:
        total = math.prod(len(v) for v in self.group_values.values())
        if self.n_classes > total:
            sizes = " x ".join(f"{len(v)} {g}s" for g, v in self.group_values.items())
            raise _config_error(
                "n_classes",
                f"{self.n_classes} classes need distinct value combinations but only {total} exist "
                f"({sizes}); add values or lower n_classes",
            )
        capacity = self._unseen_capacity()
        if self.n_unseen > capacity:
            raise _config_error(
                "n_unseen",
                f"only {capacity} new combinations can be built from the values the "
                f"{self.n_seen} seen classes can cover; lower n_unseen or raise n_classes",
            )

    def _unseen_capacity(self) -> int:
        covered = [min(self.n_seen, len(v)) for v in self.group_values.values()]
        return math.prod(covered) - self.n_seen

    # -- derived values ----------------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        """Number of seen classes."""
        return self.n_classes - self.n_unseen

    @property
    def n_test_seen(self) -> int:
        """Images of each seen class that go to ``test_seen`` (at least 1, at most n-1)."""
        n = self.images_per_class
        return int(min(max(round(self.test_fraction_seen * n), 1), n - 1))

    @property
    def group_values(self) -> dict[str, tuple[str, ...]]:
        """``{group: values}`` in column order."""
        return {
            "shape": self.shapes,
            "colour": self.colours,
            "pattern": self.patterns,
            "size": self.sizes,
        }

    @property
    def attribute_names(self) -> list[str]:
        """The binary attributes, ``group::value``, in column order."""
        return [attribute_name(g, v) for g, values in self.group_values.items() for v in values]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples become lists); :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldConfig:
        """Build a config from a mapping, rejecting unknown keys with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _config_error(unknown[0], f"unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


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
        """Render one image by its relative path."""
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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _regular(n: int, start: float = 0.0, radii: Sequence[float] = (1.0,)) -> np.ndarray:
    """n points on circles of the given (cycled) radii, starting at angle ``start``."""
    t = start + np.arange(n) * 2 * np.pi / n
    r = np.resize(np.asarray(radii, dtype=np.float64), n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(a: float = 0.95, b: float = 0.32) -> np.ndarray:
    """A plus sign with arm half-length ``a`` and half-width ``b``."""
    corner = [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b]]
    corner += [[b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
    return np.array(corner)


def _shape_outline(shape: str) -> np.ndarray:
    """Outline of a shape as (m, 2) points in unit coordinates (circumradius 1, y down)."""
    s = 1.0 / math.sqrt(2.0)
    builders = {
        "circle": lambda: _regular(72),
        "square": lambda: np.array([[-s, -s], [s, -s], [s, s], [-s, s]]),
        # triangle and star are shifted so that their bounding box is centred
        "triangle": lambda: _regular(3, -np.pi / 2) + np.array([0.0, 0.15]),
        "star": lambda: _regular(10, -np.pi / 2, (1.0, 0.42)) + np.array([0.0, 0.08]),
        "cross": _cross,
        "diamond": lambda: np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),
        "hexagon": lambda: _regular(6),
    }
    if shape not in builders:
        raise ValueError(f"unknown shape {shape!r}")
    return builders[shape]()


_OUTLINES: dict[str, np.ndarray] = {s: _shape_outline(s) for s in SHAPES}


def _hsv_to_rgb(h_degrees: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_degrees % 360.0) / 360.0, s, v), dtype=np.float32)


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Boolean mask of the secondary colour in object coordinates (u, v in radii)."""
    if pattern == "solid":
        return np.zeros(u.shape, dtype=bool)
    freq = 2.5  # cells per radius
    if pattern == "stripes":
        return np.floor(u * freq + phase) % 2 == 1
    if pattern == "checker":
        return (np.floor(u * freq + phase) + np.floor(v * freq + phase)) % 2 == 1
    if pattern == "dots":
        fu = (u * freq + phase) % 1.0 - 0.5
        fv = (v * freq + phase) % 1.0 - 0.5
        return fu * fu + fv * fv < 0.33**2
    if pattern == "rings":
        return np.floor(np.sqrt(u * u + v * v) * freq * 1.6) % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def render_image(
    params: Mapping[str, Any],
    image_size: int,
    *,
    supersample: int = 2,
    noise_std: float = 0.04,
) -> Image.Image:
    """Render one object image from its parameters (a row of :attr:`World.image_params`).

    Args:
        params: ``shape``, ``pattern``, ``radius`` (fraction of half the side), ``cx``, ``cy``
            (centre offset, fraction of half the side), ``rotation`` (degrees), ``hue``
            (degrees), ``saturation``, ``value``, ``bg_hue``, ``bg_saturation``, ``bg_value``,
            ``pattern_phase`` and ``noise_seed``.  ``colour`` and ``size`` are already
            folded into ``hue`` and ``radius``.
        image_size: output side in pixels.
        supersample: the object is drawn at ``supersample`` times the size and box-downsampled.
        noise_std: Gaussian pixel noise, fraction of 255.

    Returns:
        An RGB ``PIL.Image`` of ``image_size x image_size`` pixels.
    """
    ss = int(supersample)
    big = image_size * ss
    half = big / 2.0
    centre = np.array([half + float(params["cx"]) * half, half + float(params["cy"]) * half])
    r = float(params["radius"]) * half
    theta = math.radians(float(params["rotation"]))
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    rot = np.array([[cos_t, -sin_t], [sin_t, cos_t]])

    outline = _OUTLINES[str(params["shape"])] @ rot.T * r + centre
    mask_img = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask_img).polygon([tuple(p) for p in outline], fill=255)
    mask = np.asarray(mask_img, dtype=np.float32) / 255.0

    # Object coordinates (in radii, rotated with the object) for the pattern.
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float32)
    dx = (xs + 0.5 - centre[0]) / r
    dy = (ys + 0.5 - centre[1]) / r
    u = cos_t * dx + sin_t * dy
    v = -sin_t * dx + cos_t * dy
    secondary_mask = _pattern_mask(str(params["pattern"]), u, v, float(params["pattern_phase"]))

    primary = _hsv_to_rgb(float(params["hue"]), float(params["saturation"]), float(params["value"]))
    secondary = primary * 0.3 + 0.7  # a light tint of the same hue
    background = _hsv_to_rgb(
        float(params["bg_hue"]), float(params["bg_saturation"]), float(params["bg_value"])
    )

    obj = np.where(secondary_mask[..., None], secondary, primary)
    m = mask[..., None]
    canvas = obj * m + background * (1.0 - m)
    if ss > 1:
        canvas = canvas.reshape(image_size, ss, image_size * ss, 3).mean(axis=1)
        canvas = canvas.reshape(image_size, image_size, ss, 3).mean(axis=2)
    if noise_std > 0:
        noise_rng = np.random.default_rng(int(params["noise_seed"]))
        canvas = canvas + noise_rng.normal(0.0, noise_std, canvas.shape).astype(np.float32)
    pixels = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
