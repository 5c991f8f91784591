"""Shared fixtures of the node and pipeline tests: a tiny attribute world, tiny parameters,
the whole chain of node functions run once, and a helper that runs a pipeline in memory.

The chain runs every node once per session (a few seconds on a busy two-core machine);
node tests read its outputs instead of re-running the stages before theirs.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

matplotlib.use("Agg")

from niwt_pipeline.core.data.own import read_own_layout  # noqa: E402
from niwt_pipeline.core.data.tables import RawDataset  # noqa: E402
from niwt_pipeline.core.data.world import WorldConfig, generate_world, write_world  # noqa: E402
from niwt_pipeline.core.domain import NativeAttributes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The tiny world every test here uses: 6 seen + 2 unseen classes, 10 images each, 32 px.
WORLD = WorldConfig(n_classes=8, n_unseen=2, images_per_class=10, image_size=32)

#: Overrides that shrink the conf/base parameter blocks to test sizes (merged key by key).
TINY = {
    "ingestion": {},
    "backbone": {"image_size": 32, "train": {"epochs": 2, "batch_size": 16, "device": "cpu"}},
    "extraction": {"batch_size": 32, "device": "cpu"},
    "importance": {},
    "mapping": {
        "mapper": {"max_epochs": 10, "patience": 3, "batch_size": 32, "n_heldout_classes": 1},
    },
    "transfer": {
        "device": "cpu",
        "reference": {"max_images": 32, "batch_size": 32},
        "niwt": {"max_steps": 20, "patience": 5, "progress": False},
        "fclswgan": {"epochs": 2, "pretrain_epochs": 3, "classifier_epochs": 3, "hidden": 32},
    },
    "validation": {
        "pseudo_unseen_classes": 2,
        "reference_max_images": 16,
        "mapper_grid": {"weight_decay": [0.0, 0.01]},
        "niwt_grid": {  # every key of the base grid (grids merge key by key)
            "solver": ["least_squares"],
            "init": ["seen_centred"],
            "ls_alpha": [0.001, 0.01],
            "anchor": ["mean_seen"],
            "logit_matching": ["none", "seen_negatives"],  # both, to test each
        },
        "fusion_grid": [0.0, 1.0],
        "baseline_grid": {  # small grids of the trained baselines
            **{f"{loss}_lr": [0.1] for loss in ("ale", "sje", "devise")},
            **{f"{loss}_epochs": [1, 3] for loss in ("ale", "sje", "devise")},
            "fclswgan_n_synthetic": [10, 30],
        },
    },
    "predict": {"device": "cpu", "batch_size": 16},
}

#: The seed the RuntimeHook gives the global RNGs before a run (conf/base runtime.seed).
GLOBAL_SEED = 0


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated key by key with ``override`` (nested dicts merged, like
    ``merge_strategy: soft`` with ``--params``); neither argument is modified."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def base_parameters() -> dict[str, Any]:
    """conf/base parameters as Kedro loads them (the project's config loader arguments,
    interpolations such as ``${runtime.seed}`` resolved), without conf/local."""
    from kedro.config import OmegaConfigLoader

    from niwt_pipeline.settings import CONFIG_LOADER_ARGS

    args = {**CONFIG_LOADER_ARGS, "default_run_env": CONFIG_LOADER_ARGS["base_env"]}
    loader = OmegaConfigLoader(conf_source=str(REPO_ROOT / "conf"), **args)
    return loader["parameters"]


def base_block(name: str) -> dict[str, Any]:
    """The ``name`` block of the conf/base parameters (empty where there is none)."""
    return copy.deepcopy(base_parameters().get(name, {}))


def raw_params(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw ``params:<name>`` dict: conf/base values, shrunk to test sizes, then
    ``overrides`` merged in."""
    return merge(merge(base_block(name), TINY[name]), overrides or {})


@pytest.fixture(scope="session")
def params_for():
    """``params_for(name, overrides=None)``: a fresh ``params:<name>`` as Kedro hands it to
    the nodes: the block's model (``niwt_pipeline.params.BLOCKS``) validated from conf/base
    values, shrunk to test sizes, with ``overrides`` merged in."""
    from niwt_pipeline.params import BLOCKS

    def build(name: str, overrides: dict[str, Any] | None = None) -> Any:
        return BLOCKS[name].model_validate(raw_params(name, overrides))

    return build


@pytest.fixture(scope="session")
def raw_params_for():
    """``raw_params_for(name, overrides=None)``: the raw dict of :func:`params_for`."""
    return raw_params


@pytest.fixture(scope="session")
def world_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny attribute world written in the project's own layout."""
    root = tmp_path_factory.mktemp("world") / "attribute_world"
    write_world(generate_world(WORLD), root)
    return root


@pytest.fixture(scope="session")
def raw_world(world_root: Path) -> RawDataset:
    """The tiny world as :func:`read_own_layout` reads it back."""
    return read_own_layout(world_root)


@pytest.fixture(scope="session")
def domain_source() -> NativeAttributes:
    """The domain-knowledge source the base catalog configures (native attributes, max-scaled)."""
    return NativeAttributes(scale="max")


@dataclass(frozen=True)
class Chain:
    """Every node output of one run of the whole chain on the tiny world (read-only: tests
    that change an output copy it first)."""

    raw: RawDataset
    raw_domain_knowledge: pd.DataFrame
    domain_knowledge_info: dict[str, Any]
    images: pd.DataFrame
    classes: pd.DataFrame
    domain_knowledge: pd.DataFrame
    image_attributes: pd.DataFrame
    ingestion_summary: dict[str, Any]
    backbone: Any
    backbone_roles: pd.DataFrame
    backbone_report: dict[str, Any]
    backbone_metrics: dict[str, Any]
    validation_roles: pd.DataFrame
    validation_backbone: Any
    validation_backbone_report: dict[str, Any]
    validation_image_outputs: dict[str, torch.Tensor]
    validation_reference_cache: Any
    validation_niwt_rows: Any
    validation_choice: dict[str, Any]
    validation_results: pd.DataFrame
    validation_metrics: dict[str, Any]
    image_outputs: dict[str, torch.Tensor]
    image_importance: pd.DataFrame
    class_importance: pd.DataFrame
    mapper_weights: dict[str, torch.Tensor]
    predicted_importance: pd.DataFrame
    mapper_report: dict[str, Any]
    mapper_metrics: dict[str, Any]
    inverse_map_weights: dict[str, torch.Tensor]
    reference_cache: Any
    niwt_rows: Any
    transfer_report: dict[str, Any]
    baseline_rows: Any
    eszsl_model: Any
    ale_model: Any
    sje_model: Any
    devise_model: Any
    sae_model: Any
    fclswgan_generator: Any
    baseline_report: dict[str, Any]
    gzsl_evaluation: Any
    gzsl_metrics: dict[str, Any]
    gzsl_mlflow_metrics: dict[str, Any]
    seen_unseen_curve_plot: Any
    confusion_matrix_plot: Any
    zero_shot_classifier: Any

    @property
    def seen_ids(self) -> list[int]:
        return self.classes.loc[self.classes["seen"], "class_id"].astype(int).tolist()

    @property
    def unseen_ids(self) -> list[int]:
        return self.classes.loc[~self.classes["seen"], "class_id"].astype(int).tolist()


def _train_seeded(images, classes, params, seed: int = GLOBAL_SEED):
    """``train_backbone`` with the global torch RNG seeded as the RuntimeHook seeds it before
    a run, inside a forked RNG state (the caller's global RNG is left as it was)."""
    from niwt_pipeline.pipelines.backbone.nodes import assign_backbone_roles, train_backbone

    roles = assign_backbone_roles(images, params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, report, metrics = train_backbone(images, classes, roles, params)
    return backbone, roles, report, metrics


@pytest.fixture(scope="session")
def train_seeded():
    """``train_seeded(images, classes, params, seed=0)``: ``train_backbone`` after seeding
    the global torch RNG with ``seed`` (as the RuntimeHook does), leaving it as it was."""
    return _train_seeded


@pytest.fixture(scope="session")
def chain(raw_world: RawDataset, domain_source: NativeAttributes, params_for) -> Chain:
    """ingestion -> backbone -> validation -> extraction -> importance -> mapping -> transfer,
    once."""
    import matplotlib.pyplot as plt

    from niwt_pipeline.pipelines.extraction.nodes import extract_image_outputs
    from niwt_pipeline.pipelines.importance.nodes import build_importance_tables
    from niwt_pipeline.pipelines.ingestion.nodes import build_domain_knowledge, canonicalise_dataset
    from niwt_pipeline.pipelines.mapping.nodes import fit_importance_mapper, fit_inverse_mapper
    from niwt_pipeline.pipelines.transfer.nodes import (
        cache_reference,
        evaluate_gzsl,
        fit_baseline_models,
        package_classifier,
        report_gzsl,
        transfer_niwt_rows,
    )
    from niwt_pipeline.pipelines.validation.nodes import (
        cache_validation_reference,
        extract_validation_outputs,
        select_hyperparameters,
        split_for_validation,
        train_validation_backbone,
    )

    raw_dk, dk_info = build_domain_knowledge(raw_world, domain_source)
    images, classes, dk, image_attributes, summary = canonicalise_dataset(
        raw_world, raw_dk, dk_info, params_for("ingestion")
    )
    backbone, roles, backbone_report, backbone_metrics = _train_seeded(
        images, classes, params_for("backbone")
    )
    validation, mapping, transfer = (params_for(n) for n in ("validation", "mapping", "transfer"))
    extraction = params_for("extraction")
    val_roles = split_for_validation(images, classes, roles, validation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(GLOBAL_SEED)
        val_backbone, val_report = train_validation_backbone(
            images, val_roles, params_for("backbone")
        )
    val_outputs = extract_validation_outputs(val_backbone, images, val_roles, extraction)
    val_reference = cache_validation_reference(val_backbone, images, validation, transfer)
    choice, val_results, val_metrics, val_rows = select_hyperparameters(
        val_outputs, val_reference, val_backbone, val_roles, dk, validation, mapping, transfer
    )
    outputs = extract_image_outputs(backbone, images, extraction)
    image_importance, class_importance = build_importance_tables(outputs, images)
    mapper_weights, predicted, mapper_report, mapper_metrics = fit_importance_mapper(
        image_importance, dk, classes, choice, mapping
    )
    inverse = fit_inverse_mapper(image_importance, dk, mapping)
    reference = cache_reference(backbone, images, transfer)
    baseline_rows, eszsl, ale, sje, devise, sae, generator, baseline_report = fit_baseline_models(
        outputs, images, roles, dk, backbone, choice, transfer
    )
    rows, transfer_report = transfer_niwt_rows(
        reference,
        predicted,
        mapper_weights,
        classes,
        dk,
        backbone,
        baseline_rows,
        choice,
        outputs,
        images,
        roles,
        transfer,
    )
    evaluation = evaluate_gzsl(
        outputs,
        images,
        classes,
        dk,
        backbone,
        rows,
        baseline_rows,
        eszsl,
        ale,
        sje,
        devise,
        sae,
        choice,
    )
    metrics, mlflow_metrics, curve, confusion = report_gzsl(
        evaluation, choice, classes, summary, backbone
    )
    plt.close(curve)
    plt.close(confusion)
    classifier = package_classifier(backbone, rows, eszsl, choice, classes, dk, inverse, dk_info)
    return Chain(
        raw=raw_world,
        raw_domain_knowledge=raw_dk,
        domain_knowledge_info=dk_info,
        images=images,
        classes=classes,
        domain_knowledge=dk,
        image_attributes=image_attributes,
        ingestion_summary=summary,
        backbone=backbone,
        backbone_roles=roles,
        backbone_report=backbone_report,
        backbone_metrics=backbone_metrics,
        validation_roles=val_roles,
        validation_backbone=val_backbone,
        validation_backbone_report=val_report,
        validation_image_outputs=val_outputs,
        validation_reference_cache=val_reference,
        validation_niwt_rows=val_rows,
        validation_choice=choice,
        validation_results=val_results,
        validation_metrics=val_metrics,
        image_outputs=outputs,
        image_importance=image_importance,
        class_importance=class_importance,
        mapper_weights=mapper_weights,
        predicted_importance=predicted,
        mapper_report=mapper_report,
        mapper_metrics=mapper_metrics,
        inverse_map_weights=inverse,
        reference_cache=reference,
        niwt_rows=rows,
        transfer_report=transfer_report,
        baseline_rows=baseline_rows,
        eszsl_model=eszsl,
        ale_model=ale,
        sje_model=sje,
        devise_model=devise,
        sae_model=sae,
        fclswgan_generator=generator,
        baseline_report=baseline_report,
        gzsl_evaluation=evaluation,
        gzsl_metrics=metrics,
        gzsl_mlflow_metrics=mlflow_metrics,
        seen_unseen_curve_plot=curve,
        confusion_matrix_plot=confusion,
        zero_shot_classifier=classifier,
    )


class _KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so intermediates stay loadable after a run."""

    def _release(self) -> None:
        pass


def _memory(data: Any) -> MemoryDataset:
    """DataFrames are copied on load (nodes cannot change the shared fixtures); everything
    else (torch dicts, the raw dataset, plain dicts) is passed as is, as the catalog's
    ``copy_mode: assign`` entries do."""
    if isinstance(data, pd.DataFrame):
        return MemoryDataset(data=data, copy_mode="copy")
    return MemoryDataset(data=data, copy_mode="assign")


@pytest.fixture(scope="session")
def run_pipeline():
    """``run_pipeline(pipeline, inputs)``: run ``pipeline`` with ``SequentialRunner`` on a
    ``DataCatalog`` of ``MemoryDataset`` s filled from ``inputs`` (dataset name -> data,
    ``params:<block>`` included) and return every output, free or intermediate, loaded.

    Checks on the way that the runner returned exactly the pipeline's free outputs."""

    def run(pipeline: Pipeline, inputs: dict[str, Any]) -> dict[str, Any]:
        datasets = {name: _memory(value) for name, value in inputs.items()}
        for name in pipeline.all_outputs():
            datasets[name] = _KeptMemoryDataset(copy_mode="assign")
        catalog = DataCatalog(datasets=datasets)
        produced = SequentialRunner().run(pipeline, catalog)
        assert set(produced) == pipeline.outputs()
        return {name: catalog.load(name) for name in sorted(pipeline.all_outputs())}

    return run
