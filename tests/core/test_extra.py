"""Classes defined by their description alone: reading the file, describing them as the
dataset's source does (exact values), and every bad input named with its culprit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from niwt_pipeline.core.domain import CSVClassTable, NativeAttributes, TextEmbeddings
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.extra import (
    ExtraClasses,
    add_described_classes,
    new_class_targets,
    read_extra_classes,
)
from niwt_pipeline.core.mapper import LinearMapper

COLUMNS = ["a", "b", "c"]


def _write(tmp_path, text: str):
    path = tmp_path / "extra.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _dataset():
    classes = pd.DataFrame(
        {"class_id": [0, 1, 2], "name": ["Zebra", "okapi", "café"], "seen": [True, True, False]}
    )
    dk = pd.DataFrame({"class_id": [0, 1, 2], "name": classes["name"]})
    for j, c in enumerate(COLUMNS):
        dk[c] = [0.5 * j, 1.0, 0.25]
    return classes, dk


def test_a_missing_file_means_no_extra_classes(tmp_path):
    extra = read_extra_classes(tmp_path / "none.csv")
    assert len(extra) == 0 and extra.names == []
    classes, dk = _dataset()
    out_classes, out_dk = add_described_classes(pd.DataFrame(), extra, classes, dk)
    assert out_classes.equals(classes) and out_dk.equals(dk)


def test_attributes_are_scaled_by_the_dataset_maximum_and_appended(tmp_path):
    extra = read_extra_classes(_write(tmp_path, "class_name,c,a,b\nunicorn,4,2,8\n"))
    source = NativeAttributes("max")
    rows = source.describe_extra(extra, {"scale": "max", "divisor": 8.0}, COLUMNS)
    assert rows.loc["unicorn"].tolist() == [0.25, 1.0, 0.5]  # reordered to a, b, c, / 8
    classes, dk = _dataset()
    all_classes, all_dk = add_described_classes(rows, extra, classes, dk)
    assert all_classes.iloc[-1].tolist() == [3, "unicorn", False]
    assert all_dk.iloc[-1].tolist() == [3, "unicorn", 0.25, 1.0, 0.5]
    l2 = source.describe_extra(extra, {"scale": "l2"}, COLUMNS)
    np.testing.assert_allclose(l2.loc["unicorn"], np.array([2, 8, 4]) / np.sqrt(84))
    assert CSVClassTable("t.csv").describe_extra(extra, {}, COLUMNS).loc["unicorn"].tolist() == [
        2.0,
        8.0,
        4.0,
    ]


def test_targets_come_from_the_mapper_for_the_new_classes_only():
    classes, dk = _dataset()
    mapper = LinearMapper(3, 2)
    mapper.linear.weight.data.zero_()
    mapper.linear.bias.data = torch.tensor([1.0, -2.0])
    predicted = pd.DataFrame(
        {"class_id": [0, 1, 2], "name": classes["name"], "seen": classes["seen"]}
    )
    predicted["k_0000"], predicted["k_0001"] = [9.0, 9.0, 3.0], [9.0, 9.0, 4.0]
    extra = ExtraClasses("e.csv", values=pd.DataFrame([[1.0, 2.0, 3.0]], index=["unicorn"]))
    rows = pd.DataFrame([[1.0, 2.0, 3.0]], index=pd.Index(["unicorn"]), columns=COLUMNS)
    all_classes, all_dk = add_described_classes(rows, extra, classes, dk)
    ids, targets = new_class_targets(predicted, mapper, all_classes, all_dk)
    assert ids.tolist() == [2, 3]
    assert targets.tolist() == [[3.0, 4.0], [1.0, -2.0]]  # the dataset's, then the mapper's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("class_name,a,b\nunicorn,1,2\n", r"missing: \[c\], not in the dataset: \[\]"),
        ("class_name,a,b,c,d\nunicorn,1,2,3,4\n", r"missing: \[\], not in the dataset: \[d\]"),
        ("class_name,text\nunicorn,a horse with a horn\n", "takes one number per dimension"),
        ("class_name,a,b,c\nunicorn,1,x,3\n", r"line 2.*'x'"),
        ("class_name,a,b,c\nunicorn,1,2,3\nunicorn,1,2,3\n", "line 3.*already on line 2"),
    ],
)
def test_bad_attribute_files_name_the_culprit(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=message):
        extra = read_extra_classes(path)
        NativeAttributes("max").describe_extra(extra, {"scale": "max", "divisor": 1.0}, COLUMNS)


@pytest.mark.parametrize("name", ["zebra", " Zebra", "cafe\u0301"])  # case, space, NFD
def test_a_name_of_a_dataset_class_is_refused(tmp_path, name):
    extra = read_extra_classes(_write(tmp_path, f'class_name,a,b,c\n"{name}",1,2,3\n'))
    rows = NativeAttributes("none").describe_extra(extra, {"scale": "none"}, COLUMNS)
    classes, dk = _dataset()
    with pytest.raises(
        InputError, match=r"extra.csv line 2: extra class\(es\) named like a dataset"
    ):
        add_described_classes(rows, extra, classes, dk)


def test_an_empty_description_and_numbers_for_a_text_source_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"line 2.*'unicorn': empty text"):
        read_extra_classes(_write(tmp_path, "class_name,text\nunicorn,\n"))
    numbers = read_extra_classes(_write(tmp_path, "class_name,a,b,c\nunicorn,1,2,3\n"))
    with pytest.raises(InputError, match="give `class_name,text` rows"):
        TextEmbeddings().describe_extra(numbers, {"model": "x", "normalize": True}, ["emb_000"])


def test_a_state_from_an_older_run_asks_for_ingestion_again(tmp_path):
    extra = read_extra_classes(_write(tmp_path, "class_name,a,b,c\nunicorn,1,2,3\n"))
    with pytest.raises(InputError, match="re-run `kedro run --pipelines=ingestion`"):
        NativeAttributes("max").describe_extra(extra, {}, COLUMNS)
