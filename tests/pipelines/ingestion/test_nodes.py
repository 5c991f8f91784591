"""Ingestion nodes: the domain-knowledge table and the canonical tables of the tiny world."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from niwt_pipeline.core.data.tables import SPLITS
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.pipelines.ingestion.nodes import build_domain_knowledge, canonicalise_dataset

N_CLASSES, N_UNSEEN, PER_CLASS = 8, 2, 10


# ------------------------------------------------------------------ build_domain_knowledge


def test_domain_knowledge_has_one_row_per_class_in_dataset_order(chain):
    table, info = chain.raw_domain_knowledge, chain.domain_knowledge_info

    assert table.columns[0] == "class_name"
    assert table["class_name"].tolist() == chain.raw.classes["class_name"].tolist()
    values = table.drop(columns="class_name")
    assert list(values.columns) == list(chain.raw.attributes.columns)
    assert all(dtype == np.float64 for dtype in values.dtypes)
    assert info == {
        "source": "native class attributes of the layout, scale='max'",
        "n_classes": N_CLASSES,
        "n_dims": values.shape[1],
        "state": {"scale": "max", "divisor": 1.0},  # the world's attributes are fractions
    }


def test_domain_knowledge_is_scaled_by_the_global_maximum(chain):
    values = chain.raw_domain_knowledge.drop(columns="class_name").to_numpy()
    expected = chain.raw.attributes.to_numpy() / chain.raw.attributes.to_numpy().max()

    np.testing.assert_allclose(values, expected)
    assert values.max() == 1.0


def test_domain_knowledge_source_without_attributes_is_refused(raw_world, domain_source):
    without = dataclasses.replace(raw_world, attributes=None)

    with pytest.raises(InputError, match=r"no class attributes"):
        build_domain_knowledge(without, domain_source)


# ------------------------------------------------------------------ canonicalise_dataset


def test_images_table_schema_and_ids(chain):
    images = chain.images

    assert list(images.columns) == ["image_id", "path", "class_id", "split"]
    assert images["image_id"].dtype == np.int64
    assert images["class_id"].dtype == np.int64
    assert pd.api.types.is_string_dtype(images["path"])
    assert pd.api.types.is_string_dtype(images["split"])
    # image_id: position in the sorted relative paths of the whole dataset
    assert images["image_id"].tolist() == list(range(N_CLASSES * PER_CLASS))
    relpaths = [
        Path(p).relative_to(chain.raw.image_root.resolve()).as_posix() for p in images["path"]
    ]
    assert relpaths == sorted(chain.raw.images["relpath"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in images["path"])
    assert set(images["split"]) == set(SPLITS)


def test_classes_table_schema_and_ids(chain):
    classes = chain.classes

    assert list(classes.columns) == ["class_id", "name", "seen"]
    assert classes["class_id"].dtype == np.int64
    assert classes["seen"].dtype == bool
    assert classes["class_id"].tolist() == list(range(N_CLASSES))
    assert classes["name"].tolist() == chain.raw.classes["class_name"].tolist()
    assert int((~classes["seen"]).sum()) == N_UNSEEN


def test_unseen_classes_have_only_test_unseen_images(chain):
    merged = chain.images.merge(chain.classes, on="class_id")

    assert set(merged.loc[~merged["seen"], "split"]) == {"test_unseen"}
    assert set(merged.loc[merged["seen"], "split"]) == {"trainval", "test_seen"}
    assert merged.groupby("class_id").size().eq(PER_CLASS).all()


def test_domain_knowledge_table_follows_class_ids(chain):
    dk = chain.domain_knowledge

    assert list(dk.columns[:2]) == ["class_id", "name"]
    assert dk["class_id"].tolist() == chain.classes["class_id"].tolist()
    assert dk["name"].tolist() == chain.classes["name"].tolist()
    values = dk.drop(columns=["class_id", "name"])
    assert all(dtype == np.float64 for dtype in values.dtypes)
    np.testing.assert_array_equal(
        values.to_numpy(), chain.raw_domain_knowledge.drop(columns="class_name").to_numpy()
    )


def test_image_attributes_are_keyed_by_image_id(chain):
    table = chain.image_attributes

    assert table.columns[0] == "image_id"
    assert sorted(table["image_id"]) == chain.images["image_id"].tolist()
    values = table.drop(columns="image_id")
    assert all(dtype == np.int64 for dtype in values.dtypes)
    assert set(np.unique(values.to_numpy())) <= {0, 1}


def test_summary_counts_and_names_the_source(chain):
    summary = chain.ingestion_summary

    assert summary["dataset"] == "attribute_world"
    assert (summary["n_classes"], summary["n_seen"], summary["n_unseen"]) == (8, 6, 2)
    assert summary["images_per_split"] == {"trainval": 48, "test_seen": 12, "test_unseen": 20}
    assert summary["domain_knowledge"] == chain.domain_knowledge_info["source"]
    assert summary["domain_knowledge_dims"] == chain.domain_knowledge.shape[1] - 2
    assert set(summary["unseen_classes"]) == set(chain.classes.loc[~chain.classes["seen"], "name"])


def test_class_list_keeps_dataset_order_and_renumbers_classes(chain, params_for):
    names = chain.raw.classes["class_name"].tolist()
    unseen = chain.raw.classes.loc[~chain.raw.classes["seen"], "class_name"].tolist()
    wanted = [names[5], unseen[0], names[0]]  # not in dataset order

    images, classes, dk, _, summary = canonicalise_dataset(
        chain.raw,
        chain.raw_domain_knowledge,
        chain.domain_knowledge_info,
        params_for("ingestion", {"classes": wanted}),
    )

    expected_order = [n for n in names if n in wanted]
    assert classes["name"].tolist() == expected_order
    assert classes["class_id"].tolist() == [0, 1, 2]
    assert dk["name"].tolist() == expected_order
    assert sorted(images["class_id"].unique()) == [0, 1, 2]
    assert len(images) == 3 * PER_CLASS
    # image ids stay the positions in the whole dataset, so they are not renumbered
    full = chain.images.set_index("path")["image_id"]
    assert images["image_id"].tolist() == full.loc[images["path"]].tolist()
    assert summary["n_classes"] == 3


def test_present_drops_classes_without_image_files(chain, params_for, tmp_path):
    dropped = chain.raw.classes.loc[~chain.raw.classes["seen"], "class_name"].iloc[-1]
    image_root = tmp_path / "images"
    shutil.copytree(chain.raw.image_root, image_root)
    shutil.rmtree(image_root / dropped)
    raw = dataclasses.replace(chain.raw, image_root=image_root)

    images, classes, dk, _, _ = canonicalise_dataset(
        raw,
        chain.raw_domain_knowledge,
        chain.domain_knowledge_info,
        params_for("ingestion", {"classes": "present"}),
    )

    assert dropped not in set(classes["name"])
    assert len(classes) == N_CLASSES - 1
    assert classes["class_id"].tolist() == list(range(N_CLASSES - 1))
    assert len(images) == (N_CLASSES - 1) * PER_CLASS
    assert len(dk) == N_CLASSES - 1


def test_all_with_missing_image_files_names_a_missing_file(chain, params_for, tmp_path):
    dropped = chain.raw.classes["class_name"].iloc[0]
    image_root = tmp_path / "images"
    shutil.copytree(chain.raw.image_root, image_root)
    shutil.rmtree(image_root / dropped)
    raw = dataclasses.replace(chain.raw, image_root=image_root)

    with pytest.raises(InputError, match=rf"{dropped}/.*image file not found"):
        canonicalise_dataset(
            raw, chain.raw_domain_knowledge, chain.domain_knowledge_info, params_for("ingestion")
        )


def test_domain_knowledge_missing_a_class_names_the_class(chain, params_for):
    missing = chain.raw.classes["class_name"].iloc[3]
    table = chain.raw_domain_knowledge[chain.raw_domain_knowledge["class_name"] != missing]

    with pytest.raises(InputError, match=rf"no domain knowledge .*{missing}"):
        canonicalise_dataset(chain.raw, table, chain.domain_knowledge_info, params_for("ingestion"))


def test_domain_knowledge_missing_an_excluded_class_is_fine(chain, params_for):
    names = chain.raw.classes["class_name"].tolist()
    table = chain.raw_domain_knowledge[chain.raw_domain_knowledge["class_name"] != names[-1]]

    _, classes, dk, _, _ = canonicalise_dataset(
        chain.raw,
        table,
        chain.domain_knowledge_info,
        params_for("ingestion", {"classes": names[:-1]}),
    )

    assert dk["name"].tolist() == classes["name"].tolist() == names[:-1]


def test_unknown_class_in_the_list_is_named(chain, params_for):
    name = chain.raw.classes["class_name"].iloc[0]

    with pytest.raises(InputError, match=r"ingestion.classes names 'no_such_class', which is not"):
        canonicalise_dataset(
            chain.raw,
            chain.raw_domain_knowledge,
            chain.domain_knowledge_info,
            params_for("ingestion", {"classes": [name, "no_such_class"]}),
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [({"classes": "some"}, "classes"), ({"check_image": True}, "check_image")],
)
def test_bad_parameters_are_refused_naming_the_key_before_reading_data(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        canonicalise_dataset(None, None, None, params_for("ingestion", bad))
