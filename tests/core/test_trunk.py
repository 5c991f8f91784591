"""The frozen trunk: activations stored once per image (resumable, fingerprinted), the head
run on them, and a backbone whose head alone is trained on them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from PIL import Image
from safetensors.torch import save_file
from tests.helpers import SEEN_IDS, hand_set_backbone, hand_set_state

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trained import BackboneRecipe, fit_backbone, trunk_activations
from niwt_pipeline.core.training import TrainConfig
from niwt_pipeline.core.trunk import TrunkActivations, TrunkConfig, compute_trunk_activations
from niwt_pipeline.datasets import TrunkActivationsDataset

N_IMAGES = 12


def _write_image(path, seed: int) -> None:
    rng = np.random.default_rng(seed)  # blocks of colour: the hand-set stem responds to edges
    blocks = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    blocks.resize((18, 20), Image.Resampling.NEAREST).save(path)


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    rows = []
    for i in range(N_IMAGES):
        path = tmp_path / f"image{i:02d}.png"
        _write_image(path, i)
        rows.append(
            {
                "image_id": 100 + i,
                "path": str(path),
                "class_id": SEEN_IDS[i % 3],
                "split": "trainval" if i < 9 else "test_seen",
            }
        )
    return pd.DataFrame(rows)


def _config(**changes) -> TrunkConfig:
    values = {"frozen": True, "shard_size": 5, "batch_size": 3, "device": "cpu"} | changes
    return TrunkConfig(**values)


def test_stored_rows_are_the_stems_activations_of_the_centre_crop(images, tmp_path):
    backbone = hand_set_backbone()
    store = ShardStore(tmp_path / "trunk")
    trunk = compute_trunk_activations(backbone.cut.stem, backbone.spec, images, _config(), store)
    assert store.names() == ["shard-00000", "shard-00001", "shard-00002"]  # 12 rows by 5
    assert trunk.manifest["shape"] == [128, 2, 2]  # block3 of a 16-px input
    x = next(iter(image_loader(images, backbone.spec, batch_size=N_IMAGES)))[0]
    with torch.no_grad():
        expected = backbone.cut.stem(x)
    stored = torch.stack([trunk.row(trunk.views_of(i)[0]) for i in images["image_id"]])
    torch.testing.assert_close(stored, expected, rtol=1e-6, atol=1e-6)
    assert trunk.covers(images["image_id"]) and not trunk.covers([999])
    with pytest.raises(InputError, match="image_id 999"):
        trunk.views_of(999)


def test_the_head_on_stored_activations_gives_the_logits_of_the_images(images, tmp_path):
    backbone = hand_set_backbone()
    trunk = compute_trunk_activations(
        backbone.cut.stem, backbone.spec, images, _config(), ShardStore(tmp_path / "t")
    )
    # A backbone trained on another trunk (or the whole network) runs on the images.
    model, loader = backbone.inputs(images, trunk, batch_size=4)
    assert model is backbone.cut and loader.dataset[0][0].shape == (3, 16, 16)
    backbone.spec.trunk = trunk.fingerprint
    model, loader = backbone.inputs(images, trunk, batch_size=4)
    assert model is backbone.head_cut and loader.dataset[0][0].shape == (128, 2, 2)
    with torch.no_grad():
        from_stored = torch.cat([model(a) for a, _, _ in loader])
        x = next(iter(image_loader(images, backbone.spec, batch_size=N_IMAGES)))[0]
        from_images = backbone.cut(x)
    torch.testing.assert_close(from_stored, from_images, rtol=1e-5, atol=1e-5)
    labels = torch.cat([y for _, y, _ in loader])
    assert labels.tolist() == [i % 3 for i in range(N_IMAGES)]  # SEEN_IDS[i % 3] -> index
    # Images without stored activations (a folder of reference images) run on the images.
    outside = images.drop(columns="image_id")
    assert backbone.inputs(outside, trunk, batch_size=4)[0] is backbone.cut


def test_a_killed_computation_resumes_after_the_stored_shards(images, tmp_path):
    backbone = hand_set_backbone()
    store = ShardStore(tmp_path / "trunk")
    broken = images.copy()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    broken.loc[7, "path"] = str(tmp_path / "broken.png")  # in the second shard
    with pytest.raises(InputError, match="broken.png"):
        compute_trunk_activations(backbone.cut.stem, backbone.spec, broken, _config(), store)
    assert store.names() == ["shard-00000"]
    first = store.path("shard-00000").stat().st_mtime_ns
    _write_image(tmp_path / "broken.png", 7)  # the user fixes the file; the path is the same
    trunk = compute_trunk_activations(backbone.cut.stem, backbone.spec, broken, _config(), store)
    assert store.path("shard-00000").stat().st_mtime_ns == first  # skipped, not recomputed
    assert store.names() == ["shard-00000", "shard-00001", "shard-00002"]
    trunk.check_files()


def test_activations_of_another_stem_or_setting_are_recomputed(images, tmp_path):
    backbone = hand_set_backbone()
    store = ShardStore(tmp_path / "trunk")
    first = compute_trunk_activations(backbone.cut.stem, backbone.spec, images, _config(), store)
    stamp = store.path("shard-00000").stat().st_mtime_ns
    other = hand_set_backbone()
    with torch.no_grad():
        other.cut.stem.get_submodule("block1.0").weight.mul_(2.0)  # another stem
    second = compute_trunk_activations(other.cut.stem, other.spec, images, _config(), store)
    assert second.fingerprint != first.fingerprint
    assert store.path("shard-00000").stat().st_mtime_ns != stamp
    with pytest.raises(InputError, match="missing or stale"):
        first.check_files()  # the old manifest no longer matches the files


def test_random_crop_views_of_trainval_images_are_seeded_per_image(images, tmp_path):
    spec = hand_set_backbone().spec
    stem = torch.nn.Conv2d(3, 2, 3, bias=False)  # a hand-set stem that sees every pixel
    with torch.no_grad():
        stem.weight.copy_(torch.arange(54, dtype=torch.float32).view(2, 3, 3, 3) / 54)
    trunk = compute_trunk_activations(
        stem, spec, images, _config(views=3), ShardStore(tmp_path / "a")
    )
    assert len(trunk.manifest["rows"]["view"]) == N_IMAGES + 9 * 2  # 9 trainval images
    assert trunk.manifest["shape"] == [2, 14, 14]
    views = trunk.views_of(100)
    assert len(views) == 3 and len(trunk.views_of(111)) == 1  # a test image: centre only
    x = next(iter(image_loader(images.iloc[:1], spec, batch_size=1)))[0]
    with torch.no_grad():
        torch.testing.assert_close(trunk.row(views[0]), stem(x)[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(trunk.row(views[0]), trunk.row(views[1]))  # a random crop
    assert not torch.allclose(trunk.row(views[1]), trunk.row(views[2]))
    # The same views whatever the shard size (each view is seeded by image and view).
    again = compute_trunk_activations(
        stem, spec, images, _config(views=3, shard_size=7, batch_size=2), ShardStore(tmp_path / "b")
    )
    for view in (1, 2):
        torch.testing.assert_close(
            again.row(again.views_of(100)[view]), trunk.row(views[view]), rtol=1e-6, atol=1e-6
        )


def _recipe(weights, **trunk) -> BackboneRecipe:
    return BackboneRecipe(
        arch="small_cnn",
        weights=weights,
        layer="block3",
        image_size=16,
        train=TrainConfig(epochs=2, batch_size=4, lr=0.01, device="cpu"),
        trunk=_config(**trunk),
    )


def test_a_frozen_trunk_keeps_its_pretrained_weights_and_the_head_learns(images, tmp_path):
    weights = tmp_path / "pretrained.safetensors"
    save_file(hand_set_state(), str(weights))
    recipe = _recipe(str(weights))
    trunk = trunk_activations(recipe, images, ShardStore(tmp_path / "trunk"))
    train, holdout = images.iloc[:6], images.iloc[6:9]
    backbone, report = fit_backbone(recipe, SEEN_IDS, train, holdout, images.iloc[9:], trunk)
    assert report["trunk"] == "frozen" and backbone.spec.trunk == trunk.fingerprint
    pretrained = hand_set_state()
    stem_keys = [k for k in pretrained if k.startswith(("block1", "block2", "block3"))]
    assert stem_keys
    for key in stem_keys:  # weights and BatchNorm statistics alike
        assert torch.equal(backbone.state[key], pretrained[key]), key
    head_keys = [k for k in pretrained if k.startswith("fc1") and "running" not in k]
    assert any(not torch.equal(backbone.state[k], pretrained[k]) for k in head_keys)
    # Later stages read the stored activations of this backbone.
    assert backbone.inputs(images, trunk, batch_size=4)[0] is backbone.head_cut


def test_frozen_trunk_refuses_missing_weights_and_foreign_activations(images, tmp_path):
    with pytest.raises(InputError, match="backbone.weights is null"):
        trunk_activations(_recipe(None), images, ShardStore(tmp_path / "t"))
    weights = tmp_path / "pretrained.safetensors"
    save_file(hand_set_state(), str(weights))
    trunk = trunk_activations(_recipe(str(weights)), images, ShardStore(tmp_path / "t"))
    other = _recipe(str(weights), views=2)  # another number of views: another fingerprint
    with pytest.raises(InputError, match="another backbone, layer, image size"):
        fit_backbone(other, SEEN_IDS, images.iloc[:6], images.iloc[6:9], trunk=trunk)
    with pytest.raises(InputError, match="or are missing"):
        fit_backbone(_recipe(str(weights)), SEEN_IDS, images.iloc[:6], images.iloc[6:9])
    assert not trunk_activations(_recipe(None, frozen=False), images, None).available


def test_the_catalog_entry_round_trips_and_refuses_rewritten_shards(images, tmp_path):
    backbone = hand_set_backbone()
    root = tmp_path / "trunk"
    trunk = compute_trunk_activations(
        backbone.cut.stem, backbone.spec, images, _config(), ShardStore(root)
    )
    dataset = TrunkActivationsDataset(path=str(root))
    assert not dataset.exists()
    dataset.save(trunk)
    loaded = dataset.load()
    assert loaded.fingerprint == trunk.fingerprint
    torch.testing.assert_close(loaded.row(3), trunk.row(3), rtol=0, atol=0)
    none = TrunkActivationsDataset(path=str(tmp_path / "none"))
    none.save(TrunkActivations.none())
    assert not none.load().available
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][1]["fingerprint"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="shard-00001.safetensors: missing or stale"):
        dataset.load()


def test_a_frozen_trunk_cut_at_a_layer_the_model_lacks_names_the_valid_ones(images, tmp_path):
    weights = tmp_path / "pretrained.safetensors"
    save_file(hand_set_state(), str(weights))
    recipe = _recipe(str(weights))
    recipe.layer = "block9"
    with pytest.raises(InputError, match=r"'block9' is not a node of SmallCNN.*block3"):
        trunk_activations(recipe, images, ShardStore(tmp_path / "t"))
    assert not (tmp_path / "t").exists()  # nothing written
