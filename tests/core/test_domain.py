"""Domain-knowledge sources: native attributes, xlsa17, .mat embeddings, CSV tables, text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from niwt_pipeline.core.data.canonical import canonicalise
from niwt_pipeline.core.data.cub import read_cub
from niwt_pipeline.core.data.own import write_own_layout
from niwt_pipeline.core.data.tables import RawDataset
from niwt_pipeline.core.data.xlsa17 import write_att_splits
from niwt_pipeline.core.domain import (
    CSVClassTable,
    MatClassEmbeddings,
    NativeAttributes,
    TextEmbeddings,
    Xlsa17Attributes,
)
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.extra import ExtraClasses, read_extra_classes

CLASSES = ["red_circle", "blue_square", "green_star"]
ATTRIBUTES = pd.DataFrame(
    [[2.0, 0.0], [0.0, 4.0], [3.0, 4.0]],
    index=pd.Index(CLASSES, name="class_name"),
    columns=["red", "square"],
)


def make_raw(
    tmp_path: Path,
    descriptions: pd.DataFrame | None = None,
    attributes: pd.DataFrame | None = ATTRIBUTES,
) -> RawDataset:
    relpaths = [f"{c}/0.png" for c in CLASSES] + ["red_circle/1.png"]
    return write_own_layout(
        tmp_path / "toy",
        classes=pd.DataFrame({"class_name": CLASSES, "seen": [True, True, False]}),
        splits=pd.DataFrame(
            {"relpath": relpaths, "split": ["trainval", "trainval", "test_unseen", "test_seen"]}
        ),
        images=[(p, Image.new("RGB", (4, 4))) for p in relpaths],
        attributes=attributes,
        descriptions=descriptions,
        name="toy",
    )


def test_native_attribute_scales(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    assert NativeAttributes().build(raw).to_numpy().max() == 1.0
    assert NativeAttributes().build(raw).loc["blue_square", "square"] == 1.0
    assert np.array_equal(NativeAttributes("none").build(raw).to_numpy(), ATTRIBUTES.to_numpy())
    l2 = NativeAttributes("l2").build(raw)
    assert np.allclose(np.linalg.norm(l2.to_numpy(), axis=1), 1.0)
    assert l2.index.tolist() == CLASSES and l2.dtypes.eq(np.float64).all()
    assert "scale='max'" in NativeAttributes().describe()


def test_native_attributes_need_attributes(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, attributes=None)
    with pytest.raises(
        InputError, match=r"toy \[attributes\]: the toy layout has no class attributes"
    ):
        NativeAttributes().build(raw)


def test_xlsa17_attributes_follow_names(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    order = ["green_star", "red_circle", "blue_square"]
    att = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # column j for order[j]
    path = write_att_splits(
        tmp_path / "att_splits.mat",
        att=att,
        allclasses_names=order,
        trainval_loc=[0, 1],
        test_seen_loc=[3],
        test_unseen_loc=[2],
    )
    table = Xlsa17Attributes(path).build(raw)
    assert table.index.tolist() == CLASSES
    assert table.columns.tolist() == ["dim_000", "dim_001"]
    assert table.loc["green_star"].tolist() == [1.0, 4.0]
    with pytest.raises(
        InputError, match=r"att_splits\.mat \[original_att\]: the file has no original_att"
    ):
        Xlsa17Attributes(path, which="original_att").build(raw)


def test_csv_table_partial_coverage_is_caught_by_canonicalise(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    path = tmp_path / "dk.csv"
    path.write_text("class_name,d1,d2\nred_circle,1,2\nblue_square,3,4\npurple_moon,5,6\n")
    table = CSVClassTable(path).build(raw)
    assert table.index.tolist() == ["red_circle", "blue_square"]  # purple_moon dropped, warned
    with pytest.raises(
        InputError, match=r"no domain knowledge for 1 class\(es\): \['green_star'\]"
    ):
        canonicalise(raw, table)
    _, classes, _ = canonicalise(raw, table, classes=["red_circle", "blue_square"])
    assert len(classes) == 2


def test_csv_table_errors_name_line(tmp_path: Path) -> None:
    path = tmp_path / "dk.csv"
    path.write_text("class_name,d1\nred_circle,1\nred_circle,2\n")
    with pytest.raises(InputError, match=r"dk\.csv line 3: class 'red_circle' already on line 2"):
        CSVClassTable(path).build(make_raw(tmp_path))


def test_text_embeddings_need_a_description_for_every_class(tmp_path: Path) -> None:
    descriptions = pd.DataFrame(
        {"class_name": ["red_circle", "blue_square"], "text": ["A red circle.", "A blue square."]}
    )
    raw = make_raw(tmp_path, descriptions=descriptions)
    with pytest.raises(
        InputError,
        match=r"toy \[descriptions\]: no description for 1 class\(es\): \['green_star'\]",
    ):
        TextEmbeddings().build(raw)


def test_text_embeddings_offline(tmp_path: Path) -> None:
    descriptions = pd.DataFrame(
        {
            "class_name": ["red_circle", "red_circle", "blue_square", "green_star"],
            "text": [
                "A small red circle.",
                "Round and red.",
                "A large blue square.",
                "A green star with dots.",
            ],
        }
    )
    raw = make_raw(tmp_path, descriptions=descriptions)
    table = TextEmbeddings().build(raw)
    assert table.shape == (3, 384)
    assert table.columns[0] == "emb_000" and table.columns[-1] == "emb_383"
    assert table.index.tolist() == CLASSES
    assert np.allclose(np.linalg.norm(table.to_numpy(), axis=1), 1.0)
    assert not np.allclose(table.loc["blue_square"], table.loc["green_star"])

    csv = tmp_path / "other.csv"
    csv.write_text(
        "class_name,text\nred_circle,A small red circle.\nblue_square,A "
        "small red circle.\ngreen_star,A tree.\n"
    )
    from_csv = TextEmbeddings(descriptions=csv).build(raw)
    assert np.allclose(from_csv.loc["red_circle"], from_csv.loc["blue_square"], atol=1e-6)
    assert not np.allclose(from_csv.loc["red_circle"], from_csv.loc["green_star"])


def test_text_model_must_be_local(tmp_path: Path) -> None:
    raw = make_raw(
        tmp_path, descriptions=pd.DataFrame({"class_name": CLASSES, "text": ["a", "b", "c"]})
    )
    with pytest.raises(
        InputError,
        match=r"no-such-model: text model folder not found \(models are never downloaded",
    ):
        TextEmbeddings(model=tmp_path / "no-such-model").build(raw)


def test_real_cub_sources(cub_root: Path, xlsa17_root: Path) -> None:
    splits_file = xlsa17_root / "CUB" / "att_splits.mat"
    raw = read_cub(cub_root, splits_file=splits_file)
    sentences = MatClassEmbeddings(cub_root / "sentence_embeddings" / "sent_splits.mat").build(raw)
    assert sentences.shape == (200, 1024)
    assert sentences.index.tolist() == raw.classes["class_name"].tolist()
    original = Xlsa17Attributes(splits_file, which="original_att").build(raw)
    assert np.allclose(
        original.to_numpy(), raw.attributes.to_numpy()
    )  # the same numbers, matched by name
    att = Xlsa17Attributes(splits_file, names=list(raw.attributes.columns)).build(raw)
    assert att.columns.tolist() == raw.attributes.columns.tolist()
    assert np.allclose(np.linalg.norm(att.to_numpy(), axis=1), 1.0)


# ------------------------------------------------ classes defined by their description alone


def _extra_file(tmp_path: Path, text: str) -> ExtraClasses:
    path = tmp_path / "extra.csv"
    path.write_text(text, encoding="utf-8")
    return read_extra_classes(path)


def test_a_described_class_equal_to_a_dataset_class_gets_its_row(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    for source in (NativeAttributes("max"), NativeAttributes("l2"), NativeAttributes("none")):
        table = source.build(raw)
        extra = _extra_file(tmp_path, "class_name,square,red\ntwin,4,0\n")  # blue_square
        rows = source.describe_extra(extra, source.state(), list(table.columns))
        assert rows.loc["twin"].tolist() == table.loc["blue_square"].tolist(), source.scale


def test_native_attributes_record_the_divisor(tmp_path: Path) -> None:
    source = NativeAttributes("max")
    with pytest.raises(RuntimeError, match="call build"):
        source.state()
    source.build(make_raw(tmp_path))
    assert source.state() == {"scale": "max", "divisor": 4.0}


def test_xlsa17_att_rows_are_l2_normalised_like_the_file(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    path = write_att_splits(
        tmp_path / "att_splits.mat",
        att=np.array([[0.6, 0.0, 1.0], [0.8, 1.0, 0.0]]),
        allclasses_names=CLASSES,
        trainval_loc=[0, 1],
        test_seen_loc=[3],
        test_unseen_loc=[2],
    )
    source = Xlsa17Attributes(path)
    table = source.build(raw)
    extra = _extra_file(tmp_path, "class_name,dim_000,dim_001\nlike_red_circle,3,4\n")
    rows = source.describe_extra(extra, source.state(), list(table.columns))
    assert rows.loc["like_red_circle"].tolist() == table.loc["red_circle"].tolist() == [0.6, 0.8]


def test_a_described_class_with_a_dataset_class_s_text_gets_its_embedding(tmp_path: Path) -> None:
    descriptions = pd.DataFrame(
        {
            "class_name": ["red_circle", "red_circle", "blue_square", "green_star"],
            "text": ["A small red circle.", "Round and red.", "A blue square.", "A green star."],
        }
    )
    raw = make_raw(tmp_path, descriptions=descriptions)
    source = TextEmbeddings()
    table = source.build(raw)
    extra = _extra_file(
        tmp_path, "class_name,text\nround_red,A small red circle.\nround_red,Round and red.\n"
    )
    rows = source.describe_extra(extra, source.state(), list(table.columns))
    np.testing.assert_allclose(rows.loc["round_red"], table.loc["red_circle"], atol=1e-6)
    with pytest.raises(InputError, match="re-run `kedro run --pipelines=ingestion`"):
        source.describe_extra(extra, {"model": "other", "normalize": True}, list(table.columns))
