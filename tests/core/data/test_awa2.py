"""AWA2 reader: rendered tiny JPEGs in the AWA2 layout, missing-value policies, real metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from niwt_pipeline.core.data.awa2 import read_awa2
from niwt_pipeline.core.data.canonical import canonicalise, verify_images
from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.data.xlsa17 import write_att_splits
from niwt_pipeline.core.domain import NativeAttributes
from niwt_pipeline.core.errors import InputError

CLASSES = ["antelope", "grizzly+bear", "killer+whale", "beaver"]
SEEN = ["antelope", "killer+whale", "beaver"]
PREDICATES = ["black", "white", "blue"]
MATRIX = np.array([[-1.0, 10.0, 0.0], [20.0, 30.0, 40.0], [40.0, -1.0, 5.5], [60.0, 70.0, 80.0]])


def make_awa2(tmp_path: Path, with_images: bool = True) -> tuple[Path, Path]:
    """A 4-class AWA2 layout (2 rendered JPEGs a class) and its split file with class lists."""
    base = tmp_path / "AWA2" / "Animals_with_Attributes2"
    base.mkdir(parents=True)
    (base / "classes.txt").write_text(
        "".join(f"{i:6d}\t{c}\n" for i, c in enumerate(CLASSES, start=1))
    )
    (base / "predicates.txt").write_text(
        "".join(f"{i:6d}\t{p}\n" for i, p in enumerate(PREDICATES, start=1))
    )
    np.savetxt(base / "predicate-matrix-continuous.txt", MATRIX, fmt="%7.2f")
    relpaths = sorted(f"{c}/{c}_{10001 + k}.jpg" for i, c in enumerate(CLASSES) for k in range(2))
    if with_images:
        for n, relpath in enumerate(relpaths):
            (base / "JPEGImages" / relpath).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 6), (n * 20, 40, 90)).save(base / "JPEGImages" / relpath)
    split_dir = tmp_path / "xlsa17" / "AWA2"
    split_dir.mkdir(parents=True)
    classes_of = [p.split("/")[0] for p in relpaths]
    seen_pos = [i for i, c in enumerate(classes_of) if c in SEEN]
    splits = write_att_splits(
        split_dir / "att_splits.mat",
        att=MATRIX.T,
        allclasses_names=CLASSES,
        trainval_loc=seen_pos[::2],
        test_seen_loc=seen_pos[1::2],
        test_unseen_loc=[i for i, c in enumerate(classes_of) if c not in SEEN],
    )
    (split_dir / "trainvalclasses.txt").write_text("\n".join(SEEN) + "\n")
    (split_dir / "testclasses.txt").write_text("grizzly+bear\n")
    return base.parent, splits


def test_rendered_layout(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    raw = read_awa2(root, splits_file=splits)
    assert raw.classes["class_name"].tolist() == CLASSES
    assert raw.classes["seen"].tolist() == [True, False, True, True]
    assert raw.images["relpath"].iloc[0] == "antelope/antelope_10001.jpg"
    assert set(raw.images["split"][raw.images["class_name"] == "grizzly+bear"]) == {"test_unseen"}
    assert raw.attributes.columns.tolist() == PREDICATES
    assert raw.attributes.loc["antelope", "black"] == 0.0  # missing -> 0 by default
    assert any("2 missing values" in note and "'zero'" in note for note in raw.notes)

    images, classes, _ = canonicalise(raw, NativeAttributes().build(raw))
    assert len(images) == 8 and classes["seen"].sum() == 3
    verify_images(images["path"])
    assert load_rgb(images["path"].iloc[0]).size == (10, 6)


def test_root_may_be_the_awa2_folder(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    assert len(read_awa2(root / "Animals_with_Attributes2", splits_file=splits).images) == 8


def test_missing_policy_class_mean(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    raw = read_awa2(root, splits_file=splits, missing="class_mean")
    assert raw.attributes.loc["antelope", "black"] == pytest.approx((20 + 40 + 60) / 3)
    assert raw.attributes.loc["killer+whale", "white"] == pytest.approx((10 + 30 + 70) / 3)


def test_missing_policy_error_names_line_and_predicate(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    with pytest.raises(
        InputError,
        match=r"predicate-matrix-continuous\.txt line 1: column 1 \(black\): missing value",
    ):
        read_awa2(root, splits_file=splits, missing="error")


def test_metadata_only_without_images(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path, with_images=False)
    with pytest.raises(
        InputError, match=r"JPEGImages: image folder not found; pass require_images=False"
    ):
        read_awa2(root, splits_file=splits)
    raw = read_awa2(root, splits_file=splits, require_images=False)
    assert raw.images.empty and list(raw.images.columns) == ["relpath", "class_name", "split"]
    assert raw.classes["seen"].tolist() == [True, False, True, True]


def test_partial_image_set_is_an_error(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    (root / "Animals_with_Attributes2" / "JPEGImages" / "beaver" / "beaver_10002.jpg").unlink()
    with pytest.raises(
        InputError,
        match=r"att_splits\.mat \[.*_loc\]: position 8 .*out of range: the dataset has 7 images",
    ):
        read_awa2(root, splits_file=splits)


def test_unknown_image_folder(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    (root / "Animals_with_Attributes2" / "JPEGImages" / "unicorn").mkdir()
    with pytest.raises(
        InputError, match=r"JPEGImages/unicorn: folder is not a class of classes\.txt"
    ):
        read_awa2(root, splits_file=splits)


def test_malformed_classes_line(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    (root / "Animals_with_Attributes2" / "classes.txt").write_text(
        "1\tantelope\n2\n3\tkiller+whale\n4\tbeaver\n"
    )
    with pytest.raises(
        InputError, match=r"classes\.txt line 2: expected '<class_id> <class name>', got '2'"
    ):
        read_awa2(root, splits_file=splits)


def test_corrupt_image(tmp_path: Path) -> None:
    root, splits = make_awa2(tmp_path)
    bad = root / "Animals_with_Attributes2" / "JPEGImages" / "beaver" / "beaver_10001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    raw = read_awa2(root, splits_file=splits)
    images, _, _ = canonicalise(raw, NativeAttributes().build(raw))
    with pytest.raises(InputError, match=r"beaver_10001\.jpg: not a readable image"):
        verify_images(images["path"])
    with pytest.raises(InputError, match=r"beaver_10001\.jpg: not a readable image"):
        load_rgb(bad)


def test_real_awa2_metadata(awa2_root: Path, xlsa17_root: Path) -> None:
    raw = read_awa2(
        awa2_root, splits_file=xlsa17_root / "AWA2" / "att_splits.mat", require_images=False
    )
    assert raw.attributes.shape == (50, 85)
    original = np.loadtxt(
        awa2_root / "Animals_with_Attributes2" / "predicate-matrix-continuous.txt"
    )
    missing = original == -1
    assert missing.sum() > 0
    values = raw.attributes.to_numpy()
    assert (values >= 0).all() and (values[missing] == 0).all()
    assert np.array_equal(values[~missing], original[~missing])

    split_dir = xlsa17_root / "AWA2"
    trainval = set((split_dir / "trainvalclasses.txt").read_text().split())
    test = set((split_dir / "testclasses.txt").read_text().split())
    seen = raw.classes.set_index("class_name")["seen"]
    assert (len(trainval), len(test)) == (40, 10)
    assert set(seen.index[seen]) == trainval and set(seen.index[~seen]) == test
    assert raw.classes["class_name"].iloc[1] == "grizzly+bear"
