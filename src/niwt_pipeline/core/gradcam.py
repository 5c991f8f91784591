"""Grad-CAM at the importance layer for arbitrary classifier rows, and heat-map overlays.

For an image ``x`` with activations ``A = stem(x): (K, h, w)`` and penultimate features
``z = head(A): (D,)``, the score of a classifier row ``w: (D,)`` is ``z . w`` (a bias does
not change any gradient).  Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel by
the **mean** over positions of the score's gradient::

    beta_k = (1 / (h w)) sum_{u, v} d (z . w) / d A_{k, u, v}
    cam    = ReLU(sum_k beta_k A_k)

NIWT's importance (:mod:`niwt_pipeline.core.importance`) is the **sum** over positions,
``alpha_k = h w beta_k``; for a seen row ``w_c`` it equals the importance of class ``c``.
Because only the row enters, new (unseen) rows get maps exactly like the model's own
classes.

Gradients come from one ``torch.autograd.grad`` call on ``A`` per batch (no hooks, no
``.backward()``): the model runs in eval mode with its parameters frozen, and the caller's
per-module modes, ``requires_grad`` flags and ``.grad`` fields are left as they were.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from niwt_pipeline.core.backbones.cut import CutModel
from niwt_pipeline.core.importance import _FrozenForExtraction, _model_device

UpsampleTo = tuple[int, int] | Literal["input"] | None


def _check_rows(x: torch.Tensor, rows: torch.Tensor, dim: int) -> torch.Tensor:
    """``rows`` as (B, D), broadcasting a single (D,) row over the batch."""
    if rows.ndim == 1:
        rows = rows.expand(x.shape[0], -1)
    if rows.ndim != 2 or rows.shape != (x.shape[0], dim):
        raise ValueError(
            f"rows: expected ({x.shape[0]}, {dim}) or ({dim},) for images of shape "
            f"{tuple(x.shape)} and features of width {dim}, got {tuple(rows.shape)}"
        )
    return rows


def row_gradients(
    cut: CutModel, x: torch.Tensor, rows: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations at the cut layer and the gradient of each image's row score there.

    Args:
        cut: the cut model (run in eval mode; the caller's state is restored).
        x: ``(B, 3, H, W)`` images (moved to the model's device).
        rows: ``(B, D)`` one classifier row per image, or ``(D,)`` one row for all images.

    Returns:
        ``(A, dA)``: both ``(B, K, h, w)``, detached, where ``dA[i] = d (z_i . rows_i) / d A_i``
        (each image's score depends only on its own activations, so one gradient of the
        batch's summed score holds every image's own gradient).

    Raises:
        ValueError: when ``x`` is not 4-d or ``rows`` does not fit the batch and ``D``.
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    rows_t = _check_rows(x, torch.as_tensor(rows), cut.classifier.in_features)
    x = x.to(_model_device(cut))
    with _FrozenForExtraction(cut):
        with torch.no_grad():
            activations = cut.stem(x)
        a = activations.detach().requires_grad_(True)
        with torch.enable_grad():
            # A non-leaf copy: an in-place first op of the head must not modify the leaf.
            z = cut.head(a.clone())
            w = rows_t.to(dtype=z.dtype, device=z.device)
            (grad,) = torch.autograd.grad((z * w).sum(), a)
    return activations.detach(), grad.detach()


def gradcam_weights(
    cut: CutModel, x: torch.Tensor, rows: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``A: (B, K, h, w)`` and Grad-CAM channel weights ``beta: (B, K)``.

    ``beta`` is the mean over positions of :func:`row_gradients`' ``dA``, i.e. the NIWT
    importance of the row divided by ``h * w``.
    """
    activations, grad = row_gradients(cut, x, rows)
    return activations, grad.flatten(2).mean(2)


def gradcam(
    cut: CutModel,
    x: torch.Tensor,
    rows: torch.Tensor | np.ndarray,
    *,
    upsample_to: UpsampleTo = "input",
) -> torch.Tensor:
    """Grad-CAM maps of classifier rows at the cut layer, one per image.

    Args:
        cut: the cut model; its state is left as it was.
        x: ``(B, 3, H, W)`` images, preprocessed for the model.
        rows: ``(B, D)`` a row per image (e.g. the predicted class's row, seen or new), or
            ``(D,)`` one row for all images.
        upsample_to: ``"input"`` for ``(H, W)``, an ``(height, width)`` pair, or ``None``
            for the layer's own ``(h, w)``.  Bilinear (``align_corners=False``), applied
            before normalising.

    Returns:
        ``(B, H', W')`` float32 maps in ``[0, 1]`` on the model's device: ``ReLU(sum_k
        beta_k A_k)`` divided by its per-image maximum (a map without positive evidence
        stays all zero; zero keeps meaning "no positive evidence", unlike min-max scaling).
    """
    activations, beta = gradcam_weights(cut, x, rows)
    cam = torch.relu(torch.einsum("bk,bkhw->bhw", beta, activations)).float()
    size = _target_size(upsample_to, x)
    if size is not None and size != tuple(cam.shape[1:]):
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / torch.where(peak > 0, peak, 1.0), 0.0)


def _target_size(upsample_to: UpsampleTo, x: torch.Tensor) -> tuple[int, int] | None:
    if upsample_to is None:
        return None
    if isinstance(upsample_to, str):
        if upsample_to != "input":
            raise ValueError(
                f"upsample_to: expected 'input', (height, width) or None, got {upsample_to!r}"
            )
        return int(x.shape[2]), int(x.shape[3])
    size = tuple(int(s) for s in upsample_to)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"upsample_to: expected two positive sizes, got {upsample_to!r}")
    return size  # type: ignore[return-value]


def overlay(image: Image.Image, cam: np.ndarray | torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """Blend a jet-coloured map over an image.

    Args:
        image: any ``PIL.Image`` (converted to RGB).
        cam: ``(h, w)`` values in ``[0, 1]`` (clipped); resized bilinearly to the image's
            size when it differs.
        alpha: weight of the heat map: ``out = (1 - alpha) image + alpha jet(cam)``.

    Returns:
        A new RGB image of the input's size.

    Raises:
        ValueError: when ``cam`` is not 2-d or not finite, or ``alpha`` is outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    values = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if values.ndim != 2:
        raise ValueError(f"cam: expected a (h, w) map, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("cam: contains NaN or infinite values")
    rgb = image.convert("RGB")
    heat = Image.fromarray(np.clip(values, 0.0, 1.0).astype(np.float32))
    if heat.size != rgb.size:
        heat = heat.resize(rgb.size, Image.Resampling.BILINEAR)
    coloured = colormaps["jet"](np.clip(np.asarray(heat), 0.0, 1.0))[..., :3]
    base = np.asarray(rgb, dtype=np.float64) / 255.0
    blended = (1.0 - alpha) * base + alpha * coloured
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))
