"""Extraction and weight-transfer timings on ResNet-101 at 224 px (for a GPU machine).

    python benchmarks/gpu_resnet101.py [--device auto] [--images 512] [--batch-size 64]

Random inputs and a random 150-class ResNet-101 (no download): the timings depend on the
shapes, not on the weights.  Prints, as markdown:
  - forward-only vs importance-extraction throughput (images/s) and their ratio, at
    ``layer4.0`` (2048 channels, 7x7);
  - weight transfer for 50 unseen rows: per-step time of the precomputed-G path, of the
    cached-activation head path and of the naive whole-network loop, with the max weight
    difference between them (the paths are exact rewrites of one another; TF32 is turned
    off so that float32 rounding is the only difference).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer
from niwt_pipeline.core.importance import extraction_throughput, forward_throughput
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.transfer import (
    TransferConfig,
    reference_gram,
    transfer_rows,
    transfer_rows_naive,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reference-images", type=int, default=256)
    parser.add_argument("--unseen", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=16)
    args = parser.parse_args()
    device = resolve_device(args.device)
    # exact float32 everywhere, so the three transfer paths can be compared for equality
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")

    split = cut_at_layer(build_backbone("resnet101", num_classes=150), "layer4.0")
    split = split.to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 224, 224, generator=g)
    y = torch.randint(0, 150, (args.images,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
    forward_throughput(split, loader, device, max_batches=2)  # warm-up
    fwd = max(forward_throughput(split, loader, device) for _ in range(2))
    ext = max(extraction_throughput(split, loader, device) for _ in range(2))
    print(f"\n| ResNet-101 @224, batch {args.batch_size} | images/s |")
    print("|---|---|")
    print(f"| forward only | {fwd:.0f} |\n| extraction (gt + pred importance) | {ext:.0f} |")
    print(f"| ratio | {ext / fwd:.2f} |")

    xr = x[: args.reference_images].to(device)
    with torch.no_grad():
        acts = torch.cat([split.stem(b) for b in xr.split(args.batch_size)])
    _sync(device)
    t0 = time.perf_counter()
    gram = reference_gram(split.head, acts, batch_size=16)
    _sync(device)
    gram_seconds = time.perf_counter() - t0
    w, b = split.classifier.weight.detach(), split.classifier.bias.detach()
    target = torch.rand(args.unseen, acts.shape[1], generator=g).to(device)
    config = TransferConfig(
        lr=0.01,
        lam=0.0,
        max_steps=args.steps,
        patience=args.steps + 1,
        chunk_size=args.chunk_size,  # images per backward in the head and naive paths
        progress=False,
    )
    results = {}
    for label, kwargs in (
        ("gram", {"gram": gram}),
        ("head", {"head": split.head, "activations": acts}),
    ):
        cfg = dataclasses.replace(config, method=label)
        _sync(device)
        t0 = time.perf_counter()
        results[label] = transfer_rows(target, w, b, cfg, **kwargs)
        _sync(device)
        results[label].timings["wall"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results["naive"] = transfer_rows_naive(
        target, split.stem, split.head, split.classifier, xr, config=config
    )
    _sync(device)
    results["naive"].timings["wall"] = time.perf_counter() - t0
    ls_config = TransferConfig(solver="least_squares", ls_alpha=1e-3, progress=False)
    _sync(device)
    t0 = time.perf_counter()
    least_squares = transfer_rows(target, w, b, ls_config, gram=gram)
    _sync(device)
    ls_seconds = time.perf_counter() - t0
    print(f"\nG for {args.reference_images} images ({tuple(gram.shape)}): {gram_seconds:.1f} s")
    print(
        f"\nleast-squares solver, {args.unseen} rows from G (moments, solve and loss): "
        f"{ls_seconds:.2f} s; mean cosine loss {least_squares.best_loss:.4f} vs "
        f"{results['gram'].best_loss:.4f} after {args.steps} Adam steps"
    )
    print(f"\n| transfer, {args.unseen} rows, {args.steps} steps | s/step | max |w - w_naive| |")
    print("|---|---|---|")
    for label, r in results.items():
        diff = (r.weight - results["naive"].weight).abs().max().item()
        print(f"| {label} | {r.timings['wall'] / args.steps:.4f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
