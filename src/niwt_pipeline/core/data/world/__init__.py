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
:func:`render_image`, :func:`write_world`, :func:`attribute_name`, and the value
vocabularies :data:`SHAPES`, :data:`COLOURS`, :data:`PATTERNS`, :data:`SIZES` (with
:data:`COLOUR_HUES`, :data:`SIZE_RADII`, :data:`GROUPS`, :data:`PATTERN_ADJECTIVES`,
:data:`PATTERN_PHRASES` and :data:`VALUE_WORDS`), all re-exported here from:

* :mod:`~niwt_pipeline.core.data.world.config`: the vocabularies and :class:`WorldConfig`;
* :mod:`~niwt_pipeline.core.data.world.design`: :class:`World` and :func:`generate_world`
  (prototypes, attribute distributions, splits, descriptions, nuisance parameters);
* :mod:`~niwt_pipeline.core.data.world.render`: :func:`render_image`;
* :mod:`~niwt_pipeline.core.data.world.write`: :func:`write_world` (own layout + ``world.json``).
"""

from __future__ import annotations

from niwt_pipeline.core.data.world.config import (
    COLOUR_HUES,
    COLOURS,
    GROUPS,
    PATTERN_ADJECTIVES,
    PATTERN_PHRASES,
    PATTERNS,
    SHAPES,
    SIZE_RADII,
    SIZES,
    VALUE_WORDS,
    WorldConfig,
    attribute_name,
)
from niwt_pipeline.core.data.world.design import World, generate_world
from niwt_pipeline.core.data.world.render import render_image
from niwt_pipeline.core.data.world.write import write_world

__all__ = [
    "COLOURS",
    "COLOUR_HUES",
    "GROUPS",
    "PATTERNS",
    "PATTERN_ADJECTIVES",
    "PATTERN_PHRASES",
    "SHAPES",
    "SIZES",
    "SIZE_RADII",
    "VALUE_WORDS",
    "World",
    "WorldConfig",
    "attribute_name",
    "generate_world",
    "render_image",
    "write_world",
]
