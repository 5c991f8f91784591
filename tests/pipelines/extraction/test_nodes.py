"""Extraction node: one pass of the trained backbone over every image, or resumable shards."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.pipelines.extraction.nodes import extract_image_outputs

K = 128  # channels of small_cnn's block3
D = 128  # width of small_cnn's penultimate features


def test_outputs_have_one_row_per_image_in_table_order(chain):
    out, images = chain.image_outputs, chain.images
    n, s = len(images), len(chain.seen_ids)

    assert set(out) == {
        "image_id",
        "features",
        "logits",
        "predicted",
        "importance_gt",
        "importance_pred",
    }
    assert out["image_id"].tolist() == images["image_id"].tolist()
    assert out["features"].shape == (n, D)
    assert out["logits"].shape == (n, s)
    assert out["predicted"].shape == (n,)
    assert out["importance_gt"].shape == (n, K)
    assert out["importance_pred"].shape == (n, K)
    assert out["features"].dtype == out["logits"].dtype == torch.float32


def test_predicted_is_the_argmax_of_the_logits(chain):
    out = chain.image_outputs

    assert torch.equal(out["predicted"].long(), out["logits"].argmax(dim=1))


def test_logits_are_those_of_the_rebuilt_backbone(chain):
    spec = chain.backbone.spec
    model = TrainedBackbone(spec, chain.backbone.state).model
    first = chain.images.iloc[:8]
    batch = next(iter(image_loader(first, spec, batch_size=8)))[0]

    with torch.no_grad():
        logits = model(batch)

    torch.testing.assert_close(chain.image_outputs["logits"][:8], logits, rtol=1e-4, atol=1e-5)


def test_importance_gt_is_nan_exactly_for_unseen_class_images(chain):
    gt = chain.image_outputs["importance_gt"].numpy()
    unseen_image = chain.images["class_id"].isin(chain.unseen_ids).to_numpy()

    assert np.isnan(gt[unseen_image]).all()
    assert np.isfinite(gt[~unseen_image]).all()


def test_importance_pred_is_finite_and_equals_gt_where_the_prediction_is_right(chain):
    out = chain.image_outputs
    label = {cid: j for j, cid in enumerate(chain.backbone.spec.seen_class_ids)}
    target = chain.images["class_id"].map(lambda c: label.get(int(c), -1)).to_numpy()
    right = out["predicted"].numpy() == target
    wrong_seen = ~right & (target >= 0)
    pred, gt = out["importance_pred"], out["importance_gt"]

    assert np.isfinite(pred.numpy()).all()
    assert right.any() and wrong_seen.any()
    torch.testing.assert_close(pred[right], gt[right])
    assert not torch.allclose(pred[wrong_seen], gt[wrong_seen])


def test_rows_follow_a_shuffled_subset_and_gt_only_skips_pred(chain, params_for):
    subset = chain.images.sample(n=10, random_state=0)

    out = extract_image_outputs(
        chain.backbone,
        subset,
        params_for("extraction", {"targets": "gt", "batch_size": 4}),
    )

    assert "importance_pred" not in out
    assert out["image_id"].tolist() == subset["image_id"].tolist()
    rows = subset.index.to_numpy()  # positions in the full table (its index is 0..N-1)
    torch.testing.assert_close(
        out["features"], chain.image_outputs["features"][rows], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        out["importance_gt"],
        chain.image_outputs["importance_gt"][rows],
        rtol=1e-4,
        atol=1e-6,
        equal_nan=True,
    )


def test_weights_missing_a_tensor_are_refused(chain, params_for):
    weights = {k: v for k, v in chain.backbone.state.items() if k != "fc.bias"}
    backbone = TrainedBackbone(chain.backbone.spec, weights)

    with pytest.raises(InputError, match=r"do not fit arch 'small_cnn'.*fc\.bias"):
        extract_image_outputs(backbone, chain.images, params_for("extraction"))


def test_weights_of_another_class_count_are_an_input_error(chain, params_for):
    spec = BackboneSpec.from_dict(
        dict(chain.backbone.spec.to_dict(), seen_class_ids=chain.seen_ids[:3])
    )

    with pytest.raises(InputError, match=r"do not fit"):
        extract_image_outputs(
            TrainedBackbone(spec, chain.backbone.state), chain.images, params_for("extraction")
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"targets": "all"}, r"targets"),
        ({"batchsize": 8}, r"batchsize"),
        pytest.param(
            {"batch_size": 0},
            r"batch_size",
        ),
        ({"shard_size": 0}, r"shard_size"),
        ({"shard_size": 40, "batch_size": 32}, r"shard_size 40 must be a multiple of batch_size"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        extract_image_outputs(None, None, params_for("extraction", bad))


def test_sharded_extraction_is_identical_and_a_rerun_computes_nothing(
    chain, params_for, tmp_path, caplog, assert_identical
):
    store = ShardStore(tmp_path / "shards")
    params = params_for("extraction", {"shard_size": 32})  # 80 images: 32 + 32 + 16
    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")

    first = extract_image_outputs(chain.backbone, chain.images, params, store)
    assert store.names() == ["shard-00000", "shard-00001", "shard-00002"]
    caplog.clear()
    second = extract_image_outputs(chain.backbone, chain.images, params, store)

    assert_identical(first, chain.image_outputs)
    assert_identical(second, chain.image_outputs)
    assert caplog.text.count("skipped (done)") == 3 and "computed in" not in caplog.text


def test_a_failed_sharded_run_resumes_with_the_failed_shard_only(
    chain, params_for, tmp_path, caplog, assert_identical
):
    store = ShardStore(tmp_path / "shards")
    params = params_for("extraction", {"shard_size": 32})
    broken = chain.images.copy()
    broken.loc[70, "path"] = str(tmp_path / "missing.png")  # in the third shard

    with pytest.raises(InputError):
        extract_image_outputs(chain.backbone, broken, params, store)
    assert store.names() == ["shard-00000", "shard-00001"]
    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")
    caplog.clear()
    resumed = extract_image_outputs(chain.backbone, chain.images, params, store)

    assert caplog.text.count("skipped (done)") == 2
    assert caplog.text.count("computed in") == 1 and "shard 3/3" in caplog.text
    assert_identical(resumed, chain.image_outputs)


def test_changed_settings_make_every_shard_stale(chain, params_for, tmp_path, caplog):
    store = ShardStore(tmp_path / "shards")
    backbone, images = chain.backbone, chain.images
    extract_image_outputs(backbone, images, params_for("extraction", {"shard_size": 32}), store)
    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")
    caplog.clear()

    gt_only = params_for("extraction", {"shard_size": 32, "targets": "gt"})
    out = extract_image_outputs(backbone, images, gt_only, store)

    assert caplog.text.count("computed in") == 3 and "skipped (done)" not in caplog.text
    assert "importance_pred" not in out


def test_shard_size_without_a_store_is_refused(chain, params_for):
    with pytest.raises(InputError, match="image_output_shards"):
        extract_image_outputs(
            chain.backbone,
            chain.images,
            params_for("extraction", {"shard_size": 32}),
        )


def test_decoding_workers_do_not_change_the_outputs(chain, params_for):
    out = extract_image_outputs(
        chain.backbone,
        chain.images,
        params_for("extraction", {"num_workers": 2}),
    )

    assert out.keys() == chain.image_outputs.keys()
    for name, value in chain.image_outputs.items():  # NaN rows (unseen classes) compare equal
        torch.testing.assert_close(out[name], value, rtol=0, atol=0, equal_nan=True, msg=name)
