"""xlsa17 split files: conversion to 0-based positions, validation, split assignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from niwt_pipeline.core.data.xlsa17 import (
    assign_splits,
    read_att_splits,
    read_class_embeddings_mat,
    write_att_splits,
)
from niwt_pipeline.core.errors import InputError

RELPATHS = ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg", "c/1.jpg", "c/2.jpg"]
CLASS_OF = {p: p.split("/")[0] for p in RELPATHS}


def _write(path: Path, **overrides) -> Path:
    """A valid tiny split file: classes a, b seen (trainval + test_seen), c unseen."""
    content = {
        "att": np.arange(6, dtype=float).reshape(2, 3) + 1,
        "allclasses_names": ["b", "a", "c"],
        "trainval_loc": [0, 2],
        "test_seen_loc": [1, 3],
        "test_unseen_loc": [4, 5],
    }
    content.update(overrides)
    return write_att_splits(path, **content)


def test_round_trip_converts_to_zero_based(tmp_path: Path) -> None:
    splits = read_att_splits(_write(tmp_path / "att_splits.mat"))
    raw = scipy.io.loadmat(tmp_path / "att_splits.mat")
    assert raw["trainval_loc"].ravel().tolist() == [1, 3]  # stored 1-based, as the originals
    assert splits.trainval_loc.tolist() == [0, 2]
    assert splits.allclasses_names == ["b", "a", "c"]
    assert splits.att.shape == (2, 3)
    assert splits.original_att is None and splits.train_loc is None


def test_assign_splits(tmp_path: Path) -> None:
    splits = read_att_splits(_write(tmp_path / "att_splits.mat"))
    split = assign_splits(RELPATHS, splits, CLASS_OF)
    assert split.tolist() == [
        "trainval",
        "test_seen",
        "trainval",
        "test_seen",
        "test_unseen",
        "test_unseen",
    ]
    assert split.index.tolist() == RELPATHS


def test_out_of_range_position_names_key(tmp_path: Path) -> None:
    splits = read_att_splits(_write(tmp_path / "att_splits.mat", test_unseen_loc=[4, 6]))
    with pytest.raises(
        InputError,
        match=r"att_splits\.mat \[test_unseen_loc\]: position 7 .*out of range.*6 images",
    ):
        assign_splits(RELPATHS, splits, CLASS_OF)


def test_overlapping_positions_name_both_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "att_splits.mat", test_seen_loc=[1, 2])
    with pytest.raises(
        InputError,
        match=r"att_splits\.mat \[trainval_loc\]: 1 position.*trainval_loc and test_seen_loc",
    ):
        read_att_splits(path)


def test_uncovered_images_are_an_error(tmp_path: Path) -> None:
    splits = read_att_splits(_write(tmp_path / "att_splits.mat", test_unseen_loc=[4]))
    with pytest.raises(InputError, match=r"att_splits\.mat: 1 of 6 images are in none.*c/2\.jpg"):
        assign_splits(RELPATHS, splits, CLASS_OF)


def test_unseen_class_in_trainval_is_an_error(tmp_path: Path) -> None:
    splits = read_att_splits(
        _write(tmp_path / "att_splits.mat", trainval_loc=[0, 2, 4], test_unseen_loc=[5])
    )
    with pytest.raises(
        InputError,
        match=r"\[test_unseen_loc\]: unseen classes that also have seen-split images: \['c'\]",
    ):
        assign_splits(RELPATHS, splits, CLASS_OF)


def test_assign_splits_needs_sorted_paths(tmp_path: Path) -> None:
    splits = read_att_splits(_write(tmp_path / "att_splits.mat"))
    with pytest.raises(ValueError, match="sorted"):
        assign_splits(RELPATHS[::-1], splits, CLASS_OF)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {
                "att": np.ones((2, 3)),
                "allclasses_names": ["a", "b", "c"],
                "trainval_loc": [[1]],
                "test_seen_loc": [[2]],
            },
            r"\[test_unseen_loc\]: missing key",
        ),
        (
            {
                "att": np.ones((2, 4)),
                "allclasses_names": ["a", "b", "c"],
                "trainval_loc": [[1]],
                "test_seen_loc": [[2]],
                "test_unseen_loc": [[3]],
            },
            r"\[att\]: shape \(2, 4\) .*3 allclasses_names",
        ),
        (
            {
                "att": np.array([[1.0, np.nan, 1.0]]),
                "allclasses_names": ["a", "b", "c"],
                "trainval_loc": [[1]],
                "test_seen_loc": [[2]],
                "test_unseen_loc": [[3]],
            },
            r"\[att\]: 1 non-finite value.*column 1",
        ),
        (
            {
                "att": np.ones((2, 3)),
                "allclasses_names": ["a", "b", "c"],
                "trainval_loc": [[0]],
                "test_seen_loc": [[2]],
                "test_unseen_loc": [[3]],
            },
            r"\[trainval_loc\]: positions are 1-based",
        ),
    ],
    ids=["missing-key", "shape-mismatch", "nan", "zero-position"],
)
def test_bad_split_files(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "bad_splits.mat"
    scipy.io.savemat(path, content)  # names as a padded char matrix: also accepted
    with pytest.raises(InputError, match=r"bad_splits\.mat " + message):
        read_att_splits(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.mat: file not found"):
        read_att_splits(tmp_path / "nowhere.mat")


def test_real_cub_split_file(xlsa17_root: Path) -> None:
    splits = read_att_splits(xlsa17_root / "CUB" / "att_splits.mat")
    assert splits.att.shape == splits.original_att.shape == (312, 200)
    assert splits.allclasses_names[:2] == ["002.Laysan_Albatross", "003.Sooty_Albatross"]
    assert splits.allclasses_names[150] == "001.Black_footed_Albatross"  # not classes.txt order
    assert (len(splits.trainval_loc), len(splits.test_seen_loc), len(splits.test_unseen_loc)) == (
        7057,
        1764,
        2967,
    )
    every = np.concatenate(list(splits.locations().values()))
    assert sorted(every.tolist()) == list(range(11788))  # 0-based, every image once
    assert np.allclose(np.linalg.norm(splits.att, axis=0), 1.0)


def test_real_awa2_split_file_has_train_val(xlsa17_root: Path) -> None:
    splits = read_att_splits(xlsa17_root / "AWA2" / "att_splits.mat")
    assert splits.att.shape == (85, 50)
    assert splits.allclasses_names[:2] == ["antelope", "grizzly+bear"]
    assert splits.train_loc is not None and splits.val_loc is not None
    assert splits.train_loc.min() >= 0


def test_real_sentence_embeddings(cub_root: Path) -> None:
    table = read_class_embeddings_mat(cub_root / "sentence_embeddings" / "sent_splits.mat")
    assert table.shape == (200, 1024)
    assert table.index[0] == "002.Laysan_Albatross"
    assert table.columns[0] == "dim_0000" and table.columns[-1] == "dim_1023"
    assert table.dtypes.eq(np.float64).all()
