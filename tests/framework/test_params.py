"""Typed parameter blocks: bad values fail before any node runs, naming the key.

The models are checked directly (``Model.model_validate``) and through Kedro's own parameter
validation (``kedro.validation.ParameterValidator``), which builds the model of every typed
``params:`` input of a pipeline's nodes before the run.
"""

from __future__ import annotations

import pytest
from kedro.pipeline import Node, Pipeline
from kedro.validation import ParameterValidationError, ParameterValidator
from pydantic import BaseModel, ValidationError

from niwt_pipeline.core.baselines import BaselineConfig
from niwt_pipeline.core.extraction import ExtractionConfig
from niwt_pipeline.core.mapper import MapperConfig
from niwt_pipeline.core.trained import BackboneRecipe
from niwt_pipeline.core.training import TrainConfig
from niwt_pipeline.core.transfer import ReferenceConfig, TransferConfig, paper_config
from niwt_pipeline.core.validation import SearchConfig
from niwt_pipeline.params import (
    BLOCKS,
    BackboneParams,
    BaselineParams,
    ExplanationParams,
    ExtractionParams,
    IngestionParams,
    MappingParams,
    ReferenceParams,
    RuntimeParams,
    TransferParams,
    ValidationParams,
)


# ---------------------------------------------------------------------------------------
# The models themselves
# ---------------------------------------------------------------------------------------
def test_unknown_key_in_a_library_config_is_named():
    with pytest.raises(ValidationError, match=r"mapper\.learning_rate\n.*Unexpected keyword"):
        MappingParams.model_validate({"mapper": {"learning_rate": 0.1}})


def test_bad_value_is_named_with_its_path():
    with pytest.raises(ValidationError, match=r"train\.epochs\n.*valid integer"):
        BackboneParams.model_validate({"train": {"epochs": "many"}})
    with pytest.raises(ValidationError, match=r"visual\.alpha\n.*less than or equal to 1"):
        ExplanationParams.model_validate({"visual": {"alpha": 2}})


def test_unknown_top_level_key_of_a_block_is_named():
    with pytest.raises(ValidationError, match=r"refrence\n.*Extra inputs are not permitted"):
        TransferParams.model_validate({"refrence": {}})


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_forbids_unknown_keys_and_has_defaults(block):
    model = BLOCKS[block]
    assert issubclass(model, BaseModel)
    model.model_validate({})  # every key has a default
    with pytest.raises(ValidationError, match="nonsense"):
        model.model_validate({"nonsense": 1})


def test_blocks_are_the_pipelines_that_take_parameters_the_runtime_and_serving():
    assert set(BLOCKS) == {
        "predict",
        "serving",
        "runtime",
        "ingestion",
        "backbone",
        "extraction",
        "mapping",
        "transfer",
        "validation",
        "explanation",
    }


def test_library_validation_errors_surface():
    with pytest.raises(ValidationError, match=r"niwt\n.*TransferConfig\.lr: expected > 0"):
        TransferParams.model_validate({"niwt": {"lr": -1.0}})
    with pytest.raises(ValidationError, match=r"mapper\n.*MapperConfig\.patience: expected >= 1"):
        MappingParams.model_validate({"mapper": {"patience": 0}})
    with pytest.raises(ValidationError, match=r"fclswgan\n.*GeneratorConfig\.epochs: expected"):
        TransferParams.model_validate({"fclswgan": {"epochs": 0}})
    with pytest.raises(ValidationError, match=r"compatibility\.init\n.*'gaussian' or 'zeros'"):
        TransferParams.model_validate({"compatibility": {"init": "uniform"}})
    with pytest.raises(ValidationError, match=r"paper\n.*'cub' or 'awa2'"):
        TransferParams.model_validate({"paper": "sun"})


def test_valid_blocks_come_back_typed():
    runtime = RuntimeParams.model_validate({"seed": 4})
    assert runtime.seed == 4 and runtime.deterministic
    assert IngestionParams.model_validate({"classes": ["a", "b"]}).classes == ["a", "b"]
    mapping = MappingParams.model_validate({"mapper": {"lr": 0.01, "n_heldout_classes": 0.2}})
    assert mapping.mapper == MapperConfig(lr=0.01, n_heldout_classes=0.2)
    transfer = TransferParams.model_validate({"niwt": {"solver": "least_squares"}})
    assert transfer.niwt == TransferConfig(solver="least_squares")
    # the faithful row's settings follow transfer.paper, whatever transfer.niwt says
    cub = TransferParams.model_validate({"paper": "cub", "niwt": {"lr": 0.5, "seed": 3}})
    assert cub.paper_config() == paper_config("cub", seed=3)
    compatibility = cub.compatibility.config()
    assert (compatibility.batch_size, compatibility.normalise_features) == (32, True)


def test_models_convert_to_the_library_configurations():
    backbone = BackboneParams.model_validate(
        {"arch": "resnet18", "image_size": 96, "train": {"epochs": 3}}
    )
    assert backbone.recipe() == BackboneRecipe(
        arch="resnet18", image_size=96, train=TrainConfig(epochs=3)
    )
    extraction = ExtractionParams.model_validate({"batch_size": 32, "shard_size": 64})
    assert extraction.config() == ExtractionConfig(batch_size=32, shard_size=64)
    assert extraction.config(sharded=False) == ExtractionConfig(batch_size=32, shard_size=None)
    reference = ReferenceParams(max_images=100, gram_memory_budget_mb=8)
    assert reference.config() == ReferenceConfig(max_images=100, gram_memory_budget_mb=8)
    assert reference.config(max_images=16).max_images == 16
    assert BaselineParams(ridge_alpha=2.0, eszsl_gamma=0.1).config() == BaselineConfig(
        ridge_alpha=2.0, eszsl_gamma=0.1
    )
    validation = ValidationParams.model_validate(
        {"criterion": "ausuc", "niwt_grid": {"lam": [0.1, 1.0]}, "fusion_grid": [0.0, 0.5]}
    )
    assert validation.search() == SearchConfig(
        criterion="ausuc", niwt_grid={"lam": [0.1, 1.0]}, fusion_grid=[0.0, 0.5]
    )


def test_validation_grids_are_checked():
    checks = [
        ({"criterion": "H"}, r"criterion\n.*expected one of \('H_calibrated', 'ausuc', 'mean'\)"),
        ({"mapper_grid": {"learning_rate": [1]}}, r"unknown MapperConfig field\(s\)"),
        ({"mapper_grid": {"lr": [0.1, -1]}}, r"MapperConfig\.lr: expected > 0, got -1"),
        ({"niwt_grid": {"fusion": [1.0]}}, r"put fusion weights in validation\.fusion_grid"),
        ({"niwt_grid": {"learning_rate": [1]}}, r"NIWT variant: unknown key\(s\)"),
        ({"niwt_grid": {"solver": ["newton"]}}, r"TransferConfig\.solver"),
        ({"niwt_grid": {"anchor": ["zeros"]}}, r"anchor: expected one of"),
        ({"niwt_grid": {"lr": []}}, r"grid\['lr'\]: expected at least one value"),
        ({"fusion_grid": []}, r"fusion_grid\n.*one or more weights >= 0"),
        ({"fusion_grid": [0.0, -1.0]}, r"fusion_grid\n.*one or more weights >= 0"),
        ({"pseudo_unseen_classes": 0}, r"pseudo_unseen_classes\n.*greater than 0"),
        # a misspelt key is named as unknown even with a value that is not a list
        (
            {"baseline_grid": {"sae_lamda": 1}},
            r"unknown BaselineConfig field\(s\) \['sae_lamda'\]; expected some of \['ale_epochs'",
        ),
        (
            {"baseline_grid": {"sae_lambda": [0.0]}},
            r"baseline_grid\.sae_lambda: expected values > 0",
        ),
        ({"baseline_grid": {"ridge_alpha": [-1.0]}}, r"baseline_grid\.ridge_alpha"),
        (
            {"baseline_grid": {"ale_epochs": [5, 2.5]}},
            r"baseline_grid\.ale_epochs: expected whole numbers >= 1",
        ),
        ({"baseline_grid": {"sje_lr": [0.0]}}, r"baseline_grid\.sje_lr: expected values > 0"),
    ]
    for raw, message in checks:
        with pytest.raises(ValidationError, match=message):
            ValidationParams.model_validate(raw)
    ok = {"init": ["ridge", "mean_seen"], "anchor": ["ridge"], "solver": ["least_squares"]}
    assert ValidationParams.model_validate({"niwt_grid": ok}).niwt_grid == ok


def test_extraction_shard_size_is_a_multiple_of_the_batch_size():
    with pytest.raises(
        ValidationError, match=r"shard_size 100 must be a multiple of batch_size 32"
    ):
        ExtractionParams.model_validate({"batch_size": 32, "shard_size": 100})
    with pytest.raises(ValidationError, match=r"\(e\.g\. 96 or 128\)"):
        ExtractionParams.model_validate({"batch_size": 32, "shard_size": 100})
    with pytest.raises(ValidationError, match=r"shard_size\n.*greater than or equal to 1"):
        ExtractionParams.model_validate({"shard_size": 0})
    assert ExtractionParams.model_validate({"batch_size": 32, "shard_size": 96}).shard_size == 96
    assert ExtractionParams.model_validate({"batch_size": 32}).shard_size is None
    with pytest.raises(ValueError, match="multiple of batch_size 8"):
        ExtractionConfig(batch_size=8, shard_size=12)


def test_auto_threads_use_every_core_on_small_machines_and_leave_one_on_larger(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert RuntimeParams().resolved_threads() == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert RuntimeParams().resolved_threads() == 7
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert RuntimeParams().resolved_threads() == 1
    assert RuntimeParams(num_threads=3).resolved_threads() == 3
    with pytest.raises(ValidationError, match="num_threads"):
        RuntimeParams.model_validate({"num_threads": "many"})


# ---------------------------------------------------------------------------------------
# Kedro's parameter validation of typed node inputs
# ---------------------------------------------------------------------------------------
def fit_stage(
    images: object, mapping: MappingParams, validation: ValidationParams, extraction: object
) -> int:
    """A node function typed like the project's nodes (its body never runs here)."""
    return 0


def _validator() -> ParameterValidator:
    node = Node(
        fit_stage,
        ["images", "params:mapping", "params:validation", "params:extraction"],
        "out",
        name="fit_stage",
    )
    return ParameterValidator({"p": Pipeline([node])})


def test_kedro_builds_the_typed_models_and_leaves_the_rest():
    raw = {
        "mapping": {"mapper": {"lr": 0.1}},
        "validation": {"criterion": "ausuc"},
        "extraction": {"batch_size": "untyped"},  # an untyped input is passed through
        "other": 3,
    }
    typed = _validator().validate_raw_params(raw)
    assert typed["mapping"] == MappingParams(mapper=MapperConfig(lr=0.1))
    assert typed["validation"].criterion == "ausuc"
    assert typed["extraction"] == {"batch_size": "untyped"} and typed["other"] == 3
    assert raw["mapping"] == {"mapper": {"lr": 0.1}}  # the raw parameters are not modified


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"mapping": {"mapper": {"learning_rate": 0.1}}},
            r"Parameter 'mapping'.*MappingParams(.|\n)*mapper\.learning_rate",
        ),
        (
            {"mapping": {}, "validation": {"criterion": "H"}},
            r"Parameter 'validation'(.|\n)*expected one of \('H_calibrated'",
        ),
        ({"mapping": None}, r"Parameter 'mapping': value is None"),
    ],
)
def test_kedro_rejects_bad_parameters_naming_them(raw, message):
    with pytest.raises(ParameterValidationError, match=message):
        _validator().validate_raw_params(raw)
