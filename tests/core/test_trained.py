"""A trained backbone as one object: built once, its seen rows, strict loading; its recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import (
    CLASSIFIER_BIAS,
    CLASSIFIER_WEIGHT,
    SEEN_IDS,
    hand_set_backbone,
    hand_set_spec,
    hand_set_state,
)

from niwt_pipeline.core import trained as trained_module
from niwt_pipeline.core.backbones import BackboneSpec, CutModel, SmallCNN, get_classifier
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.trained import BackboneRecipe, TrainedBackbone
from niwt_pipeline.core.training import TrainConfig


def test_model_and_cut_are_built_once(monkeypatch):
    calls = []
    build = trained_module.build_backbone

    def counting(*args, **kwargs):
        calls.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(trained_module, "build_backbone", counting)
    backbone = hand_set_backbone()
    assert calls == []  # nothing is built until it is needed
    cut = backbone.cut
    assert isinstance(cut, CutModel)
    assert backbone.cut is cut and backbone.model is backbone.model
    assert backbone.on(torch.device("cpu")) is cut
    backbone.seen_rows()
    backbone.seen_rows()
    assert calls == [("small_cnn",)]  # build_backbone(arch, num_classes=..., weights=None)
    assert cut.classifier is get_classifier(backbone.model)  # shared, not copied
    assert cut.layer == "block3"
    assert not backbone.model.training and not cut.training


def test_the_model_is_the_state_loaded_strictly():
    backbone = hand_set_backbone()
    reference = SmallCNN(3)
    reference.load_state_dict(hand_set_state(), strict=True)
    reference.eval()
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, hand_set_state()[key]), key
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(backbone.model(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(backbone.cut(x), expected, rtol=1e-6, atol=1e-6)
        assert backbone.cut.stem(x).shape == (2, 128, 2, 2)  # block3 of a 16-px input


def test_seen_rows_are_the_classifier():
    rows = hand_set_backbone().seen_rows()
    assert rows.method == "seen"
    assert rows.class_ids.dtype == np.int64 and rows.class_ids.tolist() == SEEN_IDS
    assert rows.weight.dtype == np.float32 and rows.bias.dtype == np.float32
    np.testing.assert_array_equal(rows.weight, CLASSIFIER_WEIGHT.numpy())
    np.testing.assert_array_equal(rows.bias, [0.5, -0.25, 1.0])
    # row j of the classifier is class SEEN_IDS[j]: class 1 is output 1, class 4 output 2
    weight, bias = rows.rows_for([4, 3])
    np.testing.assert_array_equal(weight, CLASSIFIER_WEIGHT[[2, 0]].numpy())
    np.testing.assert_array_equal(bias, CLASSIFIER_BIAS[[2, 0]].numpy())


def test_state_that_does_not_fit_raises_on_first_use():
    state = hand_set_state()
    del state["fc.bias"]
    missing = TrainedBackbone(hand_set_spec(), state)  # construction does not check
    with pytest.raises(InputError, match=r"missing \['fc.bias'\]"):
        _ = missing.model
    with pytest.raises(InputError, match="fc.bias"):
        _ = missing.cut

    five = {**hand_set_state(), "fc.weight": torch.zeros(5, 128), "fc.bias": torch.zeros(5)}
    wrong = TrainedBackbone(hand_set_spec(), five)
    with pytest.raises(InputError, match=r"3 seen classes") as info:
        _ = wrong.model
    assert "fc.weight (weights (5, 128), model (3, 128))" in str(info.value)

    extra = TrainedBackbone(hand_set_spec(), {**hand_set_state(), "head.weight": torch.zeros(1)})
    with pytest.raises(InputError, match=r"unexpected \['head.weight'\]"):
        _ = extra.model

    resnet = BackboneSpec("resnet18", "layer4.0", 16, [0.5] * 3, [0.5] * 3, SEEN_IDS)
    with pytest.raises(InputError, match="arch 'resnet18'"):
        _ = TrainedBackbone(resnet, hand_set_state()).model


def test_non_tensor_entries_are_dropped_and_repr_names_the_spec():
    state = {**hand_set_state(), "_metadata": {"version": 1}}
    backbone = TrainedBackbone(hand_set_spec(), state)  # type: ignore[arg-type]
    assert "_metadata" not in backbone.state
    assert repr(backbone) == ("TrainedBackbone(arch='small_cnn', layer='block3', 3 seen classes)")


def test_recipe_spec_for_uses_the_arch_defaults():
    spec = BackboneRecipe().spec_for([5, 2])
    assert spec == BackboneSpec(
        arch="small_cnn",
        layer="block3",
        image_size=64,
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
        seen_class_ids=[5, 2],
        crop_fraction=1.0,
    )
    recipe = BackboneRecipe(
        arch="resnet18", layer="layer3", image_size=96, crop_fraction=0.875, train=TrainConfig()
    )
    spec = recipe.spec_for(np.array([7]))
    assert (spec.layer, spec.image_size, spec.crop_fraction) == ("layer3", 96, 0.875)
    assert spec.mean == pytest.approx([0.485, 0.456, 0.406])
    assert spec.seen_class_ids == [7] and isinstance(spec.seen_class_ids[0], int)
    assert spec.seen_label_map() == {7: 0}
