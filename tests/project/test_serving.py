"""The classifier logged by a training run as an MLflow model: loaded with
``mlflow.pyfunc``, registered in the sqlite model registry, and served over HTTP by
``mlflow models serve`` (started here, stopped by its process group)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REGISTERED = "niwt-zero-shot-classifier"  # conf/base/parameters_serving.yml


@pytest.fixture(scope="module")
def served_run(finished_run: Path) -> tuple[Path, pd.DataFrame]:
    """The finished run, and its predictions of the test images (first four)."""
    predictions = pd.read_parquet(finished_run / "data/07_model_output/predictions.parquet")
    return finished_run, predictions.head(4).reset_index(drop=True)


def _mlflow(finished_run: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{finished_run}/mlflow.db")
    return mlflow


def test_the_run_logged_and_registered_the_inference_pipeline(served_run):
    root, expected = served_run
    mlflow = _mlflow(root)
    versions = mlflow.MlflowClient().search_model_versions(f"name='{REGISTERED}'")
    assert versions, "the model was not registered"
    first = min(versions, key=lambda v: int(v.version))
    model = mlflow.pyfunc.load_model(f"runs:/{first.run_id}/zero_shot_classifier")
    request = pd.DataFrame({"path": expected["image"].tolist()})
    answer = model.predict(request)
    assert answer["class_1"].tolist() == expected["class_1"].tolist()
    assert answer["score_1"].round(5).tolist() == expected["score_1"].round(5).tolist()
    registered = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/{first.version}")
    assert registered.predict(request)["class_1"].tolist() == expected["class_1"].tolist()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_two_images(served_run, tmp_path):
    root, expected = served_run
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts uvicorn from PATH
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(bin_dir) / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{REGISTERED}/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as a whole below
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start: {(tmp_path / 'serve.log').read_text()}")
                time.sleep(1)
        by_path = _post(
            port,
            {
                "dataframe_split": {
                    "columns": ["path"],
                    "data": [[p] for p in expected["image"][:2]],
                }
            },
        )
        encoded = base64.b64encode(Path(expected["image"][2]).read_bytes()).decode("ascii")
        by_bytes = _post(
            port, {"dataframe_records": [{"image": encoded}, {"image": "not base64!"}]}
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert [row["class_1"] for row in by_path["predictions"]] == expected["class_1"][:2].tolist()
    assert by_bytes["predictions"][0]["class_1"] == expected["class_1"][2]
    assert "not valid base64" in by_bytes["predictions"][1]["error"]
