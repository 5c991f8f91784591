"""Importance extraction vs forward-only inference, on the same model, batch and inputs.

    .venv/bin/python benchmarks/throughput.py [--device cpu|cuda|auto] [--threads 1]

For each (arch, image size, layer) it times a forward-only pass and a full extraction pass
(forward + one input-gradient backward per target set, importance of the true and of the
predicted class) over the same random batches, and prints images/s and their ratio.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer, default_layer
from niwt_pipeline.core.importance import extraction_throughput, forward_throughput
from niwt_pipeline.core.training import resolve_device

CASES = (("small_cnn", 64, 40), ("resnet18", 224, 100), ("efficientnet_lite0", 224, 100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} thread(s), batch {args.batch_size}")
    print("| model | input | layer | forward (img/s) | extraction (img/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for arch, size, n_classes in CASES:
        model = build_backbone(arch, num_classes=n_classes)
        layer = default_layer(arch)
        split = cut_at_layer(model, layer).to(device).eval()
        n = args.batch_size * args.batches
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, size, size, generator=generator)
        y = torch.randint(0, n_classes, (n,), generator=generator)
        loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
        fwd = max(forward_throughput(split, loader, device) for _ in range(args.rounds))
        ext = max(extraction_throughput(split, loader, device) for _ in range(args.rounds))
        print(f"| {arch} | {size} px | {layer} | {fwd:.1f} | {ext:.1f} | {ext / fwd:.2f} |")


if __name__ == "__main__":
    main()
