"""canonicalise: class selection, id assignment, schema and every validation it owns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from niwt_pipeline.core.data.canonical import canonicalise, subset_summary, verify_images
from niwt_pipeline.core.data.own import write_own_layout
from niwt_pipeline.core.data.summary import summarise
from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.core.errors import InputError

CLASSES = {"ant": True, "bee": True, "cat": False, "dog": False}


def make_raw(tmp_path: Path) -> RawDataset:
    """Four classes, three images each: seen ant/bee (2 trainval + 1 test_seen), unseen cat/dog."""
    relpaths, splits = [], []
    for name, seen in CLASSES.items():
        for k in range(3):
            relpaths.append(f"{name}/{k}.png")
            splits.append(("trainval" if k < 2 else "test_seen") if seen else "test_unseen")
    return write_own_layout(
        tmp_path / "toy",
        classes=pd.DataFrame({"class_name": list(CLASSES), "seen": list(CLASSES.values())}),
        splits=pd.DataFrame({"relpath": relpaths, "split": splits}),
        images=[(p, Image.new("RGB", (4, 4), (i * 9, 0, 0))) for i, p in enumerate(relpaths)],
        name="toy",
    )


def domain(names=tuple(CLASSES), dims: int = 3) -> pd.DataFrame:
    values = np.arange(len(names) * dims, dtype=float).reshape(len(names), dims)
    return pd.DataFrame(
        values,
        index=pd.Index(list(names), name="class_name"),
        columns=[f"a{i}" for i in range(dims)],
    )


def test_schema_and_ids(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    images, classes, dk = canonicalise(raw, domain())
    assert images.dtypes.astype(str).to_dict() == {
        "image_id": "int64",
        "path": "str",
        "class_id": "int64",
        "split": "str",
    }
    assert classes.dtypes.astype(str).to_dict() == {
        "class_id": "int64",
        "name": "str",
        "seen": "bool",
    }
    assert dk.columns.tolist() == ["class_id", "name", "a0", "a1", "a2"]
    assert dk[["a0", "a1", "a2"]].dtypes.eq(np.float64).all()
    assert images["image_id"].tolist() == list(range(12))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in images["path"])
    assert classes["name"].tolist() == list(CLASSES)
    assert classes["seen"].tolist() == [True, True, False, False]


def test_explicit_list_keeps_dataset_order_and_global_ids(tmp_path: Path) -> None:
    images, classes, dk = canonicalise(make_raw(tmp_path), domain(), classes=["dog", "bee"])
    assert classes["name"].tolist() == ["bee", "dog"]
    assert images["image_id"].tolist() == [3, 4, 5, 9, 10, 11]  # positions in the whole dataset
    assert images["class_id"].tolist() == [0, 0, 0, 1, 1, 1]
    assert dk["name"].tolist() == ["bee", "dog"] and dk["a0"].tolist() == [3.0, 9.0]


def test_unknown_class_lists_close_matches(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"toy \[classes\]: ingestion.classes names 'bees', .*did you mean \['bee'\]",
    ):
        canonicalise(make_raw(tmp_path), domain(), classes=["bees"])


def test_present_skips_classes_without_files(tmp_path: Path, caplog) -> None:
    raw = make_raw(tmp_path)
    for k in range(3):
        (raw.image_root / f"cat/{k}.png").unlink()
    shuffled = dataclasses.replace(
        raw, images=raw.images.iloc[[5, 0, 11, 7, 2, 9, 1, 3, 4, 6, 8, 10]]
    )
    images, classes, dk = canonicalise(shuffled, domain(), classes="present")
    assert classes["name"].tolist() == ["ant", "bee", "dog"]
    assert "1 class(es) left out by `classes: present` (no image file of them on disk): cat" in (
        caplog.text
    )
    assert summarise(shuffled, images, classes, dk)["classes_left_out"] == ["cat"]
    assert images["image_id"].tolist() == [0, 1, 2, 3, 4, 5, 9, 10, 11]
    (raw.image_root / "dog/1.png").unlink()
    with pytest.raises(InputError, match=r"images/dog/1\.png: image file not found \(1 missing"):
        canonicalise(raw, domain(), classes="present")


def test_all_needs_every_file(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    (raw.image_root / "bee/2.png").unlink()
    with pytest.raises(InputError, match=r"images/bee/2\.png: image file not found"):
        canonicalise(raw, domain())
    assert len(canonicalise(raw, domain(), check_images=False)[0]) == 12


def test_split_class_without_domain_knowledge(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"\[domain_knowledge\]: no domain knowledge for 2 class\(es\): \['bee', 'dog'\]",
    ):
        canonicalise(make_raw(tmp_path), domain(("ant", "cat")))


def test_nan_domain_knowledge_names_class_and_column(tmp_path: Path) -> None:
    dk = domain()
    dk.loc["cat", "a1"] = np.nan
    with pytest.raises(
        InputError, match=r"\[domain_knowledge\]: class 'cat', column 'a1': nan is not finite"
    ):
        canonicalise(make_raw(tmp_path), dk)


def test_non_string_columns_are_renamed(tmp_path: Path) -> None:
    dk = domain()
    dk.columns = [0, 1, 2]
    _, _, table = canonicalise(make_raw(tmp_path), dk)
    assert table.columns.tolist() == ["class_id", "name", "dim_000", "dim_001", "dim_002"]


def test_a_seen_class_without_images_is_refused(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    raw = dataclasses.replace(raw, images=raw.images[raw.images["class_name"] != "ant"])
    with pytest.raises(
        InputError, match=r"toy \[classes\]: seen class 'ant' has no images in any split"
    ):
        canonicalise(raw, domain())


def test_an_unseen_class_without_images_is_defined_by_its_domain_knowledge(
    tmp_path: Path,
) -> None:
    raw = make_raw(tmp_path)
    raw = dataclasses.replace(raw, images=raw.images[raw.images["class_name"] != "cat"])
    images, classes, dk = canonicalise(raw, domain())
    assert classes["name"].tolist() == ["ant", "bee", "cat", "dog"]
    assert classes.set_index("name").loc["cat", "seen"] == np.False_
    assert 2 not in set(images["class_id"])  # cat: a row of domain knowledge, no image
    assert dk.set_index("name").loc["cat"].tolist()[1:] == [6.0, 7.0, 8.0]


def test_seen_class_without_trainval(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    images = raw.images.copy()
    images.loc[images["class_name"] == "bee", "split"] = "test_seen"
    with pytest.raises(InputError, match=r"\[classes\]: seen class 'bee' has no trainval images"):
        canonicalise(dataclasses.replace(raw, images=images), domain())


def test_duplicate_paths(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    raw = dataclasses.replace(
        raw, images=pd.concat([raw.images, raw.images.iloc[[4]]], ignore_index=True)
    )
    with pytest.raises(
        InputError,
        match=r"toy \[images\]: image 'bee/1\.png' listed twice \(its image_id would not be",
    ):
        canonicalise(raw, domain())


def test_verify_images_names_corrupt_file(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    bad = raw.image_root / "ant" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 garbage, not really a jpeg")
    images, _, _ = canonicalise(raw, domain())
    verify_images(images["path"])
    with pytest.raises(InputError, match=r"ant/broken\.jpg: not a readable image"):
        verify_images([*images["path"], bad])


def test_subset_summary(tmp_path: Path) -> None:
    images, classes, _ = canonicalise(make_raw(tmp_path), domain(), classes=["ant", "cat"])
    assert subset_summary(images, classes) == {
        "n_classes": 2,
        "n_seen": 1,
        "n_unseen": 1,
        "n_images": 6,
        "images_per_split": {"trainval": 2, "test_seen": 1, "test_unseen": 3},
    }
