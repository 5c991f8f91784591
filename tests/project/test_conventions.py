"""Project conventions: named nodes, declared intermediates whose layers match their folders
and flow one way, typed parameter blocks scoped to their pipelines, architecture contracts."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from kedro.framework.project import configure_project, pipelines
from pydantic import BaseModel
from tests.helpers import LAYERS

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOK_WRITTEN = {"run_timings", "stage_timing_metrics"}

#: The folder of each data layer under data/.
FOLDERS = {f"0{i + 1}_{layer}": layer for i, layer in enumerate(LAYERS)}

#: The validation pipeline replays the recipes of these stages on other data, so it reads
#: their parameter blocks (one parameter per decision: never a copy of them); so does the
#: explanation pipeline, which makes rows for the pseudo-unseen classes to choose the
#: explanations' evidence on them.
REPLAYED_BLOCKS = {
    "validation": {"backbone", "extraction", "mapping", "transfer"},
    "explanation": {"mapping"},
}


@pytest.fixture(scope="module")
def registry():
    configure_project("niwt_pipeline")
    return dict(pipelines)


@pytest.fixture(scope="module")
def base_catalog() -> dict:
    """Every entry of conf/base/catalog*.yml (Kedro reads all of them)."""
    entries: dict = {}
    for path in sorted((REPO_ROOT / "conf" / "base").glob("catalog*.yml")):
        entries.update(yaml.safe_load(path.read_text()) or {})
    return entries


def _layer(entry: dict) -> str | None:
    return (entry.get("metadata") or {}).get("kedro-viz", {}).get("layer")


def _location(entry: dict) -> str | None:
    """The file or folder an entry reads and writes (through an MLflow artifact wrapper)."""
    inner = entry.get("dataset") if isinstance(entry.get("dataset"), dict) else entry
    return inner.get("filepath") or inner.get("path")


def test_named_pipelines_are_registered(registry, named_pipelines):
    assert named_pipelines <= set(registry)
    everything = set().union(*(registry[name].nodes for name in named_pipelines))
    assert set(registry["__default__"].nodes) == everything


def test_every_node_has_an_explicit_name(registry):
    for node in registry["__default__"].nodes:
        assert node.name == node.func.__name__, (
            f"node {node.name} should be named after its function"
        )
        assert not re.search(r"\(\[.*\]\)", node.name)


def test_every_dataset_is_declared_with_a_layer(registry, base_catalog):
    used = {
        name
        for name in registry["__default__"].datasets()
        if not name.startswith("params:") and name != "parameters"
    }
    undeclared = sorted(used - set(base_catalog))
    assert not undeclared, (
        f"datasets used by pipelines but not in conf/base/catalog*.yml: {undeclared}"
    )
    unused = sorted(set(base_catalog) - used - HOOK_WRITTEN)
    assert not unused, f"catalog entries no pipeline uses: {unused}"
    for name, entry in base_catalog.items():
        assert _layer(entry) in LAYERS, f"catalog entry {name} has no known kedro-viz layer"


def test_every_layer_matches_its_folder(base_catalog):
    """A file under data/0N_<layer>/ is in that layer; MLflow metrics are reporting."""
    for name, entry in base_catalog.items():
        location = _location(entry)
        if location is None:
            expected = "reporting" if "Metrics" in entry["type"] else "raw"
        else:
            folder = Path(location).parts[1]
            assert folder in FOLDERS, f"{name}: {location} is not under a data/0N_<layer> folder"
            expected = FOLDERS[folder]
        assert _layer(entry) == expected, f"{name}: layer {_layer(entry)}, folder says {expected}"


def test_layers_flow_one_way(registry, base_catalog):
    """No node writes into an earlier layer than one it reads: so the layers have no cycle
    and kedro-viz can draw them."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    for node in registry["__default__"].nodes:
        inputs = [i for i in node.inputs if not i.startswith("params:")]
        for output in node.outputs:
            for item in inputs:
                before, after = _layer(base_catalog[item]), _layer(base_catalog[output])
                assert rank[before] <= rank[after], (
                    f"node {node.name} reads {item} ({before}) and writes {output} ({after})"
                )


def test_each_pipeline_reads_only_its_own_parameter_block(registry, named_pipelines):
    for name in named_pipelines:
        allowed = {name} | REPLAYED_BLOCKS.get(name, set())
        for node in registry[name].nodes:
            for item in node.inputs:
                if item.startswith("params:"):
                    block = item.removeprefix("params:").split(".")[0]
                    assert block in allowed, f"node {node.name} of {name} reads params:{block}"


def test_every_parameter_input_is_typed_so_kedro_validates_it(registry):
    """Kedro validates a ``params:`` input against its node's pydantic type hint."""
    from niwt_pipeline.params import BLOCKS

    for node in registry["__default__"].nodes:
        hints = typing.get_type_hints(node.func)
        arguments = list(inspect.signature(node.func).parameters)
        for position, item in enumerate(node.inputs):
            if item.startswith("params:"):
                block = item.removeprefix("params:")
                hint = hints.get(arguments[position])
                assert isinstance(hint, type) and issubclass(hint, BaseModel), (
                    f"{node.name}: argument {arguments[position]} ({item}) is not typed"
                )
                assert hint is BLOCKS[block], f"{node.name}: {item} typed {hint}"


#: Parameter blocks read by hooks, not by nodes: the run's seeding and threads, and where
#: the MLflow model logged after a run is registered.
HOOK_BLOCKS = {"runtime", "serving"}


def test_every_parameter_block_belongs_to_a_pipeline_or_a_hook(named_pipelines):
    from niwt_pipeline.params import BLOCKS

    blocks = set()
    for path in (REPO_ROOT / "conf").glob("*/parameters*.yml"):
        blocks |= set(yaml.safe_load(path.read_text()) or {})
    assert blocks <= named_pipelines | HOOK_BLOCKS, blocks - named_pipelines
    assert set(BLOCKS) == named_pipelines - {"importance", "export"} | HOOK_BLOCKS


@pytest.mark.parametrize("env", ["local", "test", "cub", "cub_sentences", "awa2", "text", "own"])
def test_every_environment_s_parameters_validate(env, registry):
    from kedro.config import OmegaConfigLoader
    from kedro.validation import ParameterValidator

    from niwt_pipeline.params import BLOCKS
    from niwt_pipeline.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(
        str(REPO_ROOT / "conf"),
        base_env=CONFIG_LOADER_ARGS["base_env"],
        default_run_env=env,
        merge_strategy=CONFIG_LOADER_ARGS["merge_strategy"],
    )
    raw = loader["parameters"]
    typed = ParameterValidator(registry).validate_raw_params(raw)
    for block, model in BLOCKS.items():
        if block in HOOK_BLOCKS:
            model.model_validate(raw[block])
        else:
            assert isinstance(typed[block], model), block


def test_architecture_contracts_hold():
    """``lint-imports`` (import-linter, contracts in pyproject.toml): the library imports
    neither Kedro nor MLflow nor the adapters; no pipeline imports another; datasets and
    parameter models import no pipeline; nodes never import MLflow."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(REPO_ROOT / "pyproject.toml")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_pipeline_module_names_another_pipeline():
    """Also by text: a lazy import inside a function counts as an import too."""
    root = REPO_ROOT / "src" / "niwt_pipeline" / "pipelines"
    names = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}
    for path in root.rglob("*.py"):
        own = path.relative_to(root).parts[0]
        text = path.read_text()
        for other in names - {own}:
            assert f"niwt_pipeline.pipelines.{other}" not in text, f"{path} imports {other}"


@pytest.mark.parametrize(("env", "read"), [(None, "local"), ("own", "base"), ("test", "base")])
def test_conf_local_mlflow_yml_is_read_only_without_env(tmp_path, env, read):
    """The README's advice: another tracking URI goes into conf/local/mlflow.yml for plain
    ``kedro run`` and into conf/<env>/mlflow.yml with ``--env``; Kedro reads base plus one
    environment, so conf/local is not read under --env."""
    import shutil

    from kedro.config import OmegaConfigLoader

    from niwt_pipeline.settings import CONFIG_LOADER_ARGS

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    (conf / "local").mkdir(exist_ok=True)
    (conf / "local" / "mlflow.yml").write_text(
        "server:\n  mlflow_tracking_uri: sqlite:///local.db\n"
    )
    loader = OmegaConfigLoader(
        str(conf),
        base_env=CONFIG_LOADER_ARGS["base_env"],
        default_run_env=CONFIG_LOADER_ARGS["default_run_env"],
        env=env,
        config_patterns={"mlflow": ["mlflow*", "mlflow*/**"]},
    )
    uri = loader["mlflow"]["server"]["mlflow_tracking_uri"]
    assert uri == ("sqlite:///local.db" if read == "local" else "sqlite:///mlflow.db")


@pytest.mark.parametrize(
    ("env", "folder"),
    [
        (None, "data"),
        ("test", "data"),
        ("cub", "data/cub"),
        ("cub_sentences", "data/cub_sentences"),
        ("awa2", "data/awa2"),
        ("own", "data/own"),
        ("text", "data/text"),
    ],
)
def test_each_dataset_environment_writes_its_own_data_folder(env, folder):
    """Outputs of two datasets never mix: after `--env=cub --pipelines=ingestion`, a plain
    `--pipelines=transfer` still reads the default world's tables, not CUB's."""
    from kedro.config import OmegaConfigLoader

    from niwt_pipeline.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(
        str(REPO_ROOT / "conf"),
        base_env=CONFIG_LOADER_ARGS["base_env"],
        default_run_env=CONFIG_LOADER_ARGS["default_run_env"],
        env=env,
        merge_strategy=CONFIG_LOADER_ARGS["merge_strategy"],
    )
    catalog = loader["catalog"]
    assert catalog["images"]["filepath"] == f"{folder}/03_primary/images.parquet"
    assert catalog["zero_shot_classifier"]["path"] == f"{folder}/06_models/zero_shot_classifier"
    assert catalog["extra_classes"]["filepath"] == f"{folder}/01_raw/extra_classes.csv"
    assert catalog["gzsl_metrics"]["dataset"]["filepath"].startswith(f"{folder}/08_reporting/")
