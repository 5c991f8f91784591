"""Grad-CAM for arbitrary rows on a tiny hand-set model with maps worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer
from niwt_pipeline.core.gradcam import gradcam, gradcam_weights, overlay, row_gradients
from niwt_pipeline.core.importance import extract

torch.set_num_threads(1)


class HandSet(nn.Module):
    """x: (B, 1, 2, 2) -> conv 1x1 [+1, -1] = A -> ReLU -> sum over positions -> fc1 -> ReLU.

    With s_m = sum_p relu(A_mp), u = W1 s + b1, z = relu(u), the score of a row w is z . w
    and its gradient at position p of channel m is

        d(z . w)/dA_mp = c_m [A_mp > 0],   c_m = sum_j w_j [u_j > 0] W1_jm,

    so beta_m = c_m * #{p: A_mp > 0} / 4.  A BatchNorm1d with eps = 0 and identity running
    statistics sits before the classifier: the identity in eval mode, an error in train
    mode, so the exact values also show that Grad-CAM ran the (train-mode) model in eval.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(2, 2)
        self.relu1 = nn.ReLU()
        self.bn = nn.BatchNorm1d(2, affine=False, eps=0.0)
        self.fc = nn.Linear(2, 3, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, -1.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
            self.fc.bias.copy_(torch.tensor([5.0, -3.0, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv(x))
        return self.fc(self.bn(self.relu1(self.fc1(a.sum(dim=(2, 3))))))


# x1: A0 = x1 > 0 everywhere, A1 < 0 everywhere; s = (10, 0), u = (10, 4), both active.
# x2: A0 > 0 only at (1, 1), A1 > 0 at the other three; s = (4, 6), u = (-2, 13).
X1 = [[1.0, 2.0], [3.0, 4.0]]
X2 = [[-1.0, -2.0], [-3.0, 4.0]]
IMAGES = torch.tensor([X1, X2, X2, X2]).unsqueeze(1)
ROWS = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0], [1.0, 0.0]])
# image 1, row (0, 1): c = (0.5, 2); beta = (0.5, 0)           -> cam 0.5 * A0
# image 2, row (0, 1): c = (0.5, 2); beta = (0.125, 1.5)       -> [[1.375, 2.75], [4.125, -5.5]]
# image 2, row (2, -1): c = (-0.5, -2); beta = (-0.125, -1.5)  -> the negative of that
# image 2, row (1, 0): c = (0, 0) (u_0 <= 0)                   -> all zero
EXPECTED_BETA = [[0.5, 0.0], [0.125, 1.5], [-0.125, -1.5], [0.0, 0.0]]
EXPECTED_CAM = [
    [[0.25, 0.5], [0.75, 1.0]],
    [[1 / 3, 2 / 3], [1.0, 0.0]],
    [[0.0, 0.0], [0.0, 1.0]],
    [[0.0, 0.0], [0.0, 0.0]],
]


@pytest.fixture
def cut():
    return cut_at_layer(HandSet().train(), "conv")


def test_hand_set_weights_and_maps_exact(cut):
    activations, beta = gradcam_weights(cut, IMAGES, ROWS)
    assert activations.shape == (4, 2, 2, 2)
    torch.testing.assert_close(beta, torch.tensor(EXPECTED_BETA))
    cam = gradcam(cut, IMAGES, ROWS, upsample_to=None)
    torch.testing.assert_close(cam, torch.tensor(EXPECTED_CAM))
    assert cam.dtype == torch.float32


def test_upsampling_is_bilinear_before_normalising(cut):
    cam = gradcam(cut, IMAGES[:1], ROWS[:1], upsample_to=(4, 4))
    # raw 0.5 * A0 = [[0.5, 1], [1.5, 2]]; bilinear 2 -> 4 maps [a, b] to
    # [a, .75a + .25b, .25a + .75b, b] along each axis; the maximum stays 2.
    raw = torch.tensor([[0.5, 1.0], [1.5, 2.0]])
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    torch.testing.assert_close(cam[0], weights @ raw @ weights.T / 2.0)
    assert gradcam(cut, IMAGES[:1], ROWS[:1]).shape == (1, 2, 2)  # "input": (H, W) = (2, 2)


def test_single_row_broadcasts_and_batch_equals_one_at_a_time():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", num_classes=5).train()
    cut = cut_at_layer(model, "block3")
    x = torch.randn(4, 3, 32, 32)
    rows = torch.randn(4, 128)
    batch = gradcam(cut, x, rows)
    single = torch.cat([gradcam(cut, x[i : i + 1], rows[i]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)
    assert batch.shape == (4, 32, 32)
    assert float(batch.min()) >= 0.0
    assert set(batch.amax(dim=(1, 2)).tolist()) <= {0.0, 1.0}  # 0: no positive evidence
    torch.testing.assert_close(gradcam(cut, x, rows[0]), gradcam(cut, x, rows[0].expand(4, -1)))


def test_weights_are_importance_over_positions_for_a_seen_row():
    torch.manual_seed(1)
    model = build_backbone("small_cnn", num_classes=5).eval()
    cut = cut_at_layer(model, "block3")
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    loader = DataLoader(TensorDataset(x, labels), batch_size=3)
    importance = extract(cut, loader, targets="gt", progress=False).importance_gt
    activations, beta = gradcam_weights(cut, x, cut.classifier.weight[labels].detach())
    h, w = activations.shape[2:]
    torch.testing.assert_close(beta, torch.from_numpy(importance) / (h * w), rtol=1e-5, atol=1e-7)


def _hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in module.modules()
    )


def test_caller_state_untouched_and_no_hooks():
    torch.manual_seed(2)
    model = build_backbone("small_cnn", num_classes=4).train()
    model.block1.eval()  # mixed modes must come back as they were
    model.fc1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    cut = cut_at_layer(model, "block3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    rows = torch.randn(2, 128, requires_grad=True)
    hooks = _hooks(model)

    gradcam(cut, x, rows)
    row_gradients(cut, x, rows)

    assert [m.training for m in model.modules()] == modes
    assert not model.fc1.weight.requires_grad and model.fc.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert x.grad is None and rows.grad is None
    assert _hooks(model) == hooks == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm running stats included


def test_bad_shapes_name_them(cut):
    with pytest.raises(ValueError, match=r"rows: expected \(4, 2\) or \(2,\).*got \(3, 2\)"):
        gradcam(cut, IMAGES, ROWS[:3])
    with pytest.raises(ValueError, match=r"x: expected images.*\(1, 2, 2\)"):
        gradcam(cut, IMAGES[0], ROWS)
    with pytest.raises(ValueError, match="upsample_to"):
        gradcam(cut, IMAGES, ROWS, upsample_to=(0, 3))
    with pytest.raises(ValueError, match="upsample_to"):
        gradcam(cut, IMAGES, ROWS, upsample_to="output")  # type: ignore[arg-type]


def test_overlay_blends_jet_colours():
    image = Image.new("L", (4, 2), 0)  # grayscale input is converted to RGB
    cam = np.zeros((2, 4))
    cam[0, 0] = 1.0
    out = overlay(image, cam, alpha=1.0)
    assert out.mode == "RGB" and out.size == (4, 2)
    pixels = np.asarray(out)
    assert tuple(pixels[0, 0]) == (128, 0, 0)  # jet(1) is dark red
    assert tuple(pixels[1, 3]) == (0, 0, 128)  # jet(0) is dark blue
    half = overlay(Image.new("RGB", (4, 2), (200, 200, 200)), cam, alpha=0.0)
    assert np.all(np.asarray(half) == 200)


def test_overlay_resizes_cam_and_validates():
    image = Image.new("RGB", (8, 6), (255, 255, 255))
    out = overlay(image, torch.ones(3, 4), alpha=0.5)
    assert out.size == (8, 6)
    assert tuple(np.asarray(out)[3, 4]) == (191, 128, 128)  # (white + dark red) / 2
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, np.ones((3, 4)), alpha=1.5)
    with pytest.raises(ValueError, match=r"cam: expected a \(h, w\) map"):
        overlay(image, np.ones((1, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        overlay(image, np.full((3, 4), np.nan))
