"""How the frozen-trunk stages' time grows with the number of images, and what that
predicts for the full CUB-200-2011 and AWA2 on this machine.

    .venv/bin/python benchmarks/trunk_scale.py --data data/cub [--fractions 0.25 0.5 1.0]

``--data`` is the data folder of a finished frozen-trunk run on a dataset
(``kedro run --env=cub --params=...,backbone.trunk.frozen=true``): its canonical tables,
backbone recipe and packaged classifier are reused.  For each fraction a stratified, seeded
sample of every class's images (per split) goes through the stages whose work grows with the
number of images, each timed on its own with the library calls the pipeline makes: the
trunk's activations (fresh shards), training the head (the recipe's epochs), the head-only
extraction, and classifying the test images with the packaged classifier (network from the
pixels).  G of the reference images is capped by ``transfer.reference.max_images`` and is
timed once per fraction too.  A least-squares line ``seconds = a + b * images`` per stage
gives the extrapolation.  Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import load1, machine_lines, now, r_squared, table

from niwt_pipeline import load_classifier
from niwt_pipeline.core.extraction import ExtractionConfig, image_outputs
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trained import BackboneRecipe, fit_backbone, trunk_activations
from niwt_pipeline.core.training import TrainConfig
from niwt_pipeline.core.transfer.reference import ReferenceConfig, reference_cache
from niwt_pipeline.core.trunk import TrunkConfig

#: Images of the full datasets.
FULL = {"CUB-200-2011": 11788, "AWA2": 37322}


def sample(images: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """A stratified (class x split) seeded sample of ``fraction`` of the images."""
    if fraction >= 1.0:
        return images.reset_index(drop=True)
    parts = [
        group.sample(n=max(1, round(fraction * len(group))), random_state=seed)
        for _, group in images.groupby(["class_id", "split"], sort=True)
    ]
    return pd.concat(parts).sort_values("image_id").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a finished run's data folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data
    images = pd.read_parquet(data / "03_primary/images.parquet")
    classes = pd.read_parquet(data / "03_primary/classes.parquet")
    roles = pd.read_parquet(data / "03_primary/backbone_roles.parquet")
    report = json.loads((data / "08_reporting/backbone_report.json").read_text())
    spec = json.loads((data / "04_feature/backbone/spec.json").read_text())
    if report.get("trunk") != "frozen":
        sys.exit(
            f"{data}: not a frozen-trunk run (backbone_report.json says {report.get('trunk')})"
        )
    history = report["history"]
    recipe = BackboneRecipe(
        arch=spec["arch"],
        weights="imagenet",
        layer=spec["layer"],
        image_size=spec["image_size"],
        crop_fraction=spec["crop_fraction"],
        train=TrainConfig(
            epochs=len(history),
            lr=5e-4,
            weight_decay=1e-4,
            batch_size=32,
            lr_schedule="cosine",
            device="cpu",
        ),
        trunk=TrunkConfig(frozen=True, batch_size=64, device="cpu"),
    )
    classifier = load_classifier(data / "06_models/zero_shot_classifier")
    seen_ids = classes.loc[classes["seen"], "class_id"].astype(int).tolist()
    stages = [
        "trunk activations",
        "head training",
        "extraction (head)",
        "G (reference)",
        "predict (pixels)",
    ]
    rows, sizes, times = [], [], {s: [] for s in stages}
    load_start = load1()
    for fraction in args.fractions:
        part = sample(images, fraction)
        trainval = part[part["split"] == "trainval"].merge(roles, on="image_id")
        seen_tv = trainval[trainval["class_id"].isin(seen_ids)]
        test = part[part["split"] != "trainval"]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            trunk = trunk_activations(recipe, part, ShardStore(Path(tmp) / "trunk"))
            t1 = time.perf_counter()
            backbone, _ = fit_backbone(
                recipe,
                seen_ids,
                seen_tv[seen_tv["role"] == "train"],
                seen_tv[seen_tv["role"] == "holdout"],
                trunk=trunk,
            )
            t2 = time.perf_counter()
            image_outputs(
                backbone, part, ExtractionConfig(batch_size=32, device="cpu"), trunk=trunk
            )
            t3 = time.perf_counter()
            reference_cache(
                backbone, part, ReferenceConfig(max_images=256, batch_size=32), "cpu", trunk
            )
            t4 = time.perf_counter()
            classifier.predict(test["path"].tolist(), explain=False)
            t5 = time.perf_counter()
        seconds = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
        for stage, value in zip(stages, seconds, strict=True):
            times[stage].append(value)
        sizes.append(len(part))
        rows.append(
            [
                f"{fraction:.0%}",
                len(part),
                len(seen_tv),
                len(test),
                *[f"{v:.1f}" for v in seconds],
                f"{sum(seconds):.1f}",
            ]
        )
        print(
            f"fraction {fraction}: {len(part)} images, {[round(s, 1) for s in seconds]}",
            file=sys.stderr,
        )
    load_end = load1()
    out = [f"### Frozen-trunk stages vs the number of images ({now()})", ""]
    out += [
        f"`.venv/bin/python benchmarks/trunk_scale.py --data {data} --fractions "
        f"{' '.join(str(f) for f in args.fractions)} --threads {args.threads}`; load "
        f"{load_start:.2f} before, {load_end:.2f} after.",
        "",
    ]
    out += machine_lines(args.threads)[:2] + [""]
    out += table(
        ["sample", "images", "seen trainval", "test", *[f"{s} (s)" for s in stages], "sum (s)"],
        rows,
    )
    out += ["", "Linear fits `seconds = a + b * images` and the extrapolation (same machine):", ""]
    fit_rows = []
    for stage in stages:
        if stage == "G (reference)":  # capped at max_images reference images
            capped = times[stage][-1]
            fit_rows.append(
                [
                    stage,
                    "capped",
                    "0 (256 images at most)",
                    "-",
                    *[f"{capped / 60:.1f}" for _ in FULL],
                ]
            )
            continue
        a, b, r2 = r_squared(sizes, times[stage])
        predicted = [a + b * FULL[name] for name in FULL]
        fit_rows.append(
            [
                stage,
                f"{a:.1f}",
                f"{1000 * b:.1f}",
                f"{r2:.3f}",
                *[f"{p / 60:.1f}" for p in predicted],
            ]
        )
    out += table(
        [
            "stage",
            "a (s)",
            "b (ms / image)",
            "R^2",
            *[f"{name}, {FULL[name]:,} images (min)" for name in FULL],
        ],
        fit_rows,
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
