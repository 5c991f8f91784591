"""notebooks/explore.ipynb runs top to bottom against a finished ``test``-environment run."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "explore.ipynb"


def _execute(notebook: Path, cwd: Path, env: dict[str, str], monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def _texts(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            elif "data" in output:
                parts.append(str(output["data"].get("text/plain", "")))
                parts.append(str(output["data"].get("text/html", "")))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        for output in cell.get("outputs", [])
    )


def test_notebook_shows_metrics_curve_and_explanations(finished_run, monkeypatch):
    nb = _execute(
        finished_run / "notebooks" / NOTEBOOK.name,
        finished_run / "notebooks",
        {"NIWT_PROJECT_PATH": str(finished_run), "NIWT_KEDRO_ENV": "test"},
        monkeypatch,
    )
    text = _texts(nb)
    assert f"project: {finished_run.resolve()}  env: test" in text
    assert "attribute_world: " in text and "H_calibrated" in text
    assert "source of truth: the true 0/1 attributes" in text
    assert "because:" in text
    assert _images(nb) >= 2  # the seen-unseen curve and the Grad-CAM grid
    assert not (finished_run / "notebooks" / "mlflow.db").exists()


def test_notebook_finds_the_project_from_its_own_folder(finished_run, monkeypatch, tmp_path):
    import nbformat

    monkeypatch.delenv("NIWT_PROJECT_PATH", raising=False)
    monkeypatch.delenv("NIWT_KEDRO_ENV", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = nb.cells[:2]  # the title and the cell that locates the project
    head = tmp_path / "head.ipynb"
    nbformat.write(nb, head)
    nb = _execute(head, finished_run / "notebooks", {}, monkeypatch)
    assert f"project: {finished_run.resolve()}  env: default" in _texts(nb)
