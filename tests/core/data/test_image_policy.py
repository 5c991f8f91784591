"""The one image loading policy: every Pillow mode becomes 8-bit RGB with its value range
kept, the EXIF orientation is applied, and unreadable files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.errors import InputError


def _save(tmp_path, image: Image.Image, name: str, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_16_bit_grayscale_keeps_its_range(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "gray16.png")
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (2, 2, 3)
    assert rgb[..., 0].tolist() == [[0, 100], [255, 200]]


def test_float_images_in_0_1_are_scaled_to_0_255(tmp_path):
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    path = _save(tmp_path, Image.fromarray(values, mode="F"), "float.tiff")
    assert np.asarray(load_rgb(path))[..., 1].tolist() == [[0, 128], [255, 64]]


def test_palette_transparency_la_and_cmyk_become_rgb(tmp_path):
    la = Image.new("LA", (2, 1), (10, 0))  # fully transparent: white
    assert np.asarray(load_rgb(_save(tmp_path, la, "la.png"))).tolist() == [[[255] * 3] * 2]
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # red
    assert np.asarray(load_rgb(_save(tmp_path, cmyk, "c.jpg", quality=100)))[0, 0, 0] > 240
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    assert np.asarray(load_rgb(_save(tmp_path, palette, "p.png")))[0, 0].tolist() == [0, 0, 255]


def test_the_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 8, 8))  # a white corner, top left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(tmp_path, image, "rotated.jpg", exif=exif, quality=100)
    shown = load_rgb(path)
    assert shown.size == (48, 64)  # portrait, as a viewer shows it
    assert np.asarray(shown)[2, -3].mean() > 200  # the corner is now top right


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable image"),
        (b"Bud1\x00\x00\x00\x01 a .DS_Store", "not a readable image"),
        (None, "image file not found"),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=rf"photo\.jpg: {message}"):
        load_rgb(path)


def test_a_truncated_file_is_named(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (64, 64), (1, 2, 3)), "cut.png")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(InputError, match=r"cut\.png: not a readable image"):
        load_rgb(path)


def test_an_image_above_the_pixel_limit_gives_its_size(tmp_path, monkeypatch):
    path = _save(tmp_path, Image.new("RGB", (100, 100)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 10000 > 2 * 2000: an error
    with pytest.raises(InputError, match=r"big\.png: image too large .*10000 pixels"):
        load_rgb(path)


def test_ingestion_names_an_image_above_the_pixel_limit(tmp_path, monkeypatch):
    from niwt_pipeline.core.data.canonical import verify_images

    path = _save(tmp_path, Image.new("RGB", (100, 100)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(InputError, match=r"big\.png: image too large"):
        verify_images([path])
