"""Importance node: per-image and per-class importance tables of the seen trainval images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from niwt_pipeline.core.importance import channel_columns
from niwt_pipeline.pipelines.importance.nodes import build_importance_tables

K = 128


def test_channel_columns_are_zero_padded_and_ordered():
    assert channel_columns(3) == ["k_0000", "k_0001", "k_0002"]
    assert channel_columns(0) == []


def test_per_image_table_holds_exactly_the_seen_trainval_images(chain):
    table, images = chain.image_importance, chain.images
    trainval = images.loc[images["split"] == "trainval"]

    assert list(table.columns) == ["image_id", "class_id", *channel_columns(K)]
    assert table["image_id"].dtype == table["class_id"].dtype == np.int64
    assert all(table[c].dtype == np.float32 for c in channel_columns(K))
    assert sorted(table["image_id"]) == sorted(trainval["image_id"])
    assert set(table["class_id"]) == set(chain.seen_ids)
    expected_class = images.set_index("image_id").loc[table["image_id"], "class_id"].to_numpy()
    np.testing.assert_array_equal(table["class_id"].to_numpy(), expected_class)


def test_per_image_values_are_the_ground_truth_importances(chain):
    table, out = chain.image_importance, chain.image_outputs
    row = {int(i): r for r, i in enumerate(out["image_id"].tolist())}
    positions = [row[int(i)] for i in table["image_id"]]

    np.testing.assert_array_equal(
        table[channel_columns(K)].to_numpy(), out["importance_gt"].numpy()[positions]
    )


def test_per_class_table_is_the_groupby_mean_of_the_per_image_table(chain):
    per_image, per_class = chain.image_importance, chain.class_importance
    expected = per_image.drop(columns="image_id").groupby("class_id").mean()

    assert list(per_class.columns) == ["class_id", "n_images", *channel_columns(K)]
    assert per_class["class_id"].tolist() == sorted(chain.seen_ids)
    assert per_class["n_images"].tolist() == per_image.groupby("class_id").size().tolist()
    np.testing.assert_allclose(
        per_class[channel_columns(K)].to_numpy(), expected.to_numpy(), rtol=1e-6
    )


def test_rows_with_nan_importance_are_left_out(chain):
    outputs = dict(chain.image_outputs)
    gt = outputs["importance_gt"].clone()
    dropped = int(chain.image_importance["image_id"].iloc[0])
    gt[outputs["image_id"] == dropped] = float("nan")
    outputs["importance_gt"] = gt

    per_image, per_class = build_importance_tables(outputs, chain.images)

    assert dropped not in set(per_image["image_id"])
    assert len(per_image) == len(chain.image_importance) - 1
    assert per_class["n_images"].sum() == len(per_image)


def test_output_ids_unknown_to_the_images_table_are_refused(chain):
    outputs = dict(chain.image_outputs)
    outputs["image_id"] = outputs["image_id"].clone()
    outputs["image_id"][0] = 10_000

    with pytest.raises(KeyError, match=r"10000"):
        build_importance_tables(outputs, chain.images)


def test_inputs_are_left_unchanged(chain):
    images = chain.images.copy()
    outputs = {k: v.clone() for k, v in chain.image_outputs.items()}

    build_importance_tables(outputs, images)

    pd.testing.assert_frame_equal(images, chain.images)
    for name, value in outputs.items():
        assert torch.equal(value.nan_to_num(), chain.image_outputs[name].nan_to_num()), name
