"""CUB-200-2011 reader: a synthetic layout for every bad-input case, and the real metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from niwt_pipeline.core.data.canonical import canonicalise, subset_summary
from niwt_pipeline.core.data.cub import read_cub
from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.data.xlsa17 import write_att_splits
from niwt_pipeline.core.domain import NativeAttributes
from niwt_pipeline.core.errors import InputError

CLASSES = ["001.Aa", "002.Bb", "003.Cc", "004.Dd"]
SEEN = {"001.Aa", "003.Cc"}
ATTRIBUTES = ["has_x::a", "has_x::b", "has_y::c", "has_y::d", "size::big"]


def make_cub(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-class, 12-image CUB layout (images.txt unsorted) and its split file.

    Returns (root holding CUB_200_2011/ and attributes.txt, att_splits.mat).
    """
    base = tmp_path / "CUB" / "CUB_200_2011"
    (base / "attributes").mkdir(parents=True)
    relpaths = [f"{c}/{c[4:]}_{n:04d}_{7 - n}.jpg" for c in CLASSES for n in (3, 1, 2)]
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(relpaths, start=1)))
    labels = "".join(
        f"{i} {CLASSES.index(p.split('/')[0]) + 1}\n" for i, p in enumerate(relpaths, start=1)
    )
    (base / "image_class_labels.txt").write_text(labels)
    (base / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, start=1)))
    (base.parent / "attributes.txt").write_text(
        "".join(f"{i} {a}\n" for i, a in enumerate(ATTRIBUTES, start=1))
    )
    matrix = np.arange(20, dtype=float).reshape(4, 5) * 5
    np.savetxt(base / "attributes" / "class_attribute_labels_continuous.txt", matrix, fmt="%.4f")
    for p in relpaths:
        (base / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(base / "images" / p)

    ordered = sorted(relpaths)
    seen_pos = [i for i, p in enumerate(ordered) if p.split("/")[0] in SEEN]
    names = sorted(SEEN) + sorted(set(CLASSES) - SEEN)  # seen block then unseen block, like xlsa17
    splits = write_att_splits(
        tmp_path / "att_splits.mat",
        att=matrix[[CLASSES.index(n) for n in names]].T,
        allclasses_names=names,
        trainval_loc=seen_pos[::2],
        test_seen_loc=seen_pos[1::2],
        test_unseen_loc=[i for i, p in enumerate(ordered) if p.split("/")[0] not in SEEN],
    )
    return base.parent, splits


def test_synthetic_layout(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    raw = read_cub(root, splits_file=splits)
    assert raw.classes["class_name"].tolist() == CLASSES
    assert raw.classes["seen"].tolist() == [True, False, True, False]
    assert raw.images["relpath"].tolist() == sorted(raw.images["relpath"])
    assert raw.images.groupby("class_name")["split"].agg(set).to_dict() == {
        "001.Aa": {"trainval", "test_seen"},
        "002.Bb": {"test_unseen"},
        "003.Cc": {"trainval", "test_seen"},
        "004.Dd": {"test_unseen"},
    }
    assert raw.attributes.shape == (4, 5)
    assert raw.attributes.columns.tolist() == ATTRIBUTES
    assert raw.attributes.loc["002.Bb", "has_x::a"] == 25.0  # row 2 of the matrix, unscaled
    assert raw.image_root == root / "CUB_200_2011" / "images"


def test_root_may_be_the_cub_folder(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    raw = read_cub(root / "CUB_200_2011", splits_file=splits)
    assert len(raw.images) == 12


def test_split_file_is_required(tmp_path: Path) -> None:
    root, _ = make_cub(tmp_path)
    with pytest.raises(
        InputError, match=r"CUB_200_2011: read_cub needs the proposed split file.*att_splits\.mat"
    ):
        read_cub(root)


def test_missing_file(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    (root / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(InputError, match=r"CUB_200_2011/classes\.txt: file not found"):
        read_cub(root, splits_file=splits)


def _edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_malformed_line(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    _edit_line(root / "CUB_200_2011" / "images.txt", 3, "three 001.Aa/x.jpg")
    with pytest.raises(
        InputError, match=r"images\.txt line 3: expected '<image_id> <relative path>', got 'three"
    ):
        read_cub(root, splits_file=splits)


def test_duplicate_ids(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    _edit_line(root / "CUB_200_2011" / "images.txt", 5, "2 002.Bb/Bb_0009_9.jpg")
    with pytest.raises(InputError, match=r"images\.txt line 5: id 2 already used on line 2"):
        read_cub(root, splits_file=splits)


def test_label_of_unknown_class(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    _edit_line(root / "CUB_200_2011" / "image_class_labels.txt", 4, "4 9")
    with pytest.raises(
        InputError, match=r"image_class_labels\.txt line 4: class id '9' is not in classes\.txt"
    ):
        read_cub(root, splits_file=splits)


def test_attribute_matrix_shape_mismatch(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    path = root / "CUB_200_2011" / "attributes" / "class_attribute_labels_continuous.txt"
    np.savetxt(path, np.ones((4, 4)))
    with pytest.raises(
        InputError, match=r"class_attribute_labels_continuous\.txt: matrix is 4 x 4, expected 4 x 5"
    ):
        read_cub(root, splits_file=splits)


def test_nan_in_attribute_matrix(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    path = root / "CUB_200_2011" / "attributes" / "class_attribute_labels_continuous.txt"
    _edit_line(path, 3, "1 2 nan 4 5")
    with pytest.raises(
        InputError, match=r"continuous\.txt line 3: column 3: 'nan' is not a finite number"
    ):
        read_cub(root, splits_file=splits)


def test_split_index_out_of_range(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    content = scipy.io.loadmat(splits)
    content["test_unseen_loc"][-1, 0] = 13
    scipy.io.savemat(splits, {k: v for k, v in content.items() if not k.startswith("__")})
    with pytest.raises(InputError, match=r"att_splits\.mat \[test_unseen_loc\]: position 13"):
        read_cub(root, splits_file=splits)


def test_label_must_match_folder(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    _edit_line(root / "CUB_200_2011" / "classes.txt", 4, "4 004.Dx")
    with pytest.raises(InputError, match=r"image_class_labels\.txt line 10: .*labelled '004\.Dx'"):
        read_cub(root, splits_file=splits)


def test_split_class_names_must_match_classes(tmp_path: Path) -> None:
    root, splits = make_cub(tmp_path)
    content = {k: v for k, v in scipy.io.loadmat(splits).items() if not k.startswith("__")}
    content["allclasses_names"][3, 0] = np.array(["004.Dx"])
    scipy.io.savemat(splits, content)
    with pytest.raises(
        InputError,
        match=r"att_splits\.mat \[allclasses_names\]: .*missing \['004\.Dd'\], unknown \['004\.Dx",
    ):
        read_cub(root, splits_file=splits)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------

EVEN_CLASSES = [f"{n:03d}" for n in range(2, 51, 2)]


def test_real_cub_present_subset(cub_root: Path, xlsa17_root: Path) -> None:
    splits_file = xlsa17_root / "CUB" / "att_splits.mat"
    raw = read_cub(cub_root, splits_file=splits_file)
    assert raw.attributes.shape == (200, 312)
    assert len(raw.images) == 11788
    images, classes, dk = canonicalise(raw, NativeAttributes().build(raw), classes="present")

    assert [n[:3] for n in classes["name"]] == EVEN_CLASSES
    assert sorted(n[:3] for n in classes["name"][~classes["seen"]]) == ["004", "012", "026", "028"]
    summary = subset_summary(images, classes)
    assert (summary["n_seen"], summary["n_unseen"]) == (21, 4)

    # Independent expectation: positions index the sorted images.txt paths.
    content = scipy.io.loadmat(splits_file)
    lines = (cub_root / "CUB_200_2011" / "images.txt").read_text().split("\n")
    ordered = sorted(line.split()[1] for line in lines if line.strip())
    expected = {}
    for key, split in (
        ("trainval_loc", "trainval"),
        ("test_seen_loc", "test_seen"),
        ("test_unseen_loc", "test_unseen"),
    ):
        located = [ordered[i - 1] for i in content[key].ravel()]
        expected[split] = sum(p[:3] in EVEN_CLASSES for p in located)
    assert summary["images_per_split"] == expected
    assert summary["n_images"] == 1426
    assert dk.shape == (25, 2 + 312)
    assert images["image_id"].max() < 11788


def test_real_cub_attributes_follow_names_not_order(cub_root: Path, xlsa17_root: Path) -> None:
    splits_file = xlsa17_root / "CUB" / "att_splits.mat"
    raw = read_cub(cub_root, splits_file=splits_file)
    content = scipy.io.loadmat(splits_file)
    names = [str(n[0][0]) for n in content["allclasses_names"]]
    for name in ("001.Black_footed_Albatross", "200.Common_Yellowthroat"):
        column = content["original_att"][:, names.index(name)]
        assert np.allclose(raw.attributes.loc[name].to_numpy(), column)


def test_real_cub_images_load_as_rgb(cub_root: Path, xlsa17_root: Path, tmp_path: Path) -> None:
    """The 1,426 images shipped here are all stored as RGB (no grayscale original among the
    even classes 002..050), so a grayscale copy of a real image stands in for one."""
    raw = read_cub(cub_root, splits_file=xlsa17_root / "CUB" / "att_splits.mat")
    images, _, _ = canonicalise(raw, NativeAttributes().build(raw), classes="present")
    for path in images["path"].iloc[::100]:
        assert load_rgb(path).mode == "RGB"
    gray_path = tmp_path / "gray.jpg"
    with Image.open(images["path"].iloc[0]) as image:
        image.convert("L").save(gray_path)
    with Image.open(gray_path) as image:
        assert image.mode == "L"
    rgb = np.asarray(load_rgb(gray_path))
    assert rgb.shape[2] == 3 and (rgb[..., 0] == rgb[..., 2]).all()


def test_real_cub_all_classes_need_all_files(cub_root: Path, xlsa17_root: Path) -> None:
    raw = read_cub(cub_root, splits_file=xlsa17_root / "CUB" / "att_splits.mat")
    with pytest.raises(
        InputError, match=r"images/001\.Black_footed_Albatross/.*\.jpg: image file not found"
    ):
        canonicalise(raw, NativeAttributes().build(raw), classes="all")
