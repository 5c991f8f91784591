"""Rendering of one attribute-world image from its per-image parameters.

Holds the shape outlines, the pattern (texture) masks and :func:`render_image`, which draws
an object on a plain background, box-downsamples it and adds seeded Gaussian pixel noise.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from niwt_pipeline.core.data.world.config import SHAPES

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
