"""The project's Kedro datasets: round trips, atomic writes, read-only sources."""

from __future__ import annotations

import json

import pytest
import torch
from kedro.io import DatasetError

from niwt_pipeline.datasets import AttributeWorldDataset, CUBDataset, SafetensorsDataset

TINY_WORLD = {"seed": 3, "n_classes": 8, "n_unseen": 2, "images_per_class": 6, "image_size": 24}


class TestSafetensorsDataset:
    def test_round_trip_with_metadata(self, tmp_path):
        ds = SafetensorsDataset(filepath=str(tmp_path / "x" / "w.safetensors"))
        assert not ds.exists()
        data = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
        ds.save({**data, "__metadata__": {"arch": "small_cnn", "n": 2}})
        loaded = ds.load()
        assert ds.exists()
        assert torch.equal(loaded["a"], data["a"]) and torch.equal(loaded["b"], data["b"])
        assert loaded["__metadata__"] == {"arch": "small_cnn", "n": 2}

    def test_missing_file_names_the_path(self, tmp_path):
        ds = SafetensorsDataset(filepath=str(tmp_path / "none.safetensors"))
        with pytest.raises(DatasetError, match="none.safetensors"):
            ds.load()

    def test_failed_save_keeps_the_previous_file(self, tmp_path):
        path = tmp_path / "w.safetensors"
        ds = SafetensorsDataset(filepath=str(path))
        ds.save({"a": torch.ones(2)})
        before = path.read_bytes()
        with pytest.raises(DatasetError, match="not tensors"):
            ds.save({"a": torch.zeros(2), "b": [1, 2]})
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


class TestAttributeWorldDataset:
    def test_generates_once_then_reads(self, tmp_path):
        root = tmp_path / "world"
        ds = AttributeWorldDataset(path=str(root), world=TINY_WORLD)
        raw = ds.load()
        assert raw.name == "attribute_world"
        assert len(raw.classes) == 8 and int((~raw.classes["seen"]).sum()) == 2
        assert raw.image_attributes is not None and raw.descriptions is not None
        stamp = (root / "world.json").stat().st_mtime_ns
        ds.load()
        assert (root / "world.json").stat().st_mtime_ns == stamp

    def test_regenerates_when_the_configuration_changes(self, tmp_path):
        root = tmp_path / "world"
        AttributeWorldDataset(path=str(root), world=TINY_WORLD).load()
        raw = AttributeWorldDataset(path=str(root), world={**TINY_WORLD, "n_classes": 9}).load()
        assert len(raw.classes) == 9
        assert json.loads((root / "world.json").read_text())["config"]["n_classes"] == 9

    def test_bad_configuration_is_reported_before_anything_is_written(self, tmp_path):
        with pytest.raises(Exception, match="n_unseen"):
            AttributeWorldDataset(path=str(tmp_path / "w"), world={"n_unseen": 50}).load()
        assert not (tmp_path / "w").exists()


def test_layout_datasets_are_read_only(tmp_path):
    ds = CUBDataset(path=str(tmp_path), splits_file=str(tmp_path / "att_splits.mat"))
    with pytest.raises(DatasetError, match="read-only"):
        ds.save({"anything": 1})
    with pytest.raises(DatasetError, match="not found"):
        CUBDataset(path=str(tmp_path / "missing")).load()
