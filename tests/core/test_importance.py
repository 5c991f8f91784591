"""Importances on tiny hand-set models with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.importance import (
    ExtractionResult,
    batch_importances,
    channel_columns,
    extract,
    extraction_throughput,
    forward_throughput,
    importance_columns,
    importance_tables,
)


class HandSet(nn.Module):
    """x: (B, 1, 2, 2) -> conv 1x1 [+1, -1] -> ReLU -> sum over positions -> fc1 -> ReLU -> fc.

    With A = conv(x) (K=2 channels, 2x2 positions), s_m = sum_p relu(A_mp),
    u = W1 s + b1, z = relu(u), y = W z.  Hence

        alpha_cm = sum_p dy_c/dA_mp = (sum_j W_cj [u_j > 0] W1_jm) * #{p: A_mp > 0}.

    The ReLU right after the importance layer is in place (as VGG's after conv5_3).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(2, 2)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, -1.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv(x))
        s = a.sum(dim=(2, 3))
        return self.fc(self.relu1(self.fc1(s)))


IMAGES = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0]],  # s = (10, 0), u = (10, 4)
        [[-1.0, -2.0], [-3.0, 4.0]],  # s = (4, 6), u = (-2, 13)
        [[0.5, -0.5], [1.5, -2.5]],  # s = (2, 3), u = (-1, 6)
        [[3.0, 1.0], [1.0, -1.0]],  # s = (5, 1), u = (4, 3.5)
        [[1.0, 1.0], [1.0, 1.0]],  # s = (4, 0), u = (4, 1)
    ]
).unsqueeze(1)
LABELS = torch.tensor([2, 1, 0, 2, 5])  # the last is not a class of the model (C = 3)
EXPECTED_Z = [[10.0, 4.0], [0.0, 13.0], [0.0, 6.0], [4.0, 3.5], [4.0, 1.0]]
EXPECTED_LOGITS = [[10, 4, 6], [0, 13, -13], [0, 6, -6], [4, 3.5, 0.5], [4, 1, 3]]
EXPECTED_PRED = [0, 1, 1, 0, 0]
EXPECTED_GT = [[2.0, 0.0], [0.5, 6.0], [0.0, 0.0], [1.5, -3.0], [np.nan, np.nan]]
EXPECTED_PRED_ALPHA = [[4.0, 0.0], [0.5, 6.0], [1.0, 4.0], [3.0, -1.0], [4.0, 0.0]]


def _loader(batch_size: int, with_indices: bool = True) -> DataLoader:
    tensors = (
        (IMAGES, LABELS, torch.arange(len(LABELS)) + 100) if with_indices else (IMAGES, LABELS)
    )
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=False)


@pytest.fixture
def hand_cut():
    return cut_at_layer(HandSet(), "conv")


def test_hand_set_values_exact(hand_cut):
    result = extract(hand_cut, _loader(batch_size=2), progress=False)
    assert isinstance(result, ExtractionResult)
    np.testing.assert_allclose(result.features, EXPECTED_Z, atol=1e-6)
    np.testing.assert_allclose(result.logits, EXPECTED_LOGITS, atol=1e-6)
    assert result.predicted.tolist() == EXPECTED_PRED
    assert result.labels.tolist() == LABELS.tolist()
    assert result.indices.tolist() == [100, 101, 102, 103, 104]
    np.testing.assert_allclose(result.importance_gt, EXPECTED_GT, atol=1e-6)
    np.testing.assert_allclose(result.importance_pred, EXPECTED_PRED_ALPHA, atol=1e-6)
    assert result.importance_gt.dtype == np.float32 and result.features.dtype == np.float32
    assert result.predicted.dtype == np.int64


def test_sum_over_positions_not_mean(hand_cut):
    """Image 1 for class 2: every position of channel 0 is active, d y / d A_0p = 0.5 each."""
    result = extract(hand_cut, _loader(batch_size=5), progress=False)
    h, w = 2, 2
    grad_per_position = 0.5
    assert result.importance_gt[0, 0] == pytest.approx(grad_per_position * h * w)
    assert result.importance_gt[0, 0] != pytest.approx(grad_per_position)  # the Grad-CAM mean


def test_ragged_batches_give_n_rows(hand_cut):
    for batch_size in (1, 2, 3, 5):
        result = extract(hand_cut, _loader(batch_size), progress=False)
        assert result.importance_gt.shape == (5, 2)
        assert result.features.shape == (5, 2) and result.logits.shape == (5, 3)
        np.testing.assert_allclose(result.importance_pred, EXPECTED_PRED_ALPHA, atol=1e-6)


def test_loader_without_indices_numbers_rows(hand_cut):
    result = extract(hand_cut, _loader(batch_size=2, with_indices=False), progress=False)
    assert result.indices.tolist() == [0, 1, 2, 3, 4]


def test_target_choices(hand_cut):
    gt_only = extract(hand_cut, _loader(2), targets="gt", progress=False)
    assert gt_only.importance_pred is None
    np.testing.assert_allclose(gt_only.importance_gt, EXPECTED_GT, atol=1e-6)
    pred_only = extract(hand_cut, _loader(2), targets="pred", progress=False)
    assert pred_only.importance_gt is None
    np.testing.assert_allclose(pred_only.importance_pred, EXPECTED_PRED_ALPHA, atol=1e-6)
    with pytest.raises(InputError, match="targets"):
        extract(hand_cut, _loader(2), targets="all", progress=False)


def test_batch_of_only_unknown_labels_is_nan(hand_cut):
    loader = DataLoader(TensorDataset(IMAGES[:2], torch.tensor([-1, 7])), batch_size=2)
    result = extract(hand_cut, loader, progress=False)
    assert np.isnan(result.importance_gt).all()
    np.testing.assert_allclose(result.importance_pred, EXPECTED_PRED_ALPHA[:2], atol=1e-6)


def test_batched_equals_one_at_a_time_on_small_cnn():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 6)
    cut = cut_at_layer(model, "block3")
    x = torch.randn(7, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0])
    data = TensorDataset(x, y, torch.arange(7))
    batched = extract(cut, DataLoader(data, batch_size=4), progress=False)
    single = extract(cut, DataLoader(data, batch_size=1), progress=False)
    np.testing.assert_allclose(batched.importance_gt, single.importance_gt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        batched.importance_pred, single.importance_pred, rtol=1e-5, atol=1e-6
    )
    # Reference: the plain autograd gradient of one image's logit w.r.t. its activations.
    model.eval()
    for i in (0, 5):
        with torch.no_grad():
            a = cut.stem(x[i : i + 1])
        a.requires_grad_(True)
        logit = cut.classifier(cut.head(a.clone()))[0, y[i]]
        (grad,) = torch.autograd.grad(logit, a)
        np.testing.assert_allclose(
            batched.importance_gt[i], grad.sum(dim=(2, 3))[0].numpy(), rtol=1e-5, atol=1e-6
        )
    assert batched.importance_gt.shape == (7, 128)


def test_caller_state_untouched():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 4)
    model.train()
    model.block1[1].eval()  # a frozen BatchNorm in an otherwise training model
    model.block2[0].weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cut = cut_at_layer(model, "block3")
    loader = DataLoader(
        TensorDataset(torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0])), batch_size=2
    )
    extract(cut, loader, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats too
    assert cut.training


def test_bad_loader_items(hand_cut):
    loader = DataLoader(TensorDataset(IMAGES), batch_size=2)
    with pytest.raises(InputError, match="loader"):
        extract(hand_cut, loader, progress=False)


def test_batch_importances_direct(hand_cut):
    hand_cut.eval()
    for p in hand_cut.parameters():
        p.requires_grad_(False)
    alpha_gt, alpha_pred, z, logits = batch_importances(hand_cut, IMAGES[:4], LABELS[:4], pred=True)
    np.testing.assert_allclose(alpha_gt.numpy(), EXPECTED_GT[:4], atol=1e-6)
    np.testing.assert_allclose(alpha_pred.numpy(), EXPECTED_PRED_ALPHA[:4], atol=1e-6)
    np.testing.assert_allclose(z.numpy(), EXPECTED_Z[:4], atol=1e-6)
    assert not logits.requires_grad


def test_throughput_helpers_run():
    torch.manual_seed(0)
    cut = cut_at_layer(build_backbone("small_cnn", 3), "block3")
    loader = DataLoader(
        TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0] * 2)), batch_size=4
    )
    assert forward_throughput(cut, loader, "cpu") > 0
    assert extraction_throughput(cut, loader, "cpu", max_batches=1) > 0
    assert all(p.grad is None for p in cut.parameters())


def test_channel_and_importance_columns():
    assert channel_columns(3) == ["k_0000", "k_0001", "k_0002"]
    assert channel_columns(0) == []
    table = pd.DataFrame(columns=["class_id", "k_0001", "name", "k_0000", "seen"])
    assert importance_columns(table) == ["k_0001", "k_0000"]  # the table's order


def test_importance_tables_by_hand():
    outputs = {
        "image_id": torch.tensor([5, 3, 8, 1, 9]),
        "importance_gt": torch.tensor(
            [[1.0, 2.0], [3.0, 4.0], [float("nan")] * 2, [5.0, 6.0], [7.0, 8.0]]
        ),
    }
    images = pd.DataFrame(
        {
            "image_id": [1, 3, 5, 8, 9],
            "class_id": [7, 7, 2, 2, 7],
            "split": ["trainval", "trainval", "trainval", "trainval", "test_seen"],
        }
    )
    per_image, per_class = importance_tables(outputs, images)
    # image 8 has no importance (NaN: a class the classifier lacks), image 9 is a test image
    expected = pd.DataFrame(
        {
            "image_id": np.array([5, 3, 1], dtype=np.int64),
            "class_id": np.array([2, 7, 7], dtype=np.int64),
            "k_0000": np.array([1.0, 3.0, 5.0], dtype=np.float32),
            "k_0001": np.array([2.0, 4.0, 6.0], dtype=np.float32),
        }
    )
    pd.testing.assert_frame_equal(per_image, expected)
    # class 2: image 5 alone; class 7: the mean of images 3 and 1 (means in float64)
    expected_class = pd.DataFrame(
        {
            "class_id": np.array([2, 7], dtype=np.int64),
            "n_images": np.array([1, 2], dtype=np.int64),
            "k_0000": [1.0, 4.0],
            "k_0001": [2.0, 5.0],
        }
    )
    pd.testing.assert_frame_equal(per_class, expected_class)
    with pytest.raises(KeyError):
        importance_tables({**outputs, "image_id": torch.tensor([5, 3, 8, 1, 42])}, images)
