"""Typed parameter blocks: bad values fail before any node runs, naming the key."""

from __future__ import annotations

import pytest

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.params import RuntimeParams, validate_parameters


def test_unknown_key_in_a_library_config_is_named():
    with pytest.raises(InputError, match=r"mapping.*mapper.*learning_rate"):
        validate_parameters({"mapping": {"mapper": {"learning_rate": 0.1}}})


def test_bad_value_is_named_with_its_path():
    with pytest.raises(InputError, match=r"backbone\.train"):
        validate_parameters({"backbone": {"train": {"epochs": "many"}}})


def test_unknown_top_level_key_of_a_block_is_named():
    with pytest.raises(InputError, match=r"transfer.*refrence"):
        validate_parameters({"transfer": {"refrence": {}}})


def test_library_validation_errors_surface():
    with pytest.raises(InputError, match=r"lr"):
        validate_parameters({"transfer": {"niwt": {"lr": -1.0}}})


def test_valid_blocks_come_back_typed():
    typed = validate_parameters({"runtime": {"seed": 4}, "ingestion": {"classes": ["a", "b"]}})
    assert typed["runtime"].seed == 4
    assert typed["ingestion"].classes == ["a", "b"]


def test_auto_threads_is_one_on_small_machines(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert RuntimeParams().resolved_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert RuntimeParams().resolved_threads() == 7
    assert RuntimeParams(num_threads=3).resolved_threads() == 3
