"""The attribute world's vocabulary and generator configuration.

Holds the value vocabularies the renderer knows (:data:`SHAPES`, :data:`COLOURS` with their
hues, :data:`PATTERNS`, :data:`SIZES` with their radii), the attribute groups and the words
class names and descriptions use for each value, :func:`attribute_name` (``group::value``),
and :class:`WorldConfig`, the validated configuration that decides a generated world.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from niwt_pipeline.core.errors import fail

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
        """Build a config from a mapping, rejecting unknown keys with a clear message.

        Raises:
            InputError: keyed by the offending field, if ``data`` has an unknown key or a
                value fails the validation done on construction.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _config_error(unknown[0], f"unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
