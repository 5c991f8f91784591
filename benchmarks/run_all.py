"""Run the CPU benchmark suite and write docs/benchmarks.md.

    make benchmarks [ARGS="--quick | --skip-e2e | --threads N | --rounds N | --out PATH"]
    .venv/bin/python benchmarks/run_all.py [same options]   (needs benchmarks/requirements.txt)

1. importance extraction: the project vs Captum, pytorch-grad-cam and a naive ``.backward()``
   loop (same model, inputs and targets; results must agree), plus forward-only throughput;
2. weight transfer: precomputed G vs the naive whole-network loop (rows must agree);
3. extraction time vs number of images and vs image size, with linear fits;
4. a full ``kedro run`` on the default world in a scratch copy: wall time, peak memory;
5. predict throughput: the packaged classifier vs forward-only inference on the same files.

On a 2-core machine the benchmarks before the ``kedro run`` take 2-4 minutes and the
``kedro run`` 5-8 (it grows with the pipelines); the report states the time and the load.
``--quick`` is a one-minute smoke run (fewer rounds and sizes, no ``kedro run``) that only
prints its report unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from common import Section, load1, machine_lines, now, timed_section

REPO = Path(__file__).resolve().parents[1]
CONTENTION_LOAD = 1.5
KEEP_MARKER = "<!-- measured by other commands, kept by run_all.py -->"

logger = logging.getLogger("benchmarks")


def _reproduce(argv: list[str]) -> list[str]:
    args = shlex.join(argv)
    make = "make benchmarks" + (f" ARGS={shlex.quote(args)}" if args else "")
    return [
        "Reproduce with",
        "",
        f"    {make}",
        "",
        "which sets up `.venv` from `requirements.lock`, installs the pinned peer libraries of "
        "`benchmarks/requirements.txt` (not part of the project's lock) and runs "
        f"`.venv/bin/python benchmarks/run_all.py{' ' + args if args else ''}`.",
    ]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (best of)")
    parser.add_argument("--quick", action="store_true", help="1-minute smoke run, no kedro run")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the full kedro run")
    parser.add_argument("--out", type=Path, default=None, help="default docs/benchmarks.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 3)
    out = args.out or (None if args.quick else REPO / "docs" / "benchmarks.md")

    # Imported here so that --help works without the peer libraries.
    import end_to_end
    import peers
    import predict
    import scaling
    import weight_transfer

    started, load_start, date = time.perf_counter(), load1(), now()
    sections: list[Section] = []

    def step(title: str, body: Callable[[Section], None]) -> None:
        logger.info("%s ...", title)
        sections.append(timed_section(title, body))
        logger.info("%s: %.0f s", title, sections[-1].seconds)

    step(
        "1. Importance extraction vs peers",
        lambda s: peers.run(s, rounds=rounds, quick=args.quick),
    )
    if args.quick:
        step(
            "2. Weight transfer",
            lambda s: weight_transfer.run(s, n_images=32, n_unseen=5, steps=5),
        )
        step(
            "3. Extraction scaling",
            lambda s: scaling.run(s, counts=(64, 128, 256), sizes=(64, 96, 128), rounds=rounds),
        )
    else:
        step("2. Weight transfer", weight_transfer.run)
        step(
            "3. Extraction scaling",
            lambda s: scaling.run(
                s, counts=(128, 256, 512, 1024), sizes=(64, 128, 224), rounds=rounds
            ),
        )
    if args.quick or args.skip_e2e:
        skipped = Section("4. End-to-end `kedro run`", skipped=True)
        skipped.add("Skipped (`--quick` or `--skip-e2e`).")
        sections.append(skipped)
    else:
        step("4. End-to-end `kedro run`", lambda s: end_to_end.run(s, threads=args.threads))

    step(
        "5. Predict throughput",
        lambda s: predict.run(s, n_images=32 if args.quick else 128, batch=32, rounds=rounds),
    )

    load_end, total = load1(), time.perf_counter() - started
    header = [
        "# Benchmarks (CPU)",
        "",
        f"Written by `benchmarks/run_all.py` on {date}"
        + (" (`--quick` smoke run)" if args.quick else "")
        + f"; the suite took {total / 60:.1f} min.",
        "",
        *machine_lines(args.threads),
        f"- 1-minute load average: {load_start:.2f} at the start, {load_end:.2f} at the end",
        "",
        *_reproduce(argv),
        "",
    ]
    loads = [load_start, load_end, *(x for s in sections for x in (s.load_start, s.load_end))]
    if max(loads) > CONTENTION_LOAD:
        header += [
            f"**Contention:** the load average rose above {CONTENTION_LOAD} during the run "
            f"(on {torch.get_num_threads()} thread(s) of a {os.cpu_count()}-core machine), so "
            "other processes shared the CPUs: absolute times are pessimistic and noisier than "
            "on an idle machine; ratios between methods measured side by side are more reliable. "
            "Each section states the load around it.",
            "",
        ]
    gpu = [
        "## 6. GPU: ResNet-101",
        "",
        "`benchmarks/gpu_resnet101.py` times extraction and weight transfer for ResNet-101 at "
        "224 px on a GPU; its results are in [gpu_resnet101.md](gpu_resnet101.md).",
        "",
    ]
    text = "\n".join([*header, *(s.markdown() for s in sections), *gpu]).rstrip() + "\n"
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Sections measured by other scripts (each gives its command) follow KEEP_MARKER
        # and are kept as they are.
        if out.exists() and KEEP_MARKER in out.read_text():
            text = (
                text.rstrip("\n") + "\n\n" + KEEP_MARKER + out.read_text().split(KEEP_MARKER, 1)[1]
            )
        out.write_text(text)
        logger.info("wrote %s", out)


if __name__ == "__main__":
    main()
