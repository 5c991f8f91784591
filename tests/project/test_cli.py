"""``kedro run`` through the project's CLI: an input error is one message and exit code 2,
the traceback goes to a log file; the exception chain is searched for the input error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kedro.io import DatasetError
from kedro.validation import ParameterValidationError

from niwt_pipeline.cli import input_error_of, parameter_problems
from niwt_pipeline.core.errors import InputError


def _kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess:
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [str(kedro), "run", "--env=test", *args],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_a_misspelt_pipeline_is_one_message_listing_the_pipelines(fresh_project):
    result = _kedro_run(fresh_project, "--pipelines=transfr")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Error: --pipelines: no pipeline named 'transfr'; the registered pipelines are " in (
        result.stderr
    )
    assert "predict, transfer, validation" in result.stderr


def test_bad_parameters_are_one_message_and_exit_code_2(fresh_project):
    result = _kedro_run(fresh_project, "--params=transfer.niwt.lr=-1,backbone.train.epochs=0")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert (
        "Error: parameters that do not validate:\n"
        "  - backbone.train: TrainConfig: epochs must be >= 1, got 0\n"
        "  - transfer.niwt: TransferConfig.lr: expected > 0, got -1.0\n"
    ) in result.stderr
    log = fresh_project / "logs" / "last_error.log"
    assert f"(the full traceback is in {log})" in result.stderr
    assert "Traceback" in log.read_text()
    assert not (fresh_project / "data" / "04_feature").exists()  # nothing ran


def test_a_normal_run_prints_no_third_party_notice(fresh_project):
    """Noise: notices a user can do nothing about are dropped (settings.py), among them
    mlflow's "Add type hints to the `predict` method", raised when kedro-mlflow is imported
    inside mlflow's own ``simplefilter("once")``."""
    result = _kedro_run(fresh_project, "--pipelines=ingestion")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]
    assert "Add type hints" not in result.stderr


def test_missing_upstream_outputs_are_one_message_with_the_command(fresh_project):
    result = _kedro_run(fresh_project, "--pipelines=predict")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "  - zero_shot_classifier: made by the `transfer` pipeline" in result.stderr
    assert "  kedro run --pipelines=ingestion,backbone,extraction,importance,validation," in (
        result.stderr
    )


def test_the_input_error_is_found_anywhere_in_the_chain():
    cause = InputError("images.txt line 3: expected two fields")
    try:
        try:
            raise cause
        except InputError as exc:
            raise DatasetError("Failed while loading data from dataset") from exc
    except DatasetError as wrapped:
        assert input_error_of(wrapped) is cause
    try:
        try:
            raise KeyError("x")
        except KeyError:
            raise RuntimeError("a bug") from None
    except RuntimeError as bug:
        assert input_error_of(bug) is None  # bugs keep their traceback
    validation = ParameterValidationError("Parameter validation failed")
    assert input_error_of(validation) is validation


def test_a_damaged_json_file_is_an_input_error_naming_it():
    try:
        try:
            json.loads('{"methods": {"niwt_tuned": ')
        except json.JSONDecodeError as exc:
            raise DatasetError(
                "Failed while loading data from dataset MlflowArtifactDataset(dataset="
                "{'filepath': ...}, filepath=data/05_model_input/validation_choice.json, "
                "protocol=file)."
            ) from exc
    except DatasetError as wrapped:
        error = input_error_of(wrapped)
    assert isinstance(error, InputError)
    assert str(error).startswith(
        "data/05_model_input/validation_choice.json: not valid JSON (Expecting value: line 1"
    )
    assert str(error).endswith("delete it and run the pipeline that writes it again")


def test_parameter_problems_are_read_from_kedro_s_report():
    text = (
        "Parameter validation failed:\n"
        "- Parameter 'transfer': Failed to instantiate TransferParams for parameter "
        "'transfer': 1 validation error for TransferParams\n"
        "niwt\n"
        "  Value error, TransferConfig.lr: expected > 0, got -1.0 [type=value_error, "
        "input_value={'lr': -1}, input_type=dict]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    assert parameter_problems(text) == ["transfer.niwt: TransferConfig.lr: expected > 0, got -1.0"]


def test_a_list_in_params_points_to_the_run_config_file(fresh_project):
    result = _kedro_run(fresh_project, "--params=ingestion.classes=[cat,dog]")
    assert result.returncode == 2
    assert "Item `dog]` must contain a key and a value" in result.stderr
    assert "kedro run --config=run.yml" in result.stderr


def test_the_run_config_file_carries_lists(fresh_project):
    (fresh_project / "run.yml").write_text(
        "run:\n  pipelines: ingestion\n  params:\n    ingestion:\n      classes: "
        "[large_blue_solid_star, large_green_striped_cross, large_orange_checkered_star]\n"
    )
    result = _kedro_run(fresh_project, "--config=run.yml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ingested attribute_world: 3 classes (2 seen, 1 unseen)" in result.stderr


def test_a_missing_dataset_folder_is_named(fresh_project):
    kedro = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro), "run", "--env=own", "--params=own_root=/nowhere/my_dataset"],
        check=False,
        cwd=fresh_project,
        capture_output=True,
        text=True,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
        timeout=600,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "raw_source: dataset folder not found: /nowhere/my_dataset" in result.stderr


def test_a_typo_in_a_parameter_block_name_is_named(fresh_project):
    result = _kedro_run(fresh_project, "--params=predcit.top_k=5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown parameter block(s) 'predcit' (did you mean 'predict'?)" in result.stderr


def test_a_missing_predict_folder_stops_before_anything_runs(fresh_project):
    result = _kedro_run(fresh_project, "--params=predict.images=/nowhere/photos")
    assert result.returncode == 2
    assert "predict.images: images folder not found: /nowhere/photos" in result.stderr
    assert not (fresh_project / "data" / "03_primary").exists()  # nothing ran


def test_an_input_error_inside_a_node_is_reported_once_and_keeps_earlier_outputs(fresh_project):
    """A frozen trunk without pretrained weights fails in the backbone pipeline, after
    ingestion: one message with the fix, no echo of it by Kedro's node logger, and the
    ingestion outputs stay for the next run."""
    result = _kedro_run(fresh_project, "--params=backbone.trunk.frozen=true")
    assert result.returncode == 2, result.stderr[-3000:]
    output = result.stderr + result.stdout
    assert "Traceback" not in output
    assert output.count("backbone.weights is null") == 1
    assert "failed with error" not in output
    assert "no longer a 'PipelineML'" not in output  # kedro-mlflow, on Kedro's resume hint
    assert "Error: backbone.trunk.frozen is true but backbone.weights is null" in result.stderr
    assert (fresh_project / "data" / "03_primary" / "images.parquet").is_file()
