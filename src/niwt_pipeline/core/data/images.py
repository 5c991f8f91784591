"""Reading images as 8-bit RGB, whatever their mode: the one loading policy of every stage
that opens an image (ingestion checks, training, extraction, Grad-CAM, predict).

* the EXIF orientation is applied, so the network sees what an image viewer shows;
* 16-bit and 32-bit grayscale keep their value range: ``I;16*`` (0..65535) is divided by
  257; ``I`` (32-bit integers) is kept when its values fit in 8 bits, divided by 257 when
  they fit in 16 bits, else scaled by its maximum; ``F`` (floats) is read as 0..1 when its
  maximum is at most 1, else as 0..255;
* transparent pixels (``RGBA``, ``LA``, ``PA``, palettes with transparency) are composited
  on white; ``CMYK``, ``P``, ``L``, ``1``, ``YCbCr`` ... are converted to RGB;
* an image above Pillow's pixel limit (a decompression-bomb guard) is refused with its size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from niwt_pipeline.core.errors import InputError, fail

_WIDE_GRAY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an 8-bit RGB ``PIL.Image`` (see the module's policy).

    Raises:
        InputError: naming the file when it is missing, not a readable image (not an image,
            corrupt or truncated), or larger than Pillow's pixel limit (giving its size).
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "image file not found")
    try:
        with Image.open(path) as opened:
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, *UNREADABLE) as exc:
        raise unreadable_image(path, exc) from exc


#: What Pillow raises for a file that is not a readable image.
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def unreadable_image(path: str | Path, exc: BaseException) -> InputError:
    """The message for an image file Pillow could not open (too large or not readable)."""
    if isinstance(exc, Image.DecompressionBombError):
        return fail(
            path,
            f"image too large for Pillow's pixel limit ({exc}); downscale it "
            "(e.g. to at most 4000 px on the longer side)",
        )
    return fail(path, f"not a readable image ({exc.__class__.__name__}: {exc})")


def to_rgb(img: Image.Image) -> Image.Image:
    """An image of any mode as 8-bit RGB, value ranges kept (see the module's policy)."""
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _WIDE_GRAY:
        values = np.asarray(img, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if mode == "F":
            scale = 255.0 if top <= 1.0 else 1.0
        elif mode == "I" and top <= 255:
            scale = 1.0
        elif mode == "I" and top > 65535:
            scale = 255.0 / top
        else:  # 16-bit data, in an I;16* or an I image
            scale = 1.0 / 257.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return img.convert("RGB")
