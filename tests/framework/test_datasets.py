"""The project's Kedro datasets: round trips, atomic writes, read-only sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kedro.io import DatasetError
from safetensors import safe_open
from safetensors.torch import load_file
from tests.helpers import SEEN_IDS, hand_set_backbone, hand_set_spec, hand_set_state

from niwt_pipeline.core.baselines import ESZSLModel, SAEModel
from niwt_pipeline.core.compatibility import CompatibilityModel
from niwt_pipeline.core.generative import GeneratorConfig, fit_generator
from niwt_pipeline.core.gzsl import GZSLEvaluation, evaluate_methods
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.transfer import ReferenceCache
from niwt_pipeline.datasets import (
    AttributeWorldDataset,
    CUBDataset,
    SafetensorsDataset,
    SafetensorsObjectDataset,
    TrainedBackboneDataset,
)
from niwt_pipeline.datasets.tensors import read_safetensors, write_safetensors

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


class TestTrainedBackboneDataset:
    def test_round_trip(self, tmp_path):
        ds = TrainedBackboneDataset(path=str(tmp_path / "models" / "backbone"))
        assert not ds.exists()
        original = hand_set_backbone()
        ds.save(original)
        assert ds.exists()
        loaded = ds.load()
        assert isinstance(loaded, TrainedBackbone)
        assert loaded.spec == original.spec == hand_set_spec()
        assert sorted(loaded.state) == sorted(original.state)
        for key, value in original.state.items():
            assert loaded.state[key].dtype == value.dtype
            assert torch.equal(loaded.state[key], value), key
        np.testing.assert_array_equal(loaded.seen_rows().weight, original.seen_rows().weight)
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(loaded.cut(x), original.cut(x), rtol=0, atol=0)

    def test_saved_files_are_plain_json_and_safetensors(self, tmp_path):
        root = tmp_path / "backbone"
        TrainedBackboneDataset(path=str(root)).save(hand_set_backbone())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone"]  # no staging left
        assert sorted(p.name for p in root.iterdir()) == ["spec.json", "weights.safetensors"]
        spec = json.loads((root / "spec.json").read_text(encoding="utf-8"))
        assert spec == {
            "arch": "small_cnn",
            "layer": "block3",
            "image_size": 16,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "seen_class_ids": SEEN_IDS,
            "crop_fraction": 1.0,
            "trunk": None,
        }
        weights = load_file(str(root / "weights.safetensors"))
        state = hand_set_state()
        assert sorted(weights) == sorted(state)
        assert all(torch.equal(weights[k], v) for k, v in state.items())

    def test_save_replaces_a_previous_backbone(self, tmp_path):
        ds = TrainedBackboneDataset(path=str(tmp_path / "backbone"))
        ds.save(hand_set_backbone())
        state = {**hand_set_state(), "fc.bias": torch.tensor([9.0, 8.0, 7.0])}
        ds.save(TrainedBackbone(hand_set_spec(image_size=32), state))
        loaded = ds.load()
        assert loaded.spec.image_size == 32
        assert loaded.state["fc.bias"].tolist() == [9.0, 8.0, 7.0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone"]

    def test_errors_name_the_folder(self, tmp_path):
        ds = TrainedBackboneDataset(path=str(tmp_path / "backbone"))
        with pytest.raises(DatasetError, match="no trained backbone"):
            ds.load()
        with pytest.raises(DatasetError, match="expected a TrainedBackbone"):
            ds.save({"spec": hand_set_spec()})
        assert not (tmp_path / "backbone").exists()
        ds.save(hand_set_backbone())
        (tmp_path / "backbone" / "spec.json").write_text('{"arch": "small_cnn"}')
        with pytest.raises(DatasetError, match=r"spec.json: not a backbone spec.*missing keys"):
            ds.load()


def _row_set() -> RowSet:
    seen = ClassRows("seen", [3, 1], np.array([[1.0, -2.0], [0.5, 0.25]], dtype=np.float32), [1, 2])
    return RowSet(
        {
            "niwt": ClassRows("niwt", [7, 5], np.array([[0.1, 0.2], [0.3, 0.4]]), [0.5, -0.5]),
            "seen": seen,
        }
    )


def _evaluation() -> GZSLEvaluation:
    scores = np.array([[3.0, 1.0, 2.0], [0.0, 2.0, 0.5], [1.0, 0.0, 0.5], [0.0, 2.5, 0.0]])
    return evaluate_methods(
        {"niwt": scores, "eszsl": -scores},
        [100, 101, 102, 103],
        [4, 9, 2, 2],
        [4, 9, 2],
        [True, True, False],
        {"niwt": 0.75, "eszsl": -0.5},
    )


class TestSafetensorsObjectDataset:
    @staticmethod
    def _round_trip(tmp_path, value, object_type: str):
        ds = SafetensorsObjectDataset(
            filepath=str(tmp_path / "out" / "value.safetensors"), object_type=object_type
        )
        assert not ds.exists()
        ds.save(value)
        assert ds.exists()
        return ds.load()

    def test_row_set(self, tmp_path):
        rows = _row_set()
        back = self._round_trip(tmp_path, rows, "niwt_pipeline.core.rows.RowSet")
        assert isinstance(back, RowSet) and list(back) == ["niwt", "seen"]
        for method, value in rows.items():
            assert back[method].method == method
            assert back[method].weight.dtype == value.weight.dtype
            for name in ("class_ids", "weight", "bias"):
                np.testing.assert_array_equal(getattr(back[method], name), getattr(value, name))

    def test_row_sets_sharing_memory_are_written(self, tmp_path):
        ids = np.array([1, 2])
        shared = RowSet(
            {
                "a": ClassRows("a", ids, np.eye(2), np.zeros(2)),
                "b": ClassRows("b", ids, np.ones((2, 2)), np.zeros(2)),
            }
        )
        assert np.shares_memory(
            shared["a"].class_ids, shared["b"].class_ids
        )  # one buffer, two rows
        back = self._round_trip(tmp_path, shared, "niwt_pipeline.core.rows.RowSet")
        assert back["b"].class_ids.tolist() == [1, 2]

    @pytest.mark.parametrize("kind", ["gram", "activations"])
    def test_reference_cache(self, tmp_path, kind):
        tensor = torch.arange(24.0).view(2, 3, 2, 2)
        if kind == "gram":
            tensor = tensor.view(2, 3, 4)
        cache = ReferenceCache(**{kind: tensor})
        back = self._round_trip(tmp_path, cache, "niwt_pipeline.core.transfer.ReferenceCache")
        assert isinstance(back, ReferenceCache) and back.n_images == 2
        assert torch.equal(getattr(back, kind), tensor)
        other = "activations" if kind == "gram" else "gram"
        assert getattr(back, other) is None

    def test_eszsl_model(self, tmp_path):
        model = ESZSLModel(np.array([[1.0, -0.5], [0.25, 2.0], [3.0, 0.0]]), gamma=0.01, lam=100.0)
        back = self._round_trip(tmp_path, model, "niwt_pipeline.core.baselines.ESZSLModel")
        assert (back.gamma, back.lam) == (0.01, 100.0)
        assert back.projection.dtype == np.float64
        np.testing.assert_array_equal(back.projection, model.projection)

    def test_sae_model(self, tmp_path):
        model = SAEModel(np.array([[1.0, -0.5, 0.0], [0.25, 2.0, 4.0]]), lam=10.0)
        back = self._round_trip(tmp_path, model, "niwt_pipeline.core.baselines.SAEModel")
        assert back.lam == 10.0 and back.projection.dtype == np.float64
        np.testing.assert_array_equal(back.projection, model.projection)

    def test_compatibility_model(self, tmp_path):
        model = CompatibilityModel(
            np.array([[1.0, -0.5], [0.25, 2.0]]), "sje", {"lr": 0.1, "epochs": 5}, False
        )
        back = self._round_trip(
            tmp_path, model, "niwt_pipeline.core.compatibility.CompatibilityModel"
        )
        assert (back.loss, back.settings, back.normalise_features) == ("sje", model.settings, False)
        np.testing.assert_array_equal(back.projection, model.projection)

    def test_feature_generator(self, tmp_path):
        rng = np.random.default_rng(0)
        dk = rng.random((3, 4))
        labels = np.repeat(np.arange(3), 10)
        features = np.maximum(dk[labels] @ rng.normal(size=(4, 6)) + 0.1, 0.0)
        config = GeneratorConfig(epochs=1, hidden=8, pretrain_epochs=1, classifier_epochs=1)
        generator = fit_generator(features, labels, dk, config)
        back = self._round_trip(
            tmp_path, generator, "niwt_pipeline.core.generative.FeatureGenerator"
        )
        assert back.config == generator.config
        for one, other in zip(generator.generate(dk, 3, 7), back.generate(dk, 3, 7), strict=True):
            np.testing.assert_array_equal(one, other)

    def test_gzsl_evaluation(self, tmp_path):
        evaluation = _evaluation()
        back = self._round_trip(tmp_path, evaluation, "niwt_pipeline.core.gzsl.GZSLEvaluation")
        assert back.methods == ["niwt", "eszsl"]
        for name in ("image_ids", "labels", "class_ids", "seen"):
            value = getattr(back, name)
            assert value.dtype == getattr(evaluation, name).dtype
            np.testing.assert_array_equal(value, getattr(evaluation, name))
        for method, result in evaluation.results.items():
            again = back.results[method]
            assert (again.method, again.gamma, again.metrics) == (
                result.method,
                result.gamma,
                result.metrics,
            )
            for name in ("scores", "predicted", "curve_s", "curve_u", "per_class_accuracy"):
                assert getattr(again, name).dtype == getattr(result, name).dtype
                np.testing.assert_array_equal(getattr(again, name), getattr(result, name))
        assert back.metrics_percent() == evaluation.metrics_percent()

    def test_the_file_is_plain_safetensors_with_json_metadata(self, tmp_path):
        path = tmp_path / "rows.safetensors"
        SafetensorsObjectDataset(
            filepath=str(path), object_type="niwt_pipeline.core.rows.RowSet"
        ).save(_row_set())
        with safe_open(str(path), framework="pt") as handle:
            assert json.loads(handle.metadata()["json"]) == {"methods": ["niwt", "seen"]}
            assert handle.get_tensor("niwt.class_id").tolist() == [7, 5]
        tensors, metadata = read_safetensors(path)
        assert metadata == {"methods": ["niwt", "seen"]} and len(tensors) == 6

    def test_wrong_types_and_missing_files(self, tmp_path):
        with pytest.raises(DatasetError, match="has no to_safetensors"):
            SafetensorsObjectDataset(filepath=str(tmp_path / "x"), object_type="builtins.dict")
        ds = SafetensorsObjectDataset(
            filepath=str(tmp_path / "rows.safetensors"),
            object_type="niwt_pipeline.core.rows.RowSet",
        )
        with pytest.raises(
            DatasetError, match="expected a niwt_pipeline.core.rows.RowSet, got dict"
        ):
            ds.save({"niwt": 1})
        with pytest.raises(DatasetError, match="rows.safetensors: file not found"):
            ds.load()
        assert not (tmp_path / "rows.safetensors").exists()


def test_write_safetensors_without_metadata_reads_back_empty(tmp_path):
    path = tmp_path / "plain.safetensors"
    write_safetensors(path, {"a": torch.tensor([1, 2])})
    tensors, metadata = read_safetensors(path)
    assert metadata == {} and tensors["a"].tolist() == [1, 2]
