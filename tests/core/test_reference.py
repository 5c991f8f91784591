"""The reference images of weight transfer and their cache: G or the activations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tests.helpers import hand_set_backbone

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.imageset import image_loader
from niwt_pipeline.core.transfer import (
    ReferenceCache,
    ReferenceConfig,
    layer_activations,
    reference_cache,
    reference_gram,
    reference_images,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (90, 90, 90)]


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    """Six 20x16 images: trainval of the seen classes 3, 1, 4 (ids 0-3), of the unseen
    class 2 (id 4), and a test image of class 3 (id 5)."""
    paths = []
    for i, colour in enumerate(COLOURS):
        path = tmp_path / f"img{i}.png"
        pixels = np.zeros((16, 20, 3), dtype=np.uint8)
        pixels[:, :] = colour
        pixels[4:12, 6:14] = 255 - np.array(colour, dtype=np.uint8)  # a square in the middle
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return pd.DataFrame(
        {
            "image_id": [0, 1, 2, 3, 4, 5],
            "path": paths,
            "class_id": [3, 1, 4, 3, 2, 3],
            "split": ["trainval"] * 5 + ["test_seen"],
        }
    )


def test_cache_holds_exactly_one_of_gram_and_activations():
    with pytest.raises(ValueError, match="exactly one"):
        ReferenceCache()
    with pytest.raises(ValueError, match="exactly one"):
        ReferenceCache(gram=torch.zeros(1, 2, 3), activations=torch.zeros(1, 2, 1, 1))
    gram = ReferenceCache(gram=torch.zeros(5, 2, 3))
    assert gram.n_images == 5 and gram.sources(None) == {"gram": gram.gram}  # type: ignore[arg-type]
    assert ReferenceCache(activations=torch.zeros(4, 2, 3, 3)).n_images == 4


def test_cache_safetensors_form():
    gram = torch.arange(12.0).view(2, 2, 3)
    tensors, metadata = ReferenceCache(gram=gram).to_safetensors()
    assert metadata == {"kind": "gram"} and list(tensors) == ["gram"]
    back = ReferenceCache.from_safetensors(tensors, metadata)
    assert back.activations is None and torch.equal(back.gram, gram)
    acts = torch.arange(8.0).view(2, 1, 2, 2)
    tensors, metadata = ReferenceCache(activations=acts).to_safetensors()
    assert metadata == {"kind": "activations"}
    back = ReferenceCache.from_safetensors(tensors, metadata)
    assert back.gram is None and torch.equal(back.activations, acts)
    with pytest.raises(InputError, match=r"'gram' or 'activations' tensor, got \['other'\]"):
        ReferenceCache.from_safetensors({"other": acts}, {})


def test_reference_images_trainval_seen_or_a_folder(images, tmp_path):
    config = ReferenceConfig()
    table = reference_images(images, [3, 1, 4], config)
    assert table["image_id"].tolist() == [0, 1, 2, 3]  # not the unseen class, not test images
    assert table.index.tolist() == [0, 1, 2, 3]
    sample = reference_images(images, [3, 1, 4], ReferenceConfig(max_images=2, seed=1))
    assert len(sample) == 2 and set(sample["image_id"]) <= {0, 1, 2, 3}
    assert sample["image_id"].is_monotonic_increasing  # in the table's order
    (tmp_path / "notes.txt").write_text("not an image")
    folder = reference_images(images, [3], ReferenceConfig(images=str(tmp_path)))
    assert folder["path"].tolist() == sorted(images["path"])
    with pytest.raises(InputError, match="reference image folder not found"):
        reference_images(images, [3], ReferenceConfig(images=str(tmp_path / "none")))
    assert ReferenceConfig(gram_memory_budget_mb=3).gram_budget_bytes == 3 * 2**20


def test_layer_activations_are_the_stem_of_every_image(images):
    backbone = hand_set_backbone()
    loader = image_loader(images, backbone.spec, batch_size=4)  # a ragged last batch
    acts = layer_activations(backbone.cut, loader, torch.device("cpu"))
    x = torch.cat([batch[0] for batch in loader])
    with torch.no_grad():
        expected = backbone.cut.stem(x)
    assert acts.shape == (6, 128, 2, 2) and acts.dtype == torch.float32
    torch.testing.assert_close(acts, expected, rtol=0, atol=0)
    with pytest.raises(InputError, match="no reference images"):
        empty = image_loader(images[:0], backbone.spec, batch_size=2)
        layer_activations(backbone.cut, empty, torch.device("cpu"))


def test_reference_cache_keeps_g_within_the_budget_else_the_activations(images):
    backbone = hand_set_backbone()
    trainval = images[images["split"] == "trainval"]
    seen = trainval[trainval["class_id"].isin([3, 1, 4])]
    loader = image_loader(seen, backbone.spec, batch_size=64)
    acts = layer_activations(backbone.cut, loader, torch.device("cpu"))
    # G of 4 images is 4 * 128 * 128 * 4 bytes = 0.25 MiB: within 1 MiB, not within 0
    cache = reference_cache(backbone, images, ReferenceConfig(gram_memory_budget_mb=1), "cpu")
    assert cache.activations is None and cache.gram.shape == (4, 128, 128)
    torch.testing.assert_close(cache.gram, reference_gram(backbone.cut.head, acts))
    small = reference_cache(backbone, images, ReferenceConfig(gram_memory_budget_mb=0), "cpu")
    assert small.gram is None and small.n_images == 4
    torch.testing.assert_close(small.activations, acts, rtol=0, atol=0)
