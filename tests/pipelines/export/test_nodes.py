"""Export node: the arrays of the xlsa17 export, built from the shared chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niwt_pipeline.core.data.export import export_xlsa17, read_xlsa17_export
from niwt_pipeline.core.data.xlsa17 import read_att_splits
from niwt_pipeline.datasets import Xlsa17ExportDataset
from niwt_pipeline.pipelines.export.nodes import build_xlsa17_export

D = 128  # small_cnn penultimate width


@pytest.fixture(scope="module")
def arrays(chain) -> dict:
    return build_xlsa17_export(
        chain.image_outputs,
        chain.images,
        chain.classes,
        chain.domain_knowledge,
        chain.backbone,
        chain.backbone_roles,
        chain.validation_roles,
    )


def test_shapes_follow_the_chain(arrays, chain):
    n, c = len(chain.images), len(chain.classes)
    a = chain.domain_knowledge.shape[1] - 2  # class_id, name
    s = len(chain.seen_ids)
    assert arrays["features"].shape == (n, D)
    assert arrays["labels"].shape == arrays["image_files"].shape == arrays["splits"].shape == (n,)
    assert arrays["class_names"].shape == (c,)
    assert arrays["att"].shape == (a, c)
    assert arrays["seen_rows"].shape == (s, D)
    assert arrays["seen_bias"].shape == (s,)
    assert sorted(arrays["seen_class_ids"].tolist()) == chain.seen_ids


def test_relative_paths_sort_in_image_id_order(arrays, chain):
    by_id = np.argsort(chain.image_outputs["image_id"].numpy())
    files = arrays["image_files"][by_id]
    assert files.tolist() == sorted(files.tolist())
    assert not any(f.startswith("/") or ".." in f for f in files)


def test_seen_rows_score_like_the_extracted_logits(arrays, chain):
    logits = arrays["features"] @ arrays["seen_rows"].T + arrays["seen_bias"]
    torch.testing.assert_close(
        torch.from_numpy(logits), chain.image_outputs["logits"], atol=1e-4, rtol=1e-4
    )


def test_round_trip_through_the_export(arrays, chain, tmp_path):
    folder = export_xlsa17(tmp_path / "xlsa17", **arrays)
    splits = read_att_splits(folder / "att_splits.mat")
    back = read_xlsa17_export(folder)
    ids = chain.image_outputs["image_id"].numpy()
    images = chain.images.set_index("image_id")
    for key, split in (
        ("trainval_loc", "trainval"),
        ("test_seen_loc", "test_seen"),
        ("test_unseen_loc", "test_unseen"),
    ):
        loc = splits.locations()[key]
        assert len(loc) == int((chain.images["split"] == split).sum())
        # the exported column order is the image_id order of the canonical tables
        picked = np.sort(ids)[loc]
        assert (images.loc[picked, "split"] == split).all()
        np.testing.assert_array_equal(back.labels[loc] - 1, images.loc[picked, "class_id"])
    order = np.argsort(ids)
    np.testing.assert_allclose(back.features, arrays["features"][order])
    assert splits.allclasses_names == chain.classes.sort_values("class_id")["name"].tolist()


def test_dataset_saves_and_loads_the_same_arrays(arrays, tmp_path):
    dataset = Xlsa17ExportDataset(path=str(tmp_path / "xlsa17"))
    assert not dataset.exists()
    dataset.save(arrays)
    assert dataset.exists()
    back = dataset.load()
    order = np.argsort(arrays["image_files"])
    for key in ("features", "labels", "image_files", "splits"):
        np.testing.assert_array_equal(back[key], arrays[key][order])
    for key in ("class_names", "seen_rows", "seen_bias", "seen_class_ids"):
        np.testing.assert_array_equal(back[key], arrays[key])
    np.testing.assert_allclose(back["att"], arrays["att"])


def test_outputs_of_unknown_images_fail(chain):
    outputs = dict(chain.image_outputs)
    outputs["image_id"] = outputs["image_id"] + 10_000
    with pytest.raises(ValueError, match="not in images"):
        build_xlsa17_export(
            outputs,
            chain.images,
            chain.classes,
            chain.domain_knowledge,
            chain.backbone,
            chain.backbone_roles,
            chain.validation_roles,
        )


def test_the_validation_split_and_the_backbone_images_are_exported(arrays, chain):
    """xlsa17's ``train_loc`` / ``val_loc`` are the validation's train classes and its
    pseudo-unseen classes, so other code tunes on the same split; the backbone's training
    and held-out images are named too."""
    ids = chain.image_outputs["image_id"].numpy()
    validation = dict(
        zip(chain.validation_roles["image_id"], chain.validation_roles["role"], strict=True)
    )
    backbone = dict(
        zip(chain.backbone_roles["image_id"], chain.backbone_roles["role"], strict=True)
    )
    expected_val = [
        "val" if validation.get(i) == "pseudo_unseen" else "train" if i in validation else ""
        for i in ids
    ]
    assert arrays["validation_roles"].tolist() == expected_val
    assert {"train", "val"} <= set(expected_val)
    assert arrays["backbone_roles"].tolist() == [backbone.get(i, "") for i in ids]
