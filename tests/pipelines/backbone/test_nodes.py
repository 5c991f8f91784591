"""Backbone node: seen-class training, its spec, its role table and its determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.pipelines.backbone.nodes import train_backbone


def test_spec_describes_the_trained_network(chain):
    spec = chain.backbone.spec.to_dict()

    assert spec == {
        "arch": "small_cnn",
        "layer": "block3",
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "seen_class_ids": chain.seen_ids,
        "crop_fraction": 1.0,
        "trunk": None,
    }


def test_the_trained_backbone_is_one_object_cut_once(chain):
    backbone = chain.backbone

    assert isinstance(backbone, TrainedBackbone)
    assert backbone.cut is backbone.cut  # built once, shared by every use
    assert backbone.cut.layer == "block3"
    assert backbone.cut.classifier.out_features == len(chain.seen_ids)
    assert all(v.device.type == "cpu" and not v.requires_grad for v in backbone.state.values())
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        logits = backbone.cut.classifier(backbone.cut.head(backbone.cut.stem(x)))
    assert logits.shape == (2, len(chain.seen_ids))
    seen = backbone.seen_rows()
    assert seen.class_ids.tolist() == chain.seen_ids
    assert np.array_equal(seen.weight, backbone.state["fc.weight"].numpy())


def test_role_table_has_both_roles_over_the_trainval_images(chain):
    roles, images = chain.backbone_roles, chain.images

    assert list(roles.columns) == ["image_id", "role"]
    assert roles["image_id"].dtype == np.int64
    assert set(roles["role"]) == {"train", "holdout"}
    trainval = images.loc[images["split"] == "trainval", "image_id"]
    assert sorted(roles["image_id"]) == sorted(trainval)
    # stratified: round(0.15 * 8) = 1 holdout image per seen class
    held = roles[roles["role"] == "holdout"].merge(images, on="image_id")
    assert held.groupby("class_id").size().to_dict() == {c: 1 for c in chain.seen_ids}


def test_report_and_metrics_agree_with_the_roles(chain):
    report, metrics, roles = chain.backbone_report, chain.backbone_metrics, chain.backbone_roles

    assert report["arch"] == "small_cnn"
    assert report["layer"] == "block3"
    assert report["n_train_images"] == int((roles["role"] == "train").sum())
    assert report["n_holdout_images"] == int((roles["role"] == "holdout").sum())
    assert 0.0 <= report["seen_accuracy_test"] <= 1.0
    assert 0.0 <= report["seen_accuracy_holdout"] <= 1.0
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert set(metrics) == {"seen_accuracy", "train_seconds"}
    assert metrics["seen_accuracy"] == {"value": 100 * report["seen_accuracy_test"], "step": 0}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"arch": "resnet7"}, r"unknown backbone arch 'resnet7'"),
        ({"layer": "block9"}, r"block9"),
        ({"layer": "fc"}, r"classifier"),
        ({"layer": "relu"}, r"importance layer 'relu'.*linear"),
    ],
    ids=["unknown-arch", "unknown-layer", "classifier-layer", "layer-after-last-nonlinearity"],
)
def test_unusable_network_choice_is_a_clear_input_error(chain, params_for, override, message):
    with pytest.raises(InputError, match=message):
        train_backbone(
            chain.images, chain.classes, chain.backbone_roles, params_for("backbone", override)
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"train": {"epochs": 0}}, r"epochs"),
        ({"train": {"optimizer": "lbfgs"}}, r"optimizer"),
        ({"holdout_fraction": "some"}, r"holdout_fraction"),
        ({"archh": "small_cnn"}, r"archh"),
        pytest.param(
            {"holdout_fraction": 1.5},
            r"holdout_fraction",
        ),
        pytest.param(
            {"image_size": 0},
            r"image_size",
        ),
        pytest.param(
            {"crop_fraction": 0.0},
            r"crop_fraction",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        train_backbone(None, None, None, params_for("backbone", bad))


# ------------------------------------------------------------------ determinism


def test_same_seeds_give_identical_weights_and_roles(chain, params_for, train_seeded):
    """As in a Kedro run: the RuntimeHook seeds the global RNG, train.seed does the rest."""
    backbone, roles, _, _ = train_seeded(chain.images, chain.classes, params_for("backbone"))

    assert backbone.state.keys() == chain.backbone.state.keys()
    for name, value in backbone.state.items():
        assert torch.equal(value, chain.backbone.state[name]), name
    assert roles.equals(chain.backbone_roles)


def test_train_seed_alone_makes_training_reproducible(chain, params_for, train_seeded):
    params = params_for("backbone")

    first = train_seeded(chain.images, chain.classes, params, seed=1)[0].state
    second = train_seeded(chain.images, chain.classes, params, seed=2)[0].state

    assert all(torch.equal(first[k], second[k]) for k in first)
