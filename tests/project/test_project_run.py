"""The whole project in the ``test`` environment: a tiny world, end to end, through Kedro."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.framework.project import configure_project
from kedro.framework.session import KedroSession
from kedro.validation import ParameterValidationError
from tests.helpers import METRIC_KEYS
from tests.helpers import run_in_test_env as _run

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.methods import METHODS

METHOD_KEYS = set(METRIC_KEYS)


def test_transfer_alone_on_a_fresh_project_names_the_pipeline_to_run_first(
    fresh_project, monkeypatch
):
    monkeypatch.chdir(fresh_project)
    import mlflow

    with pytest.raises(InputError) as caught:
        _run(fresh_project, "transfer", {"transfer": {"niwt": {"lr": 0.01}}})
    message = str(caught.value)
    assert "  - backbone: made by the `backbone` pipeline" in message
    # one command, the pipelines in the order to run, the user's options repeated
    assert message.endswith(
        "Run first:\n  kedro run --pipelines=ingestion,backbone,extraction,importance,"
        "validation,mapping --env=test --params=transfer.niwt.lr=0.01"
    )
    assert mlflow.active_run() is None
    assert not (fresh_project / "data" / "08_reporting" / "gzsl_metrics.json").exists()


def test_finished_run_writes_the_metrics_contract(finished_run: Path):
    metrics = json.loads((finished_run / "data/08_reporting/gzsl_metrics.json").read_text())
    assert metrics["dataset"] == "attribute_world"
    assert metrics["backbone"]["arch"] == "small_cnn"
    assert list(metrics["methods"]) == list(METHODS)
    choice = json.loads((finished_run / "data/05_model_input/validation_choice.json").read_text())
    assert metrics["validation"]["niwt_tuned"] == choice["niwt_tuned"]
    for name, values in metrics["methods"].items():  # every gamma is the validated one
        assert values["gamma"] == choice["methods"][name]["gamma"], name
    for name, values in metrics["methods"].items():
        assert METHOD_KEYS <= set(values), name
        for key in METHOD_KEYS - {"gamma"}:
            assert 0.0 <= values[key] <= 100.0, (name, key, values[key])
    for plot in ("seen_unseen_curve.png", "confusion_matrix.png"):
        assert (finished_run / "data/08_reporting" / plot).stat().st_size > 1000


def test_finished_run_is_logged_to_mlflow(finished_run: Path):
    with sqlite3.connect(finished_run / "mlflow.db") as db:
        keys = {row[0] for row in db.execute("select key from metrics")}
        params = {row[0] for row in db.execute("select key from params")}
    assert {
        "gzsl.niwt_paper.H",
        "gzsl.niwt_paper.ausuc",
        "gzsl.eszsl.H",
        "gzsl.weight_regression.H",
        "gzsl.sae.H_calibrated",
    } <= keys
    assert {
        "gzsl.niwt_paper.H_calibrated",
        "gzsl.niwt_tuned.H_calibrated",
        "gzsl.ensemble_niwt_tuned_eszsl.H_calibrated",
    } <= keys
    assert "backbone.seen_accuracy" in keys and "mapper.heldout_cosine" in keys
    assert {"validation.niwt_tuned.H_calibrated", "validation.eszsl.ausuc"} <= keys
    assert not any(key.startswith("validation.") and key.endswith(".H") for key in keys)
    assert any(key.startswith("seconds.") for key in keys)
    # typed parameter blocks are logged flattened, one MLflow parameter per key
    assert {"transfer.niwt.lr", "backbone.train.epochs", "validation.criterion"} <= params
    assert "transfer" not in params and "backbone" not in params
    artifacts = {p.name for p in (finished_run / "mlartifacts").rglob("*") if p.is_file()}
    assert {
        "gzsl_metrics.json",
        "seen_unseen_curve.png",
        "niwt_rows.safetensors",
        "validation_choice.json",
        "validation_results.csv",
    } <= artifacts


def test_the_packaged_classifier_predicts_without_kedro_as_the_pipeline_did(finished_run: Path):
    """The default run classified the test images with ``zero_shot_classifier``; loading the
    folder in a plain Python process gives the same classes and scores."""
    predictions = pd.read_parquet(finished_run / "data/07_model_output/predictions.parquet")
    gallery = (finished_run / "data/08_reporting/predictions.html").read_text()
    assert len(predictions) > 0 and (predictions["error"] == "").all()
    assert gallery.count("class='card'") == len(predictions)
    script = finished_run / "predict_alone.py"
    script.write_text(
        "import sys, pandas as pd, niwt_pipeline\n"
        "classifier = niwt_pipeline.load_classifier(sys.argv[1])\n"
        "paths = pd.read_parquet(sys.argv[2])['image'].tolist()\n"
        "classifier.predict(paths, batch_size=7).to_parquet(sys.argv[3])\n"
        "assert 'kedro' not in sys.modules and 'mlflow' not in sys.modules\n"
    )
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(finished_run / "data/06_models/zero_shot_classifier"),
            str(finished_run / "data/07_model_output/predictions.parquet"),
            str(finished_run / "alone.parquet"),
        ],
        check=True,
    )
    alone = pd.read_parquet(finished_run / "alone.parquet")
    assert alone["class_1"].tolist() == predictions["class_1"].tolist()
    assert alone["explanation"].tolist() == predictions["explanation"].tolist()
    np.testing.assert_allclose(alone["score_1"], predictions["score_1"], rtol=1e-5, atol=1e-5)


def test_transfer_reruns_alone_and_leaves_upstream_untouched(finished_run: Path, monkeypatch):
    monkeypatch.chdir(finished_run)
    upstream = finished_run / "data/04_feature/backbone/weights.safetensors"
    before = upstream.stat().st_mtime_ns
    metrics_file = finished_run / "data/08_reporting/gzsl_metrics.json"
    metrics_before = metrics_file.stat().st_mtime_ns
    _run(finished_run, "transfer", {"transfer": {"niwt": {"lr": 0.05}}})
    assert upstream.stat().st_mtime_ns == before
    assert metrics_file.stat().st_mtime_ns > metrics_before
    report = json.loads((finished_run / "data/08_reporting/transfer_report.json").read_text())
    assert report["config"]["lr"] == 0.05


def test_bad_parameters_stop_the_run_before_it_touches_earlier_outputs(
    finished_run: Path, monkeypatch
):
    monkeypatch.chdir(finished_run)
    metrics_file = finished_run / "data/08_reporting/gzsl_metrics.json"
    before = metrics_file.read_bytes()
    with pytest.raises(ParameterValidationError, match=r"transfer(.|\n)*TransferConfig\.lr"):
        _run(finished_run, "transfer", {"transfer": {"niwt": {"lr": -1.0}}})
    assert metrics_file.read_bytes() == before


def test_cub_subset_ingestion(fresh_project: Path, cub_root: Path, xlsa17_root: Path, monkeypatch):
    """``kedro run --env=cub --pipelines=ingestion`` on the 25-class real CUB subset."""
    import pandas as pd

    monkeypatch.chdir(fresh_project)
    configure_project("niwt_pipeline")
    with KedroSession.create(
        project_path=fresh_project,
        env="cub",
        runtime_params={
            "cub_root": str(cub_root),
            "cub_splits": str(xlsa17_root / "CUB" / "att_splits.mat"),
        },
    ) as session:
        session.run(pipeline_names=["ingestion"])
    data = fresh_project / "data" / "cub"  # each dataset environment has its own folder
    classes = pd.read_parquet(data / "03_primary/classes.parquet")
    images = pd.read_parquet(data / "03_primary/images.parquet")
    assert len(classes) == 25 and int(classes["seen"].sum()) == 21
    unseen = sorted(name[:3] for name in classes.loc[~classes["seen"], "name"])
    assert unseen == ["004", "012", "026", "028"]
    assert images["split"].value_counts().to_dict() == {
        "trainval": 946,
        "test_seen": 245,
        "test_unseen": 235,
    }


def test_run_timings_give_every_node_its_time_and_the_peak_memory_after_it(finished_run: Path):
    timings = json.loads((finished_run / "data/08_reporting/run_timings.json").read_text())
    seconds, peaks = timings["stage_seconds"], timings["stage_peak_rss_mb"]

    assert seconds and set(seconds) == set(peaks)  # (other tests re-run single pipelines)
    assert all(value >= 0 for value in seconds.values())
    assert 0 < max(peaks.values()) <= timings["peak_rss_mb"]


def test_a_frozen_trunk_run_trains_the_head_on_activations_stored_once(
    finished_run: Path, fresh_project: Path, monkeypatch
):
    """``backbone.trunk.frozen`` with pretrained weights (here the weights a first run
    trained): the stem's activations are stored once, the stem keeps its weights, and
    every stage downstream runs; a second run of the backbone reuses the stored shards."""
    from safetensors.torch import load_file

    pretrained = fresh_project / "pretrained.safetensors"
    pretrained.write_bytes(
        (finished_run / "data/04_feature/backbone/weights.safetensors").read_bytes()
    )
    monkeypatch.chdir(fresh_project)
    params = {"backbone": {"weights": str(pretrained), "trunk": {"frozen": True}}}
    _run(fresh_project, None, params)
    data = fresh_project / "data"
    manifest = json.loads((data / "04_feature/trunk_activations/manifest.json").read_text())
    spec = json.loads((data / "04_feature/backbone/spec.json").read_text())
    assert manifest["frozen"] and spec["trunk"] == manifest["fingerprint"]
    report = json.loads((data / "08_reporting/backbone_report.json").read_text())
    assert report["trunk"] == "frozen"
    trained = load_file(str(data / "04_feature/backbone/weights.safetensors"))
    before = load_file(str(pretrained))
    stem = [k for k in before if k.startswith(("block1.", "block2.", "block3."))]
    assert stem and all(np.array_equal(trained[k], before[k]) for k in stem)
    metrics = json.loads((data / "08_reporting/gzsl_metrics.json").read_text())["methods"]
    assert all(np.isfinite(m["H_calibrated"]) for m in metrics.values())
    shard = data / "04_feature/trunk_activations/shard-00000.safetensors"
    stamp = shard.stat().st_mtime_ns
    _run(fresh_project, "backbone", params)
    assert shard.stat().st_mtime_ns == stamp  # the stored activations were reused
