"""Benchmark 4: wall time and peak memory of a full ``kedro run`` on the default world.

The project (``conf/``, ``src/``, ``pyproject.toml``) is copied into a scratch folder with an
empty ``data/``, so the repository's data and MLflow store are untouched; the copy's MLflow
tracking URI and artifact location are rewritten to absolute paths inside the scratch folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Section, table

REPO = Path(__file__).resolve().parents[1]
TOP_NODES = 20  # nodes listed one by one; the rest are summed


def _scratch_project(root: Path) -> Path:
    """Copy conf/, src/ and pyproject.toml under ``root``; point MLflow inside the copy."""
    project = root / "project"
    shutil.copytree(REPO / "conf", project / "conf")
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    (project / "data").mkdir()
    mlflow_yml = project / "conf" / "base" / "mlflow.yml"
    text = mlflow_yml.read_text()
    rewrites = {
        "mlflow_tracking_uri: sqlite:///mlflow.db": (
            f"mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}"
        ),
        "artifact_location: mlartifacts": f"artifact_location: {project / 'mlartifacts'}",
    }
    for old, new in rewrites.items():
        if old not in text:
            raise RuntimeError(f"{mlflow_yml.relative_to(project)}: expected {old!r} to rewrite")
        text = text.replace(old, new)
    mlflow_yml.write_text(text)
    return project


def run(section: Section, *, threads: int) -> None:
    """One ``kedro run`` in a scratch copy (``runtime.num_threads=threads``); fills ``section``."""
    kedro = Path(sys.executable).parent / "kedro"
    params = f"runtime.num_threads={threads}"
    with tempfile.TemporaryDirectory(prefix="niwt-bench-e2e-") as tmp:
        project = _scratch_project(Path(tmp))
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
        log_path = project / "run.log"
        started = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(kedro), "run", f"--params={params}"],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
            raise RuntimeError(f"kedro run failed (exit {proc.returncode}):\n{tail}")
        timings = json.loads((project / "data" / "08_reporting" / "run_timings.json").read_text())
    stages: dict[str, float] = timings["stage_seconds"]
    in_nodes = sum(stages.values())
    top = sorted(stages.items(), key=lambda kv: kv[1], reverse=True)
    rest = top[TOP_NODES:]
    rows = [(f"`{name}`", f"{s:.1f}", f"{100 * s / in_nodes:.0f}%") for name, s in top[:TOP_NODES]]
    if rest:
        rows.append(
            (
                f"{len(rest)} other nodes",
                f"{sum(s for _, s in rest):.1f}",
                f"{100 * sum(s for _, s in rest) / in_nodes:.0f}%",
            )
        )
    section.add(
        f"`kedro run --params={params}` (the `base` environment: generated attribute "
        "world, small_cnn backbone trained from scratch, all pipelines) in a scratch copy of "
        "`conf/`, `src/` and `pyproject.toml` with an empty `data/`; kedro-mlflow stays on, "
        "tracking to an absolute `sqlite:///` URI inside the scratch copy. Peak RSS of the "
        "`kedro` process from `os.wait4` (`ru_maxrss`); node times and the in-process peak "
        "from `data/08_reporting/run_timings.json` (written by `StageTimingHook`).",
        "",
        *table(
            ["measure", "value"],
            [
                ("wall time of `kedro run`", f"{wall:.1f} s"),
                (f"time inside the {len(stages)} nodes", f"{in_nodes:.1f} s"),
                ("startup, catalog I/O and hooks (wall - nodes)", f"{wall - in_nodes:.1f} s"),
                ("peak RSS (`wait4` ru_maxrss)", f"{usage.ru_maxrss / 1024:.0f} MB"),
                ("peak RSS (`run_timings.json`)", f"{timings['peak_rss_mb']:.0f} MB"),
            ],
        ),
        "",
        "Slowest nodes:",
        "",
        *table(["node", "s", "share of node time"], rows),
    )
