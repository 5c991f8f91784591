"""Project conventions: named nodes, declared intermediates with layers, scoped parameters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kedro.framework.project import configure_project, pipelines

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOK_WRITTEN = {"run_timings", "stage_timing_metrics"}


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
        layer = (entry.get("metadata") or {}).get("kedro-viz", {}).get("layer")
        assert layer, f"catalog entry {name} has no kedro-viz layer"


#: Pipelines that replay other stages' recipes on other data, and the blocks they may read.
REPLAYED_BLOCKS = {"validation": {"backbone", "extraction", "mapping", "transfer"}}


def test_each_pipeline_reads_only_its_own_parameter_block(registry, named_pipelines):
    for name in named_pipelines:
        allowed = {name} | REPLAYED_BLOCKS.get(name, set())
        for node in registry[name].nodes:
            for item in node.inputs:
                if item.startswith("params:"):
                    block = item.removeprefix("params:").split(".")[0]
                    assert block in allowed, f"node {node.name} of {name} reads params:{block}"


def test_every_parameter_block_belongs_to_a_pipeline_or_the_runtime(named_pipelines):
    blocks = set()
    for path in (REPO_ROOT / "conf").glob("*/parameters*.yml"):
        blocks |= set(yaml.safe_load(path.read_text()) or {})
    assert blocks <= named_pipelines | {"runtime"}, blocks - named_pipelines


@pytest.mark.parametrize("env", ["local", "test", "cub", "cub_sentences", "awa2", "text", "own"])
def test_every_environment_s_parameters_validate(env, named_pipelines):
    from kedro.config import OmegaConfigLoader

    from niwt_pipeline.params import validate_parameters
    from niwt_pipeline.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(
        str(REPO_ROOT / "conf"),
        base_env=CONFIG_LOADER_ARGS["base_env"],
        default_run_env=env,
        merge_strategy=CONFIG_LOADER_ARGS["merge_strategy"],
    )
    typed = validate_parameters(loader["parameters"])
    # importance and export take no parameters
    assert set(typed) == named_pipelines - {"importance", "export"} | {"runtime"}
