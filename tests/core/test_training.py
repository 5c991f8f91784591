"""Training and evaluation, and the image dataset they read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import ImageTableDataset, make_loader
from niwt_pipeline.core.training import (
    TrainConfig,
    evaluate,
    resolve_device,
    train_classifier,
)

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 210)]


def _solid_images(root: Path, per_class: int = 6, size: int = 40) -> tuple[list[Path], list[int]]:
    """Noisy solid-colour images, one colour a class."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for label, colour in enumerate(COLOURS):
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            path = root / f"c{label}_{i}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            paths.append(path)
            labels.append(label)
    return paths, labels


@pytest.fixture
def colour_set(tmp_path) -> tuple[list[Path], list[int]]:
    return _solid_images(tmp_path)


def _train(paths, labels, config: TrainConfig, augment: bool = True):
    data = ImageTableDataset(paths, labels, 32, (0.5,) * 3, (0.5,) * 3, augment=augment, hflip=True)
    loader = make_loader(data, batch_size=6, shuffle=True, seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_backbone("small_cnn", 3)
    result = train_classifier(model, loader, config, progress=False)
    return model, result


def test_same_seed_same_weights(colour_set):
    config = TrainConfig(epochs=2, lr=1e-2, seed=3, device="cpu")
    first, _ = _train(*colour_set, config)
    second, _ = _train(*colour_set, config)
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    third, _ = _train(*colour_set, TrainConfig(epochs=2, lr=1e-2, seed=4, device="cpu"))
    assert not torch.equal(third.fc.weight, first.fc.weight)


def test_loss_decreases_and_separable_set_is_learned(colour_set):
    paths, labels = colour_set
    config = TrainConfig(epochs=6, lr=1e-2, seed=0, device="cpu", lr_schedule="cosine")
    model, result = _train(paths, labels, config, augment=False)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]
    assert result.best_epoch == 6 and result.best_val_acc is None
    assert result.history[-1]["lr"] < config.lr  # cosine schedule
    data = ImageTableDataset(paths, labels, 32, (0.5,) * 3, (0.5,) * 3)
    accuracy, per_class = evaluate(model, make_loader(data, batch_size=8), "cpu")
    assert accuracy == 1.0 and per_class.tolist() == [1.0, 1.0, 1.0]
    assert model.training  # modes are restored after evaluation


def test_validation_and_keep_best(colour_set):
    paths, labels = colour_set
    val = make_loader(ImageTableDataset(paths, labels, 32, (0.5,) * 3, (0.5,) * 3), batch_size=9)
    data = ImageTableDataset(paths, labels, 32, (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 3)
    config = TrainConfig(epochs=3, lr=1e-2, seed=0, device="cpu")
    result = train_classifier(
        model, make_loader(data, 6, shuffle=True), config, val, progress=False
    )
    accs = [row["val_acc"] for row in result.history]
    assert result.best_val_acc == max(accs)
    assert result.best_epoch == 1 + accs.index(max(accs))
    assert evaluate(model, val)[0] == pytest.approx(result.best_val_acc)


def test_freeze_backbone_trains_only_the_classifier(colour_set):
    paths, labels = colour_set
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 3)
    model.block1[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    data = ImageTableDataset(paths, labels, 32, (0.5,) * 3, (0.5,) * 3)
    config = TrainConfig(epochs=1, lr=1e-2, freeze_backbone=True, device="cpu", optimizer="sgd")
    train_classifier(model, make_loader(data, 6, shuffle=True), config, progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics unchanged too
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_evaluate_hand_built():
    """Identity logits on one-hot inputs: the prediction is the hot position."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
    x = torch.eye(4)[[0, 1, 1, 2, 0]]  # predictions 0, 1, 1, 2, 0
    y = torch.tensor([0, 0, 1, 1, 0])  # class 0: 2 of 3 right, class 1: 1 of 2, classes 2, 3: none
    loader = DataLoader(TensorDataset(x, y, torch.arange(5)), batch_size=2)
    accuracy, per_class = evaluate(model, loader)
    assert accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(per_class, [2 / 3, 1 / 2, np.nan, np.nan])
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        evaluate(model, DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 3, 4])), batch_size=5))


def test_config_and_device_validation():
    with pytest.raises(InputError, match="epochs.*optimizer"):
        TrainConfig(epochs=0, optimizer="lbfgs")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            resolve_device("cuda")


def test_image_table_dataset(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (80, 40), (255, 0, 0)).save(wide)
    gray = tmp_path / "gray.png"
    Image.new("L", (50, 60), 128).save(gray)
    data = ImageTableDataset([wide, gray], [3, -1], 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert len(data) == 2
    image, label, index = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and (label, index) == (3, 0)
    assert torch.allclose(image[0], torch.ones(32, 32)) and torch.allclose(
        image[1], -torch.ones(32, 32)
    )
    image, label, index = data[1]
    assert image.shape == (3, 32, 32) and (label, index) == (-1, 1)
    assert torch.allclose(image, torch.full((3, 32, 32), (128 / 255 - 0.5) / 0.5), atol=1e-6)
    augmented = ImageTableDataset([wide], [0], 24, (0, 0, 0), (1, 1, 1), augment=True, hflip=True)
    assert augmented[0][0].shape == (3, 24, 24)
    with pytest.raises(InputError, match="labels"):
        ImageTableDataset([wide], [0, 1], 32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(InputError, match="not found"):
        ImageTableDataset([tmp_path / "nope.png"], [0], 32, (0.5,) * 3, (0.5,) * 3)[0]


def test_center_crop_and_crop_fraction(tmp_path):
    """Left half black, right half white: the center crop keeps the middle of the image."""
    path = tmp_path / "halves.png"
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[:, 64:] = 255
    Image.fromarray(pixels).save(path)
    image = ImageTableDataset([path], [0], 32, (0, 0, 0), (1, 1, 1))[0][0]
    assert image[:, :, :12].max() == 0 and image[:, :, 20:].min() == 1
    cropped = ImageTableDataset([path], [0], 32, (0, 0, 0), (1, 1, 1), crop_fraction=0.5)[0][0]
    assert cropped.shape == (3, 32, 32)


def test_make_loader_is_seeded(colour_set):
    paths, labels = colour_set
    data = ImageTableDataset(paths, labels, 16, (0.5,) * 3, (0.5,) * 3)
    order = [b[2].tolist() for b in make_loader(data, 5, shuffle=True, seed=7)]
    again = [b[2].tolist() for b in make_loader(data, 5, shuffle=True, seed=7)]
    other = [b[2].tolist() for b in make_loader(data, 5, shuffle=True, seed=8)]
    assert order == again and order != other
    assert sorted(sum(order, [])) == list(range(len(paths)))
