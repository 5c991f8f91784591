"""Reading images as RGB, whatever their mode."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from niwt_pipeline.core.errors import fail


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file and return it as an RGB ``PIL.Image``.

    Grayscale (``L``, ``I``, ``I;16``), palette (``P``), CMYK and RGBA/LA images are converted;
    transparent pixels are composited on white.

    Raises:
        InputError: naming the file when it is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "image file not found")
    try:
        with Image.open(path) as opened:
            opened.load()
            img, mode = opened, opened.mode
            if mode == "P" and "transparency" in img.info:
                img, mode = img.convert("RGBA"), "RGBA"
            if mode in ("RGBA", "LA", "PA"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                return img.point(lambda v: v / 256 if v > 255 else v).convert("L").convert("RGB")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise fail(path, f"not a readable image ({exc.__class__.__name__}: {exc})") from exc
