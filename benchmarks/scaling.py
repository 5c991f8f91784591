"""Benchmark 3: importance-extraction time vs the number of images and vs the image size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from common import Section, interleaved_best, r_squared, table, wall
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer, default_layer
from niwt_pipeline.core.importance import extract

LINEAR_R2 = 0.99
MAX_UNIT_CHANGE = 0.20


def _loader(n: int, size: int, n_classes: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(n + size)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _change(times: Sequence[float], units: Sequence[float]) -> float:
    """Relative change of the time per unit from the first to the last point."""
    return (times[-1] / units[-1]) / (times[0] / units[0]) - 1.0


def _verdict(r2: float, change: float, unit: str) -> str:
    """Linear when the fit is good *and* the cost per unit stays within +-20%."""
    trend = f"the time per {unit} changes by {100 * change:+.0f}% from the first to the last row"
    if r2 < LINEAR_R2:
        return f"not linear: {trend}"
    if abs(change) <= MAX_UNIT_CHANGE:
        return f"linear: {trend}"
    kind = "super-linear" if change > 0 else "sub-linear"
    return f"close to linear by R^2 but mildly {kind}: {trend}"


def run(
    section: Section,
    *,
    counts: Sequence[int],
    sizes: Sequence[int],
    rounds: int,
    arch: str = "small_cnn",
    n_classes: int = 40,
    batch: int = 64,
    fixed_size: int = 64,
    fixed_count: int = 128,
) -> None:
    """Time ``extract`` for each count (at ``fixed_size``) and each size (at ``fixed_count``)."""
    torch.manual_seed(0)
    split = cut_at_layer(build_backbone(arch, num_classes=n_classes), default_layer(arch)).eval()
    n_cls = split.classifier.out_features
    loaders = {("n", n): _loader(n, fixed_size, n_cls, batch) for n in counts}
    loaders |= {("px", px): _loader(fixed_count, px, n_cls, batch) for px in sizes}

    def timer(loader: DataLoader) -> Callable[[], float]:
        return lambda: wall(lambda: extract(split, loader, targets="gt_and_pred", progress=False))

    best = interleaved_best({key: timer(ld) for key, ld in loaders.items()}, rounds, warmup=1)
    by_count = [best[("n", n)] for n in counts]
    _, slope_n, r2_n = r_squared([float(n) for n in counts], by_count)
    by_size = [best[("px", px)] for px in sizes]
    pixels = [float(s * s) for s in sizes]
    _, slope_px, r2_px = r_squared(pixels, by_size)
    section.add(
        f"{arch} (random init) at `{split.layer}`, `extract(split, loader, "
        f"targets='gt_and_pred')` as the pipeline calls it (batch {batch}, "
        f"DataLoader over an in-memory tensor, outputs written to numpy); best of {rounds} "
        "timed round(s) after one warm-up round, the cases interleaved within each round. "
        f"Linear fits by least squares; called linear when R^2 >= {LINEAR_R2} and the time per "
        f"unit (image, or pixel) changes by at most {MAX_UNIT_CHANGE:.0%} across the rows.",
        "",
        f"**Number of images** at {fixed_size} px:",
        "",
        *table(
            ["images", "time (s)", "s/image", "images/s"],
            [
                (n, f"{t:.3f}", f"{t / n * 1e3:.2f} ms", f"{n / t:.0f}")
                for n, t in zip(counts, by_count, strict=True)
            ],
        ),
        "",
        f"Fit time = a + b * images: b = {slope_n * 1e3:.2f} ms/image, R^2 = {r2_n:.4f}. "
        f"In the number of images: {_verdict(r2_n, _change(by_count, counts), 'image')}.",
        "",
        f"**Image size** at {fixed_count} images:",
        "",
        *table(
            ["size (px)", "pixels", "time (s)", "s/image", "ms per image per kilopixel"],
            [
                (
                    s,
                    s * s,
                    f"{t:.3f}",
                    f"{t / fixed_count * 1e3:.2f} ms",
                    f"{t / fixed_count / (s * s / 1e3) * 1e3:.2f}",
                )
                for s, t in zip(sizes, by_size, strict=True)
            ],
        ),
        "",
        f"Fit time = a + b * pixels: b = {slope_px / fixed_count * 1e6:.2f} us per pixel per "
        f"image, R^2 = {r2_px:.4f}. In the pixel count (the square of the side): "
        f"{_verdict(r2_px, _change(by_size, pixels), 'pixel')}.",
    )
