"""Predict throughput: the packaged classifier vs the backbone's forward-only inference.

    .venv/bin/python benchmarks/predict.py [--images 128] [--batch-size 32] [--rounds 2]
                                           [--threads 1] [--out docs/benchmark_predict.md]

Both read the same JPEG files (500 x 375 px, the size of a CUB photo) with the same
decoding and preprocessing, in batches of the same size, on the same thread count:

* **forward only**: ``ImageTableDataset`` + ``DataLoader`` + ``model(x)`` under ``no_grad``;
* **predict**: ``ZeroShotClassifier.predict(paths)`` (per-file error handling, scores over
  every class, calibrated stacking, softmax, top-k table), without and with the textual
  explanation of the top class (one input-gradient backward pass through the head per batch).

Each timing is the best of ``--rounds`` interleaved rounds; the report gives images/s and
the ratio to forward-only measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import Section, interleaved_best, load1, machine_lines, now, timed_section
from PIL import Image

from niwt_pipeline.core.backbones import BackboneSpec, build_backbone, default_layer
from niwt_pipeline.core.backbones.zoo import preprocessing
from niwt_pipeline.core.classifier import ZeroShotClassifier
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.mapper import InverseMap
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.trained import TrainedBackbone

REPO = Path(__file__).resolve().parents[1]
CASES = (("efficientnet_lite0", 224, 150, 50), ("small_cnn", 64, 30, 10))  # arch, px, seen, unseen


def _photos(folder: Path, n: int) -> list[str]:
    """``n`` JPEG files of 500 x 375 px with smooth random content (seeded)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        low = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((500, 375), Image.Resampling.BICUBIC)
        paths.append(str(folder / f"photo_{i:04d}.jpg"))
        image.save(paths[-1], quality=90)
    return paths


def _classifier(arch: str, size: int, n_seen: int, n_unseen: int) -> ZeroShotClassifier:
    torch.manual_seed(0)
    model = build_backbone(arch, num_classes=n_seen, weights=None)
    _, mean, std = preprocessing(arch)
    spec = BackboneSpec(
        arch=arch,
        layer=default_layer(arch),
        image_size=size,
        mean=list(mean),
        std=list(std),
        seen_class_ids=list(range(n_seen)),
        crop_fraction=0.875 if arch != "small_cnn" else 1.0,
    )
    backbone = TrainedBackbone(spec, model.state_dict())
    seen = backbone.seen_rows()
    n = n_seen + n_unseen
    rng = np.random.default_rng(1)
    weight = np.vstack([seen.weight, rng.normal(0, 0.05, (n_unseen, seen.dim))])
    bias = np.concatenate([seen.bias, np.zeros(n_unseen)])
    k = backbone.cut.stem(torch.zeros(1, 3, size, size)).shape[1]
    dims = 32
    inverse = InverseMap(
        torch.zeros(k, dtype=torch.float64),
        torch.ones(k, dtype=torch.float64),
        torch.as_tensor(rng.normal(size=(k, dims))),
        torch.zeros(dims, dtype=torch.float64),
    )
    return ZeroShotClassifier(
        backbone=backbone,
        rows=ClassRows("niwt_tuned", np.arange(n), weight, bias),
        class_names=[f"class_{c:03d}" for c in range(n)],
        seen=np.arange(n) < n_seen,
        gamma=0.5,
        inverse=inverse,
        dimension_names=[f"attribute_{a}" for a in range(dims)],
    )


def _forward_only(classifier: ZeroShotClassifier, paths: list[str], batch: int) -> float:
    import pandas as pd

    table = pd.DataFrame({"path": paths})
    loader = image_loader(
        table, classifier.backbone.spec, batch_size=batch, labels=np.zeros(len(paths))
    )
    model = classifier.backbone.model
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _, _ in loader:
            model(x)
    return time.perf_counter() - t0


def _predict(classifier: ZeroShotClassifier, paths: list[str], batch: int, explain: bool) -> float:
    t0 = time.perf_counter()
    frame = classifier.predict(paths, batch_size=batch, explain=explain)
    seconds = time.perf_counter() - t0
    assert (frame["error"] == "").all() and len(frame) == len(paths)
    return seconds


def run(section: Section, *, n_images: int, batch: int, rounds: int) -> None:
    """Time forward-only inference and ``predict`` side by side for each case."""
    section.add(
        f"{n_images} JPEG files of 500 x 375 px, batches of {batch}, best of {rounds} "
        "interleaved rounds. *Forward only*: decoding, preprocessing and `model(x)` under "
        "`no_grad`. *predict*: `ZeroShotClassifier.predict(paths)` (same decoding and "
        "preprocessing, scores over every class, calibrated stacking, softmax, the top-3 "
        "table), without and with the textual explanation of the top class.",
        "",
        "| model | input | classes | forward only (img/s) | predict (img/s) | ratio "
        "| predict + explanation (img/s) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = _photos(Path(tmp), n_images)
        for arch, size, n_seen, n_unseen in CASES:
            classifier = _classifier(arch, size, n_seen, n_unseen)
            best = interleaved_best(
                {
                    "forward": lambda c=classifier: _forward_only(c, paths, batch),
                    "predict": lambda c=classifier: _predict(c, paths, batch, False),
                    "explain": lambda c=classifier: _predict(c, paths, batch, True),
                },
                rounds=rounds,
                warmup=1,
            )
            rate = {name: n_images / seconds for name, seconds in best.items()}
            section.add(
                f"| {arch} | {size} px | {n_seen} seen + {n_unseen} unseen "
                f"| {rate['forward']:.1f} | {rate['predict']:.1f} "
                f"| {rate['predict'] / rate['forward']:.2f} | {rate['explain']:.1f} "
                f"| {rate['explain'] / rate['forward']:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start, date = load1(), now()
    section = timed_section(
        "Predict throughput",
        lambda s: run(s, n_images=args.images, batch=args.batch_size, rounds=args.rounds),
    )
    command = (
        f".venv/bin/python benchmarks/predict.py --images {args.images} "
        f"--batch-size {args.batch_size} --rounds {args.rounds} --threads {args.threads}"
    )
    lines = [
        "# Predict throughput (CPU)",
        "",
        f"Written by `{command}` on {date}.",
        "",
        *machine_lines(args.threads)[:2],
        f"- 1-minute load average: {load_start:.2f} at the start",
        "",
        section.markdown(),
    ]
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
