"""kedro-viz: the static site builds from a scratch copy of the project and shows every
named pipeline and the key datasets; rendering it needs Chromium (skipped without it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import LAYERS

REPO_ROOT = Path(__file__).resolve().parents[2]
KEDRO = Path(sys.executable).with_name("kedro")
KEY_DATASETS = {
    "images",
    "backbone",
    "image_outputs",
    "predicted_importance",
    "niwt_rows",
    "gzsl_evaluation",
    "gzsl_metrics",
    "report",
}
BUILD_SECONDS = 60


def _env() -> dict[str, str]:
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def viz_build(project_dir: Path) -> tuple[Path, float]:
    """``kedro viz build`` in the scratch project; returns the build folder and its seconds."""
    (project_dir / "src").mkdir(exist_ok=True)  # `kedro` needs the source folder to exist
    started = time.perf_counter()
    result = subprocess.run(
        [str(KEDRO), "viz", "build"],
        cwd=project_dir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (project_dir / "build" / "build.log").write_text(result.stdout + result.stderr)
    return project_dir / "build", seconds


@pytest.fixture(scope="module")
def graph(viz_build) -> dict:
    return json.loads((viz_build[0] / "api" / "main").read_text())


def test_viz_build_is_quick(viz_build):
    assert viz_build[1] < BUILD_SECONDS
    assert (viz_build[0] / "index.html").is_file()


def test_viz_build_reports_no_layer_cycle_and_shows_every_layer_in_order(viz_build, graph):
    log = (viz_build[0] / "build.log").read_text()
    assert "circular dependency" not in log.lower(), log[-2000:]
    assert graph["layers"] == list(LAYERS)


def test_viz_graph_has_every_named_pipeline(graph, viz_build, named_pipelines):
    assert named_pipelines | {"__default__"} <= {p["id"] for p in graph["pipelines"]}
    for name in named_pipelines:
        assert (viz_build[0] / "api" / "pipelines" / name).is_file(), name


def test_viz_graph_has_the_key_datasets(graph):
    datasets = {n["name"] for n in graph["nodes"] if n["type"] == "data"}
    assert KEY_DATASETS <= datasets, KEY_DATASETS - datasets


def test_viz_graph_shows_the_explanation_pipeline(graph):
    tasks = {n["name"]: n for n in graph["nodes"] if n["type"] == "task"}
    for name in (
        "name_neurons",
        "explain_predictions",
        "visualise_explanations",
        "score_explanations",
        "build_run_report",
    ):
        assert "explanation" in tasks[name]["pipelines"], name
    layers = {n["name"]: n.get("layer") for n in graph["nodes"] if n["type"] == "data"}
    assert layers["report"] == "reporting"
    assert layers["textual_explanations"] == "model_output"


def test_viz_page_renders_in_headless_chromium(viz_build, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromium = chromium or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): not rendering")
    out = tmp_path / "viz.png"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "render_viz.sh"), str(out), str(viz_build[0])],
        cwd=viz_build[0].parent,
        env={**_env(), "PYTHON": sys.executable, "CHROMIUM": chromium},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (1400, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the page rendered blank"
