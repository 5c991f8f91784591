"""Run the whole project for several seeds in scratch copies and tabulate the GZSL metrics.

    .venv/bin/python benchmarks/seeds.py --seeds 0 1 2 [--env base] [--params k=v,...]
        [--world seed=1,n_classes=30,n_unseen=10]

Each seed runs ``kedro run --params=runtime.seed=<seed>`` (every seed parameter follows
``runtime.seed``) in its own scratch folder, so the repository's ``data/`` is untouched;
``--jobs 2`` runs two seeds side by side, ``--keep DIR`` keeps (and reuses) the runs;
``--rerun`` runs kept runs again with this repository's ``conf`` and ``src`` and the extra
``kedro run`` arguments, e.g. ``-- --from-nodes=select_hyperparameters`` to redo the
validation's choice and everything after it on the kept backbones and extractions.
``--world`` generates another attribute world (the ``world:`` values of
``conf/base/globals.yml`` in each scratch copy), to judge a choice on more than one world.
Prints a markdown table (mean +- std over seeds) and the wall time / peak memory of each run,
and writes them to ``--out`` (default ``docs/results_<env>.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ("S", "U", "H", "H_calibrated", "ausuc", "zsl_top1")


def set_world(project: Path, world: dict[str, int]) -> None:
    """Write ``world`` over the ``world:`` values of the scratch copy's base globals."""
    if not world:
        return
    import yaml

    path = project / "conf" / "base" / "globals.yml"
    values = yaml.safe_load(path.read_text())
    unknown = sorted(set(world) - set(values["world"]))
    if unknown:
        raise SystemExit(f"--world: unknown key(s) {unknown}; expected {sorted(values['world'])}")
    values["world"].update(world)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def parse_world(text: str) -> dict[str, int]:
    """``"seed=1,n_classes=30"`` -> ``{"seed": 1, "n_classes": 30}``."""
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(pair) != 2 or not pair[1].isdigit() for pair in pairs):
        raise SystemExit(f"--world: expected key=integer pairs separated by commas, got {text!r}")
    return {key.strip(): int(value) for key, value in pairs}


def run_seed(
    seed: int,
    env: str,
    extra: str,
    workdir: Path,
    kedro_args: list[str],
    rerun: bool = False,
    world: dict[str, int] | None = None,
) -> dict:
    """One ``kedro run`` in a scratch project (reused when ``workdir/seed<N>`` already holds
    a finished run, run again on its outputs with ``rerun``); returns metrics, wall seconds,
    peak RSS."""
    project = workdir / f"seed{seed}"
    # each dataset environment writes its own data folder (conf/<env>/globals.yml)
    data = project / "data" / ("" if env in ("base", "local", "test") else env)
    reporting = data / "08_reporting"
    finished = (reporting / "gzsl_metrics.json").exists()
    if rerun or not finished:
        if not (rerun and finished):
            shutil.rmtree(project, ignore_errors=True)
            (project / "data").mkdir(parents=True)
        for folder in ("conf", "src"):
            shutil.rmtree(project / folder, ignore_errors=True)
        shutil.copytree(REPO / "conf", project / "conf")
        shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
        set_world(project, world or {})
        params = ",".join(p for p in (f"runtime.seed={seed}", extra) if p)
        cmd = [
            str(Path(sys.executable).parent / "kedro"),
            "run",
            f"--env={env}",
            f"--params={params}",
            *kedro_args,
        ]
        env_vars = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
        started = time.perf_counter()
        with open(project / "run.log", "w") as log:
            subprocess.run(cmd, cwd=project, env=env_vars, stdout=log, stderr=log, check=True)
        (project / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    timings = json.loads((reporting / "run_timings.json").read_text())
    wall_file = project / "wall_seconds.txt"
    return {
        "best_gamma_h": best_gamma_h(data),
        "metrics": json.loads((reporting / "gzsl_metrics.json").read_text()),
        "choice": json.loads((data / "05_model_input" / "validation_choice.json").read_text()),
        "explanations": json.loads((reporting / "explanation_metrics.json").read_text()),
        "wall_seconds": float(wall_file.read_text()) if wall_file.exists() else float("nan"),
        "peak_rss_mb": timings["peak_rss_mb"],
        "stage_seconds": timings["stage_seconds"],
    }


def best_gamma_h(data: Path) -> dict[str, float]:
    """Per method, H (percent) at the gamma that is best *on the test images*: a diagnostic
    of how well the validation's gamma carried over, never a result (it is chosen with test
    labels)."""
    import pandas as pd
    from safetensors.numpy import load_file

    from niwt_pipeline.core.gzsl import calibrate, evaluate_scores, problem_for

    tensors = load_file(data / "07_model_output" / "gzsl_evaluation.safetensors")
    classes = pd.read_parquet(data / "03_primary" / "classes.parquet")
    class_ids = tensors["class_id"]
    unseen = np.setdiff1d(class_ids, classes.loc[classes["seen"], "class_id"].to_numpy())
    problem = problem_for(tensors["label"], class_ids, unseen)
    methods = [key.removesuffix(".scores") for key in tensors if key.endswith(".scores")]
    out = {}
    for method in methods:
        scores = tensors[f"{method}.scores"]
        result = evaluate_scores(scores, problem, calibrate(scores, problem))
        out[method] = 100 * float(result["H_calibrated"])
    return out


def gamma_table(runs: list[dict]) -> str:
    """Markdown: per method, H_calibrated at the validation's gamma beside H at the test
    images' own best gamma (diagnostic), mean over the runs."""
    methods = runs[0]["metrics"]["methods"]
    lines = [
        "| method | H_calibrated (the validation's gamma) | H at the test's own best gamma "
        "(diagnostic only) | lost to the gamma |",
        "|---|---|---|---|",
    ]
    for method in methods:
        chosen = np.mean([r["metrics"]["methods"][method]["H_calibrated"] for r in runs])
        best = np.mean([r["best_gamma_h"][method] for r in runs])
        lines.append(f"| {method} | {chosen:.1f} | {best:.1f} | {best - chosen:.1f} |")
    return "\n".join(lines)


def table(runs: list[dict]) -> str:
    """Markdown: one row per method, mean +- std over the runs."""
    methods = runs[0]["metrics"]["methods"]
    lines = [
        "| method | " + " | ".join(KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for method in methods:
        cells = []
        for key in KEYS:
            values = np.array([r["metrics"]["methods"][method][key] for r in runs])
            cells.append(f"{values.mean():.1f} +- {values.std():.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(runs: list[dict]) -> str:
    """Markdown: per metric, the best method by mean over the runs and its margin to the
    runner-up, and NIWT's best rows alone against the best method that is not NIWT."""
    methods = list(runs[0]["metrics"]["methods"])
    lines = []
    for key in ("H_calibrated", "ausuc", "zsl_top1"):
        means = {
            m: float(np.mean([r["metrics"]["methods"][m][key] for r in runs])) for m in methods
        }
        ranked = sorted(means, key=means.get, reverse=True)
        niwt = max((m for m in methods if m.startswith("niwt")), key=means.get)
        other = max((m for m in methods if not m.startswith("niwt")), key=means.get)
        lines.append(
            f"- {key}: best `{ranked[0]}` {means[ranked[0]]:.1f}, "
            f"{means[ranked[0]] - means[ranked[1]]:.1f} ahead of `{ranked[1]}`; "
            f"NIWT's rows alone at best `{niwt}` {means[niwt]:.1f}, "
            f"{means[niwt] - means[other]:+.1f} against the best other method `{other}`."
        )
    return "\n".join(lines)


def choice_table(seeds: list[int], runs: list[dict]) -> str:
    """Markdown: what the validation pipeline chose for each seed (mapper, NIWT variant,
    ensemble weight, baselines' settings), and every method's validation scores."""
    methods = list(runs[0]["choice"]["methods"])
    lines = [
        "| seed | pseudo-unseen classes | mapper | niwt_tuned | ensemble weight | baselines "
        f"| validation H_calibrated / AUSUC ({', '.join(methods)}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, run in zip(seeds, runs, strict=True):
        choice = run["choice"]
        validated = choice["methods"]
        scores = ", ".join(
            f"{100 * validated[m]['H_calibrated']:.1f} / {100 * validated[m]['ausuc']:.1f}"
            for m in methods
        )
        ensemble = choice.get("ensemble_niwt_tuned_eszsl", {}).get("fusion", "-")
        baselines = json.dumps(choice.get("baselines", {}))
        lines.append(
            f"| {seed} | {choice['pseudo_unseen_class_ids']} | `{json.dumps(choice['mapper'])}` "
            f"| `{json.dumps(choice['niwt_tuned'])}` | {ensemble} | `{baselines}` | {scores} |"
        )
    return "\n".join(lines)


def explanation_table(runs: list[dict]) -> str:
    """Markdown: precision@k of textual explanations (all / correct / incorrect predictions,
    seen / unseen classes) beside the class-prior explanation (the predicted class's own
    top dimensions) and random dimensions, and neuron-name agreement."""
    k = runs[0]["explanations"]["top_k"]

    def stat(values: list[float]) -> str:
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}"

    textual = [r["explanations"]["textual"] for r in runs]
    chosen = ", ".join(
        f"{t['explanation']['evidence']} at weight {t['explanation']['evidence_weight']}"
        for t in textual
    )
    lines = [
        f"Evidence chosen on the validation problem, per seed: {chosen}.",
        "",
        f"| precision@{k} | explanation | paper's (inverse map) | class prior | random "
        "| n images (first seed) |",
        "|---|---|---|---|---|---|",
    ]
    parts = [p for p in ("unseen", "unseen_departing", "seen", "seen_departing")]
    for part in parts:
        if part not in textual[0]["precision_at_k"]:
            continue
        for outcome in ("all", "correct", "incorrect"):
            scores = [t["precision_at_k"][part] for t in textual]
            suffix = "" if outcome == "all" else f"_{outcome}"
            cells = [
                stat([s[key] for s in scores])
                for key in (outcome, f"inverse_map{suffix}", f"class_prior{suffix}")
            ]
            chance = stat([s[f"random{suffix}"] for s in scores])
            n = scores[0]["n_images" if outcome == "all" else f"n_{outcome}"]
            label = "all predictions" if outcome == "all" else f"{outcome} predictions"
            name = part.replace("_departing", " classes, images departing from the prototype")
            name = name if "departing" in part else f"{part} classes"
            lines.append(f"| {name}, {label} | {' | '.join(cells)} | {chance} | {n} |")
    lines += [
        "",
        "| unseen-class images | explanation | paper's (inverse map) | class prior | random |",
        "|---|---|---|---|---|",
    ]
    kinds = ("explanation", "inverse_map", "class_prior", "random")
    for part in ("unseen", "unseen_departing"):
        if part not in textual[0].get("contrastive_share", {}):
            continue
        cells = [stat([t["contrastive_share"][part][kind] for t in textual]) for kind in kinds]
        lines.append(f"| contrastive share, {part.replace('_', ' ')} | {' | '.join(cells)} |")
    if "naming_diversity" in textual[0]:
        diversity = [t["naming_diversity"]["unseen"] for t in textual]
        for key, label in (
            ("n_distinct", "distinct attributes named"),
            ("top_attribute_share", "share naming the most frequent attribute"),
        ):
            cells = [stat([d[kind][key] for d in diversity]) for kind in kinds]
            lines.append(f"| {label} | {' | '.join(cells)} |")
    names = [r["explanations"]["neuron_names"] for r in runs]
    lines += [
        "",
        f"Neuron names, mapper vs co-variation top-{k} agreement: "
        f"{stat([n['agreement'] for n in names])} "
        f"(chance {stat([n['random_baseline'] for n in names])}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--env", default="base")
    parser.add_argument("--params", default="", help="extra --params for every run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the scratch projects in this folder (a finished seed<N> there is reused)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side")
    parser.add_argument(
        "--world",
        type=parse_world,
        default={},
        help="another generated world: key=integer pairs of conf/base/globals.yml `world:`",
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="run the kept runs again with this conf/src and the kedro arguments after --",
    )
    parser.add_argument("kedro_args", nargs="*", help="more `kedro run` arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="niwt-seeds-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(
                    run_seed,
                    seed,
                    args.env,
                    args.params,
                    workdir,
                    args.kedro_args,
                    args.rerun,
                    args.world,
                )
                for seed in args.seeds
            ]
            runs = [future.result() for future in futures]
        for seed, run in zip(args.seeds, runs, strict=True):
            print(
                f"seed {seed}: {run['wall_seconds']:.0f} s, peak {run['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    metrics = runs[0]["metrics"]
    lines = [
        f"Dataset `{metrics['dataset']}`, domain knowledge: {metrics['domain_knowledge']}, "
        f"backbone `{metrics['backbone']['arch']}` at `{metrics['backbone']['layer']}`; "
        f"seeds {args.seeds}"
        + (f", world {json.dumps(args.world)}" if args.world else "")
        + "; accuracies in percent, mean +- std over seeds.",
        "",
        table(runs),
        "",
        verdict(runs),
        "",
        "How well each method's gamma, chosen on the validation problem, carried over to "
        "the test classes: H at the gamma that is best on the test images is a diagnostic "
        "(chosen with test labels), never a result.",
        "",
        gamma_table(runs),
        "",
        "`niwt_paper` is NIWT with the paper's transfer settings (`transfer.paper`); "
        "`niwt_tuned` is the variant the "
        "`validation` pipeline chose on pseudo-unseen classes with a backbone that never saw "
        "them; every gamma (H_calibrated) was chosen there too.",
        "",
        choice_table(args.seeds, runs),
        "",
        explanation_table(runs),
        "",
        f"Wall time and peak memory of the `kedro run {' '.join(args.kedro_args)}` of each seed:"
        if args.kedro_args
        else "Wall time and peak memory of each seed's run:",
        "",
        "| seed | wall time (s) | peak memory (MB) |",
        "|---|---|---|",
        *(
            f"| {s} | {r['wall_seconds']:.0f} | {r['peak_rss_mb']:.0f} |"
            for s, r in zip(args.seeds, runs, strict=True)
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or REPO / "docs" / f"results_{args.env}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
