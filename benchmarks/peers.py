"""Benchmark 1: per-channel importances by the project vs Captum, pytorch-grad-cam and a naive loop.

Every method gets the same random-init model (eval mode), the same fixed random batch and the
same per-image target classes, and must return the same importances

    alpha_k = sum over positions (u, v) of d logit_c / d A_{k, u, v}

(Grad-CAM's channel weights are the *mean* over positions, i.e. ``alpha / (h * w)``).  The
results are compared with ``torch.allclose`` and the benchmark raises when they differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from captum.attr import LayerGradCam, LayerGradientXActivation
from common import Section, interleaved_best, table, wall
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer, default_layer
from niwt_pipeline.core.importance import extract, extraction_throughput, forward_throughput

logger = logging.getLogger(__name__)

RTOL = 1e-4
ATOL_REL = 1e-5  # atol = ATOL_REL * max |alpha| of the project's result


@dataclass(frozen=True)
class Case:
    """One model: arch, image size (px), number of classes, batch size."""

    arch: str
    size: int
    n_classes: int
    batch: int


CASES = (Case("resnet18", 224, 100, 32), Case("small_cnn", 64, 40, 128))
QUICK_CASES = (Case("resnet18", 224, 100, 8), Case("small_cnn", 64, 40, 64))


class _WeightsGradCAM(GradCAM):
    """pytorch-grad-cam's ``GradCAM`` that also keeps the channel weights it computes."""

    last_weights = None

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):  # noqa: ANN001, ANN201
        weights = super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        self.last_weights = weights  # (B, K) numpy: mean of the gradient over positions
        return weights


def naive_backward(model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """``.backward()`` of the summed target logits into every parameter's ``.grad``.

    Returns ``(alpha (B, K), A (B, K, h, w))``; the layer output is kept with ``retain_grad``.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        model.zero_grad(set_to_none=True)
        logits = model(x)
        logits.gather(1, y.view(-1, 1)).sum().backward()
        a = store["a"]
        return a.grad.sum((2, 3)), a.detach()
    finally:
        handle.remove()


def _check(name: str, got: torch.Tensor, ref: torch.Tensor) -> tuple[float, bool]:
    atol = ATOL_REL * ref.abs().max().item()
    diff = (got - ref).abs().max().item()
    ok = torch.allclose(got, ref, rtol=RTOL, atol=atol)
    if not ok:
        raise AssertionError(
            f"{name}: importances differ from the project's (max abs diff {diff:.3e}, "
            f"rtol {RTOL}, atol {atol:.3e})"
        )
    return diff, ok


def run_case(case: Case, rounds: int) -> list[str]:
    """Check every method against the project's importances, time them; markdown lines."""
    torch.manual_seed(0)
    model = build_backbone(case.arch, num_classes=case.n_classes).eval()
    layer_name = default_layer(case.arch)
    layer = model.get_submodule(layer_name)
    mod = f"model.{layer_name}"
    split = cut_at_layer(model, layer_name).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, 3, case.size, case.size, generator=g)
    y = torch.randint(0, case.n_classes, (case.batch,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=case.batch)

    # The project's path: values from the public extract() (also the warm-up of the split).
    ours = torch.from_numpy(extract(split, loader, targets="gt", progress=False).importance_gt)
    with torch.no_grad():
        acts = split.stem(x)
    h, w = acts.shape[2:]
    k = acts.shape[1]
    n = case.batch

    lgxa = LayerGradientXActivation(model, layer, multiply_by_inputs=False)
    lgc = LayerGradCam(model, layer)

    def gradcam_targets() -> list[ClassifierOutputTarget]:
        return [ClassifierOutputTarget(int(c)) for c in y]

    with _WeightsGradCAM(model=model, target_layers=[layer]) as gradcam:
        # Each peer's first call gives the values to check and is its untimed warm-up.
        checks = {
            "captum_lgxa": _check(
                "captum LayerGradientXActivation",
                lgxa.attribute(x, target=y).sum((2, 3)).detach(),
                ours,
            ),
            # LayerGradCam without the channel sum is mean_uv(dlogit/dA_k) * A_k.
            "captum_lgc": _check(
                "captum LayerGradCam",
                lgc.attribute(x, target=y, attr_dim_summation=False).detach() * (h * w),
                ours[:, :, None, None] * acts,
            ),
        }
        gradcam(input_tensor=x, targets=gradcam_targets())
        checks["gradcam"] = _check(
            "pytorch-grad-cam GradCAM", torch.from_numpy(gradcam.last_weights) * (h * w), ours
        )
        checks["naive"] = _check("naive backward", naive_backward(model, layer, x, y)[0], ours)
        best = interleaved_best(
            {
                "forward": lambda: n / forward_throughput(split, loader, "cpu"),
                "project": lambda: n / extraction_throughput(split, loader, "cpu", targets="gt"),
                "project_both": lambda: n / extraction_throughput(split, loader, "cpu"),
                "captum_lgxa": lambda: wall(lambda: lgxa.attribute(x, target=y)),
                "captum_lgc": lambda: wall(
                    lambda: lgc.attribute(x, target=y, attr_dim_summation=False)
                ),
                "gradcam": lambda: wall(lambda: gradcam(input_tensor=x, targets=gradcam_targets())),
                "naive": lambda: wall(lambda: naive_backward(model, layer, x, y)),
            },
            rounds,
        )
    model.zero_grad(set_to_none=True)
    fwd, ext_gt, ext_both = (n / best[key] for key in ("forward", "project", "project_both"))
    described = {
        "captum_lgxa": (
            "Captum `LayerGradientXActivation`",
            f"`LayerGradientXActivation(model, {mod}, multiply_by_inputs=False)"
            ".attribute(x, target=y)` = dlogit/dA `(B, K, h, w)`, then `.sum((2, 3))`",
        ),
        "captum_lgc": (
            "Captum `LayerGradCam`",
            f"`LayerGradCam(model, {mod}).attribute(x, target=y, attr_dim_summation=False)` "
            "= mean_uv(dlogit/dA_k) * A_k; checked against (alpha / hw) * A",
        ),
        "gradcam": (
            "pytorch-grad-cam `GradCAM`",
            f"`GradCAM(model, [{mod}])(x, targets=[ClassifierOutputTarget(c) ...])`; "
            "`get_cam_weights` (mean gradient, `(B, K)`) * h * w; the time includes its "
            "CAM maps upsampled to the input size",
        ),
        "naive": (
            "naive `.backward()`",
            "forward hook with `A.retain_grad()`, `model.zero_grad()`, "
            "`logits.gather(1, y).sum().backward()` (fills every parameter's `.grad`), "
            "`A.grad.sum((2, 3))`",
        ),
    }
    results: list[tuple[str, str, float, float, bool]] = [
        (
            "**project** (`niwt_pipeline.core.importance`)",
            "`extract(split, loader, targets='gt')` for the values; "
            "`extraction_throughput(..., targets='gt')` for the time: stem under `no_grad`, "
            "one `torch.autograd.grad(sum_i logit[i, c_i], A)` through the head",
            ext_gt,
            0.0,
            True,
        )
    ]
    results += [(*described[key], n / best[key], *checks[key]) for key in described]

    base = results[0][2]
    lines = [
        f"### {case.arch} at `{layer_name}`: batch {case.batch} x 3 x {case.size} x {case.size},"
        f" {case.n_classes} classes, A = {k} x {h} x {w}",
        "",
        *table(
            ["method", "what is called", "images/s", "vs project", "max abs diff", "allclose"],
            [
                (
                    m,
                    what,
                    f"{ips:.1f}",
                    f"{ips / base:.2f}",
                    "(reference)" if i == 0 else f"{d:.1e}",
                    "(reference)" if i == 0 else "yes" if ok else "NO",
                )
                for i, (m, what, ips, d, ok) in enumerate(results)
            ],
        ),
        "",
        *table(
            ["project throughput (images/s)", "value", "ratio to forward"],
            [
                ("forward only (`forward_throughput`, `no_grad`)", f"{fwd:.1f}", "1.00"),
                (
                    "extraction, ground-truth target (`targets='gt'`)",
                    f"{ext_gt:.1f}",
                    f"{ext_gt / fwd:.2f}",
                ),
                (
                    "extraction, ground-truth + predicted (`'gt_and_pred'`, the pipeline's)",
                    f"{ext_both:.1f}",
                    f"{ext_both / fwd:.2f}",
                ),
            ],
        ),
        "",
    ]
    return lines


def run(section: Section, *, rounds: int, quick: bool = False) -> None:
    """Fill ``section`` with one table pair per model (smaller batches when ``quick``)."""
    section.add(
        "Same model (random init, `build_backbone(arch, num_classes)`, eval mode), same fixed "
        "random batch (`torch.randn`, seed 0) and the same per-image target classes for every "
        "method. Each method's importances are compared with the project's by "
        f"`torch.allclose(rtol={RTOL}, atol={ATOL_REL} * max|alpha|)`; the suite stops with an "
        "error when they differ. Grad-CAM's channel weights are the mean of the gradient over "
        "the h x w positions; they are multiplied by h * w to give the sum. "
        f"Images/s: best of {rounds} timed round(s), the methods interleaved within each round "
        "(so that a change in the machine's load affects them alike); each method's first "
        "(checked) call is its untimed warm-up.",
        "",
        "The project and Captum both take `torch.autograd.grad` with respect to the layer "
        "output only, so neither backpropagates into the stem; the project also runs the stem "
        "under `no_grad` with the parameters' `requires_grad` off, so no graph is recorded "
        "there. pytorch-grad-cam and the naive loop call `.backward()`, which goes through the "
        "whole network and fills every parameter's `.grad`.",
        "",
    )
    for case in QUICK_CASES if quick else CASES:
        section.add(*run_case(case, rounds))
