"""Tests of the generated attribute world (niwt_pipeline.core.data.world)."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from niwt_pipeline.core.data.world import (
    GROUPS,
    PATTERN_ADJECTIVES,
    VALUE_WORDS,
    World,
    WorldConfig,
    generate_world,
    render_image,
    write_world,
)
from niwt_pipeline.core.errors import InputError

SMALL = dict(n_classes=12, n_unseen=3, images_per_class=10, image_size=32, test_fraction_seen=0.2)


@pytest.fixture(scope="module")
def small_world() -> World:
    return generate_world(WorldConfig(seed=3, **SMALL))


def _pixels(world: World, n: int | None = None) -> list[np.ndarray]:
    out = []
    for i, (_, img) in enumerate(world.iter_images()):
        if n is not None and i >= n:
            break
        out.append(np.asarray(img))
    return out


# --- configuration ------------------------------------------------------------------------


def test_default_config_has_19_attributes_in_group_order() -> None:
    cfg = WorldConfig()
    names = cfg.attribute_names
    assert len(names) == 19
    assert all("::" in n for n in names)
    groups_in_order = list(dict.fromkeys(n.split("::")[0] for n in names))
    assert groups_in_order == list(GROUPS)
    assert cfg.n_seen == 32 and cfg.n_test_seen == 12


def test_config_round_trips_through_dict() -> None:
    cfg = WorldConfig(seed=5, **SMALL)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert WorldConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(n_classes=10, n_unseen=10), "[n_unseen]: must be smaller than n_classes (10)"),
        (dict(n_classes=10, n_unseen=12), "[n_unseen]: must be smaller than n_classes"),
        (
            dict(
                n_classes=73,
                shapes=("circle", "square"),
                colours=("red", "blue", "green"),
                patterns=("solid", "dots", "stripes", "checker"),
                sizes=("small", "medium", "large"),
            ),
            "[n_classes]: 73 classes need distinct value combinations but only 72 exist",
        ),
        (dict(shapes=("circle", "blob")), "[shapes]: unknown value(s) ['blob']"),
        (dict(colours=("red", "red")), "[colours]: duplicate values"),
        (dict(sizes=()), "[sizes]: needs at least one value"),
        (dict(test_fraction_seen=1.0), "[test_fraction_seen]: must lie in (0.0, 1.0)"),
        (dict(n_classes=True), "[n_classes]: expected an integer"),
        (dict(image_size=8), "[image_size]: must be at least 16"),
        (dict(prototype_mass=(0.9, 0.7)), "[prototype_mass]: expected 0.5 <= low <= high <= 1.0"),
        (dict(rotation_degrees=float("nan")), "[rotation_degrees]: must be finite"),
        (
            dict(
                n_classes=6,
                n_unseen=4,
                shapes=("circle", "square", "star"),
                colours=("red",),
                patterns=("solid",),
                sizes=("small", "medium", "large"),
            ),
            "[n_unseen]: only 2 new combinations",
        ),
    ],
)
def test_config_validation_messages(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError) as info:
        WorldConfig(**kwargs)
    assert str(info.value).startswith("WorldConfig [")
    assert needle in str(info.value)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(InputError, match=r"unknown key\(s\) \['colors'\]"):
        WorldConfig.from_dict({"colors": ["red"]})


def test_generate_world_rejects_non_config() -> None:
    with pytest.raises(TypeError, match="expects a WorldConfig"):
        generate_world({"seed": 0})  # type: ignore[arg-type]


# --- determinism --------------------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_pixels(small_world: World) -> None:
    again = generate_world(WorldConfig(seed=3, **SMALL))
    for name in (
        "classes",
        "splits",
        "attributes",
        "descriptions",
        "image_attributes",
        "prototypes",
        "image_params",
    ):
        pd.testing.assert_frame_equal(getattr(small_world, name), getattr(again, name))
    assert small_world.config == again.config
    for a, b in zip(_pixels(small_world, 25), _pixels(again, 25), strict=True):
        assert np.array_equal(a, b)


def test_different_seed_gives_a_different_world(small_world: World) -> None:
    other = generate_world(WorldConfig(seed=4, **SMALL))
    assert not small_world.prototypes.equals(other.prototypes)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_pixels(small_world, 10), _pixels(other, 10), strict=True)
    )


def test_render_and_iter_images_agree(small_world: World) -> None:
    iterator = small_world.iter_images()
    assert isinstance(iterator, types.GeneratorType)  # lazy
    relpath, img = next(iterator)
    assert np.array_equal(np.asarray(img), np.asarray(small_world.render(relpath)))
    chosen = list(small_world.splits["relpath"].iloc[[7, 2]])
    got = list(small_world.iter_images(chosen))
    assert [r for r, _ in got] == chosen
    with pytest.raises(InputError, match="no such image"):
        small_world.render("nope/0000.png")
    with pytest.raises(InputError, match=r"\[nope/0000.png\]: no such image"):
        next(small_world.iter_images(["nope/0000.png"]))


# --- classes and attributes ---------------------------------------------------------------


def test_prototypes_distinct_and_names_readable(small_world: World) -> None:
    protos = small_world.prototypes
    assert len(protos) == 12
    assert not protos.duplicated(subset=list(GROUPS)).any()
    assert protos["class_name"].is_unique
    for row in protos.itertuples():
        assert (
            row.class_name
            == f"{row.size}_{row.colour}_{PATTERN_ADJECTIVES[row.pattern]}_{row.shape}"
        )
    assert list(small_world.classes["class_name"]) == sorted(small_world.classes["class_name"])
    assert list(small_world.classes.columns) == ["class_name", "seen"]
    assert small_world.classes["seen"].dtype == bool
    assert int((~small_world.classes["seen"]).sum()) == 3


@pytest.mark.parametrize("seed", range(6))
def test_unseen_values_all_occur_among_seen_prototypes(seed: int) -> None:
    world = generate_world(WorldConfig(seed=seed, **SMALL))
    protos = world.prototypes
    seen, unseen = protos[protos["seen"]], protos[~protos["seen"]]
    cfg = world.world_config()
    for group in GROUPS:
        assert set(unseen[group]) <= set(seen[group])
        # with at least as many seen classes as values, every value is some seen prototype's
        assert set(seen[group]) == set(cfg.group_values[group])
    assert not set(map(tuple, unseen[list(GROUPS)].to_numpy())) & set(
        map(tuple, seen[list(GROUPS)].to_numpy())
    )


def test_class_attributes_are_continuous_fractions_matching_images(small_world: World) -> None:
    attrs = small_world.attributes
    assert list(attrs.index) == list(small_world.classes["class_name"])
    assert attrs.index.name == "class_name"
    values = attrs.to_numpy()
    assert values.dtype == np.float64
    assert ((values >= 0) & (values <= 1)).all()
    assert ((values > 0) & (values < 1)).any(), "class vectors should be continuous, not binary"

    image_attrs = small_world.image_attributes
    assert list(image_attrs.columns) == ["relpath", *attrs.columns]
    assert list(image_attrs["relpath"]) == list(small_world.splits["relpath"])
    per_image = image_attrs.drop(columns="relpath")
    assert all(dtype.kind == "i" for dtype in per_image.dtypes)
    assert set(np.unique(per_image.to_numpy())) <= {0, 1}
    classes = image_attrs["relpath"].str.split("/").str[0]
    means = per_image.groupby(classes.to_numpy()).mean().loc[attrs.index]
    np.testing.assert_allclose(means.to_numpy(), values, atol=1e-12)

    cfg = small_world.world_config()
    for group in GROUPS:
        cols = [f"{group}::{v}" for v in cfg.group_values[group]]
        np.testing.assert_allclose(attrs[cols].sum(axis=1), 1.0)
        np.testing.assert_array_equal(per_image[cols].sum(axis=1), 1)  # one value per group
        # the prototype value is the class's most frequent value
        protos = small_world.prototypes.set_index("class_name")[group]
        top = attrs[cols].idxmax(axis=1).str.split("::").str[1]
        assert (top == protos.loc[attrs.index]).all()


def test_no_alternatives_gives_binary_class_vectors() -> None:
    world = generate_world(WorldConfig(seed=1, max_alternatives=0, **SMALL))
    assert set(np.unique(world.attributes.to_numpy())) == {0.0, 1.0}


def test_image_params_hold_true_values(small_world: World) -> None:
    params = small_world.image_params.set_index("relpath")
    attrs = small_world.image_attributes.set_index("relpath")
    for relpath, row in params.head(20).iterrows():
        for group in GROUPS:
            assert attrs.loc[relpath, f"{group}::{row[group]}"] == 1


# --- splits and images --------------------------------------------------------------------


def test_split_sizes(small_world: World) -> None:
    splits = small_world.splits
    assert list(splits.columns) == ["relpath", "split"]
    assert splits["relpath"].is_unique and list(splits["relpath"]) == sorted(splits["relpath"])
    assert splits["relpath"].str.fullmatch(r"[a-z_]+/\d{4}\.png").all()
    by_class = splits.assign(class_name=splits["relpath"].str.split("/").str[0])
    seen = dict(zip(small_world.classes["class_name"], small_world.classes["seen"], strict=True))
    for name, group in by_class.groupby("class_name"):
        counts = group["split"].value_counts().to_dict()
        if seen[name]:
            assert counts == {"trainval": 8, "test_seen": 2}
        else:
            assert counts == {"test_unseen": 10}
    assert len(splits) == 12 * 10


def test_images_are_rgb_at_image_size(small_world: World) -> None:
    for _, img in list(small_world.iter_images())[:15]:
        assert isinstance(img, Image.Image)
        assert img.mode == "RGB" and img.size == (32, 32)
        assert np.asarray(img).std() > 5  # not blank


def test_render_image_directly() -> None:
    params = dict(
        shape="star",
        pattern="stripes",
        radius=0.7,
        cx=0.1,
        cy=-0.1,
        rotation=10.0,
        hue=0.0,
        saturation=0.9,
        value=0.9,
        bg_hue=200.0,
        bg_saturation=0.1,
        bg_value=0.2,
        pattern_phase=0.3,
        noise_seed=7,
    )
    img = render_image(params, 48, supersample=4, noise_std=0.0)
    arr = np.asarray(img).astype(int)
    assert img.size == (48, 48) and img.mode == "RGB"
    centre = arr[18:30, 20:32].reshape(-1, 3)
    assert (centre[:, 0] > centre[:, 2] + 40).any()  # red object in the middle
    assert np.array_equal(arr, np.asarray(render_image(params, 48, supersample=4, noise_std=0.0)))


# --- descriptions -------------------------------------------------------------------------


def test_descriptions_mention_prototype_values(small_world: World) -> None:
    desc = small_world.descriptions
    assert list(desc.columns) == ["class_name", "text"]
    counts = desc["class_name"].value_counts()
    assert set(counts.index) == set(small_world.classes["class_name"])
    assert (counts >= 3).all()
    protos = small_world.prototypes.set_index("class_name")
    for row in desc.itertuples():
        text = row.text.lower()
        assert len(set(desc.loc[desc["class_name"] == row.class_name, "text"])) >= 3
        for group in GROUPS:
            value = protos.loc[row.class_name, group]
            assert any(word in text for word in VALUE_WORDS[value]), (row.text, value)


# --- speed and learnability -----------------------------------------------------------------


def test_default_world_tables_are_fast_and_rendering_is_cheap() -> None:
    # CPU time of this process, so that other jobs on a busy machine do not fail the test
    start = time.process_time()
    world = generate_world(WorldConfig())
    tables_s = time.process_time() - start
    assert tables_s < 5.0
    assert len(world.splits) == 2400 and world.attributes.shape == (40, 19)
    start = time.process_time()
    _pixels(world, 100)
    total = (time.process_time() - start) / 100 * 2400
    assert total < 30.0, f"rendering the default world would take ~{total:.0f} s of CPU"


def test_nearest_class_mean_on_pixels_beats_chance() -> None:
    cfg = WorldConfig(
        seed=0, n_classes=12, n_unseen=2, images_per_class=30, image_size=32, test_fraction_seen=0.3
    )
    world = generate_world(cfg)
    seen = world.image_params[world.image_params["split"] != "test_unseen"]
    feats = []
    for _, img in world.iter_images(list(seen["relpath"])):
        small = np.asarray(img.resize((8, 8), Image.BOX), dtype=np.float64) / 255.0
        feats.append(small.reshape(-1))
    x = np.stack(feats)
    y = seen["class_name"].to_numpy()
    train = (seen["split"] == "trainval").to_numpy()
    names = sorted(set(y))
    centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in names])
    dist = ((x[~train][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    pred = np.asarray(names)[dist.argmin(axis=1)]
    accuracy = float((pred == y[~train]).mean())
    chance = 1.0 / len(names)
    assert accuracy > 2 * chance, f"nearest class mean accuracy {accuracy:.2f}, chance {chance:.2f}"


# --- writing --------------------------------------------------------------------------------


def test_write_world(tmp_path: Path, small_world: World) -> None:
    try:
        from niwt_pipeline.core.data.own import read_own_layout, write_own_layout  # noqa: F401
    except ImportError:
        pytest.skip("own layout writer not available")
    root = tmp_path / "world"
    returned = write_world(small_world, root)
    assert returned.root == root and len(returned.images) == len(small_world.splits)
    manifest = json.loads((root / "world.json").read_text())
    assert WorldConfig.from_dict(manifest["config"]) == small_world.world_config()
    assert manifest["attributes"] == small_world.attribute_names
    assert len(manifest["prototypes"]) == 12
    raw = read_own_layout(root)
    assert sorted(raw.images["relpath"]) == sorted(small_world.splits["relpath"])
    assert list(raw.classes["class_name"]) == list(small_world.classes["class_name"])
    relpath = small_world.splits["relpath"].iloc[5]
    with Image.open(raw.image_root / relpath) as img:
        assert np.array_equal(
            np.asarray(img.convert("RGB")), np.asarray(small_world.render(relpath))
        )
    assert raw.attributes is not None
    np.testing.assert_allclose(
        raw.attributes.loc[small_world.attributes.index, small_world.attribute_names].to_numpy(),
        small_world.attributes.to_numpy(),
    )
    assert raw.image_attributes is not None
    pd.testing.assert_frame_equal(
        raw.image_attributes.reset_index(drop=True),
        small_world.image_attributes.reset_index(drop=True),
        check_dtype=False,
    )
    assert raw.descriptions is not None and len(raw.descriptions) == len(small_world.descriptions)
    # rewriting replaces the folder (world.json included)
    write_world(small_world, root)
    assert json.loads((root / "world.json").read_text())["config"] == small_world.config
