"""The project's own layout: atomic writer, validating reader, one test per rule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from niwt_pipeline.core.data.canonical import canonicalise
from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.data.own import read_own_layout, write_own_layout
from niwt_pipeline.core.domain import NativeAttributes
from niwt_pipeline.core.errors import InputError

# Image modes the reader must hand back as RGB; CMYK has to be a JPEG.
MODES = {
    "red_circle/0000.png": "L",
    "red_circle/0001.png": "P",
    "red_circle/0002.png": "RGBA",
    "red_circle/0003.jpg": "CMYK",
}


def _tables() -> dict[str, pd.DataFrame]:
    """Three classes: red_circle and blue_square seen, green_star unseen."""
    classes = pd.DataFrame(
        {"class_name": ["red_circle", "blue_square", "green_star"], "seen": [True, True, False]}
    )
    relpaths = [*MODES, "blue_square/0000.png", "blue_square/0001.png", "green_star/0000.png"]
    split = [
        "trainval",
        "trainval",
        "trainval",
        "test_seen",
        "trainval",
        "test_seen",
        "test_unseen",
    ]
    attributes = pd.DataFrame(
        [[1.0, 0.0, 0.25], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0]],
        index=pd.Index(classes["class_name"], name="class_name"),
        columns=["colour::red", "shape::square", "size::large"],
    )
    descriptions = pd.DataFrame(
        {
            "class_name": ["red_circle", "red_circle", "green_star"],
            "text": ["A red circle.", "Round, red", "A green star."],
        }
    )
    image_attributes = pd.DataFrame({"relpath": relpaths, "colour::red": [1, 1, 1, 1, 0, 0, 0]})
    return {
        "classes": classes,
        "splits": pd.DataFrame({"relpath": relpaths, "split": split}),
        "attributes": attributes,
        "descriptions": descriptions,
        "image_attributes": image_attributes,
    }


def _images(relpaths: list[str]) -> list[tuple[str, Image.Image]]:
    out = []
    for relpath in relpaths:
        mode = MODES.get(relpath, "RGB")
        image = Image.new("RGB", (12, 9), (200, 30, 30)).convert(mode)
        if mode == "RGBA":
            image.putalpha(128)
        out.append((relpath, image))
    return out


def write_example(root: Path, **changes) -> Path:
    tables = {**_tables(), **changes}
    write_own_layout(root, images=_images(list(tables["splits"]["relpath"])), name="toy", **tables)
    return root


def test_round_trip(tmp_path: Path) -> None:
    written = write_own_layout(
        tmp_path / "toy",
        images=_images(list(_tables()["splits"]["relpath"])),
        name="toy",
        **_tables(),
    )
    raw = read_own_layout(tmp_path / "toy")
    assert written.root == raw.root == tmp_path / "toy"
    assert raw.name == "toy"
    assert raw.classes["class_name"].tolist() == ["red_circle", "blue_square", "green_star"]
    assert raw.classes["seen"].tolist() == [True, True, False]
    assert raw.images["relpath"].tolist() == sorted(_tables()["splits"]["relpath"])
    assert raw.images["class_name"].dtype == "str"
    pd.testing.assert_frame_equal(
        raw.attributes, _tables()["attributes"], check_index_type=False, check_column_type=False
    )
    assert raw.descriptions["text"].tolist() == ["A red circle.", "Round, red", "A green star."]
    assert raw.image_attributes.columns.tolist() == ["relpath", "colour::red"]
    assert (tmp_path / "toy" / "classes.csv").read_text().splitlines()[1] == "red_circle,true"
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folder left


def test_image_modes_come_back_rgb(tmp_path: Path) -> None:
    raw = read_own_layout(write_example(tmp_path / "toy"))
    images, _, _ = canonicalise(raw, NativeAttributes().build(raw))
    for relpath, mode in MODES.items():
        path = raw.image_root / relpath
        with Image.open(path) as image:
            assert image.mode == mode
        assert load_rgb(path).mode == "RGB"
    assert all(load_rgb(p).mode == "RGB" for p in images["path"])


def test_writer_replaces_only_when_complete(tmp_path: Path) -> None:
    root = write_example(tmp_path / "toy")
    tables = _tables()

    def failing_images():
        yield from _images(list(tables["splits"]["relpath"]))[:2]
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_own_layout(root, images=failing_images(), name="other", **tables)
    assert read_own_layout(root).name == "toy"
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]

    write_own_layout(
        root, images=_images(list(tables["splits"]["relpath"])), name="second", **tables
    )
    assert read_own_layout(root).name == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]


def test_writer_refuses_other_folders(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(InputError, match=r"mine: exists and is not a niwt-own-layout folder"):
        write_example(tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_writer_checks_images_against_splits(tmp_path: Path) -> None:
    tables = _tables()
    with pytest.raises(
        ValueError, match=r"1 image\(s\) of splits were not given \(first: green_star/0000\.png\)"
    ):
        write_own_layout(
            tmp_path / "toy",
            images=_images(list(tables["splits"]["relpath"]))[:-1],
            name="t",
            **tables,
        )
    assert list(tmp_path.iterdir()) == []


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "splits.csv",
            "green_star/0000.png,test_unseen",
            "green_stars/0000.png,test_unseen",
            r"splits\.csv line 8: path 'green_stars/0000\.png': unknown class 'green_stars'",
        ),
        (
            "splits.csv",
            "blue_square/0001.png,test_seen",
            "blue_square/0009.png,test_seen",
            r"splits\.csv line 7: image file images/blue_square/0009\.png not found",
        ),
        (
            "splits.csv",
            "blue_square/0001.png,test_seen",
            "blue_square/0001.png,testing",
            r"splits\.csv line 7: .*split 'testing' is not one of",
        ),
        (
            "splits.csv",
            "blue_square/0001.png,test_seen",
            "blue_square/0000.png,test_seen",
            r"splits\.csv line 7: path 'blue_square/0000\.png' already listed on line 6",
        ),
        (
            "splits.csv",
            "green_star/0000.png,test_unseen",
            "green_star/0000.png,trainval",
            r"splits\.csv line 8: .*an unseen class cannot have trainval images",
        ),
        (
            "splits.csv",
            "blue_square/0000.png,trainval",
            "blue_square/0000.png,test_seen",
            r"classes\.csv line 3: seen class 'blue_square' has no trainval images",
        ),
        (
            "classes.csv",
            "green_star,false",
            "green_star,maybe",
            r"classes\.csv line 4: class 'green_star': seen must be true or false",
        ),
        (
            "attributes.csv",
            "green_star,0.5",
            "green_star,high",
            r"attributes\.csv line 4: column 'colour::red': 'high' is not a number",
        ),
        (
            "attributes.csv",
            "green_star,0.5",
            "green_star,",
            r"attributes\.csv line 4: column 'colour::red': empty cell",
        ),
        (
            "attributes.csv",
            "green_star,0.5",
            "green_star,nan",
            r"attributes\.csv line 4: column 'colour::red': 'nan' is not a finite number",
        ),
        (
            "attributes.csv",
            "green_star,",
            "purple_star,",
            r"attributes\.csv line 4: unknown class 'purple_star'",
        ),
        (
            "descriptions.csv",
            "green_star,A green star.",
            "green_star,",
            r"descriptions\.csv line 4: class 'green_star': empty text",
        ),
        (
            "image_attributes.csv",
            "green_star/0000.png,0",
            "green_star/0000.png,2",
            r"image_attributes\.csv line 8: column 'colour::red': '2' is not 0 or 1",
        ),
        (
            "dataset.json",
            "niwt-own-layout",
            "something-else",
            r"dataset\.json: expected \{\"name\"",
        ),
    ],
    ids=[
        "unknown-class",
        "file-missing",
        "bad-split",
        "duplicate-path",
        "unseen-in-trainval",
        "seen-without-trainval",
        "bad-seen",
        "non-numeric",
        "empty-cell",
        "nan",
        "attribute-unknown-class",
        "empty-text",
        "not-binary",
        "format",
    ],
)
def test_reader_rules(tmp_path: Path, file: str, old: str, new: str, message: str) -> None:
    root = write_example(tmp_path / "toy")
    _rewrite(root / file, old, new)
    with pytest.raises(InputError, match=message):
        read_own_layout(root)


def test_attributes_missing_a_class(tmp_path: Path) -> None:
    root = write_example(tmp_path / "toy")
    lines = (root / "attributes.csv").read_text().splitlines()
    (root / "attributes.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(
        InputError, match=r"attributes\.csv: no row for class\(es\) \['green_star'\]"
    ):
        read_own_layout(root)


def test_missing_file(tmp_path: Path) -> None:
    root = write_example(tmp_path / "toy")
    (root / "classes.csv").unlink()
    with pytest.raises(InputError, match=r"toy/classes\.csv: file not found"):
        read_own_layout(root)


def test_class_folder_not_in_classes(tmp_path: Path) -> None:
    root = write_example(tmp_path / "toy")
    (root / "images" / "yellow_moon").mkdir()
    with pytest.raises(InputError, match=r"images/yellow_moon: not a class folder"):
        read_own_layout(root)


def test_unlisted_images_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_example(tmp_path / "toy")
    Image.new("RGB", (4, 4)).save(root / "images" / "green_star" / "extra.png")
    with caplog.at_level(logging.WARNING):
        raw = read_own_layout(root)
    assert len(raw.images) == 7
    assert (
        "1 file(s) under images/ not listed in splits.csv "
        "were ignored (first: green_star/extra.png)" in raw.notes[0]
    )
    assert "green_star/extra.png" in caplog.text


def test_optional_files_may_be_absent(tmp_path: Path) -> None:
    root = write_example(
        tmp_path / "toy", attributes=None, descriptions=None, image_attributes=None
    )
    raw = read_own_layout(root)
    assert raw.attributes is None and raw.descriptions is None and raw.image_attributes is None
    assert np.array_equal(raw.classes["seen"].to_numpy(), [True, True, False])


def test_names_match_after_unicode_normalisation_and_trimming(tmp_path):
    """classes.csv typed in NFC with stray spaces, folders and files created in NFD (as
    macOS writes them): the names match, and the images open under their names on disk."""
    import unicodedata

    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    root = tmp_path / "layout"
    (root / "images" / nfd).mkdir(parents=True)
    (root / "images" / "tea").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / nfd / f"{nfd}1.png")
    Image.new("RGB", (4, 4)).save(root / "images" / "tea" / "t.png")
    (root / "dataset.json").write_text(
        '{"name": "n", "format": "niwt-own-layout", "version": 1}', encoding="utf-8"
    )
    (root / "classes.csv").write_text(f"class_name,seen\n {nfc} ,true\ntea,false\n", "utf-8")
    (root / "splits.csv").write_text(
        f"path,split\n{nfc}/{nfc}1.png ,trainval\ntea/t.png,test_unseen\n", encoding="utf-8"
    )
    (root / "attributes.csv").write_text(f"class_name,a\n{nfd},1\ntea,2\n", encoding="utf-8")
    raw = read_own_layout(root)
    assert raw.classes["class_name"].tolist() == [nfc, "tea"]
    assert raw.images["class_name"].tolist() == [nfc, "tea"]
    images, classes, _ = canonicalise(raw, raw.attributes)
    assert Path(images["path"].iloc[0]).is_file()  # the name on disk (NFD)
    assert classes["name"].tolist() == [nfc, "tea"]
