"""Text files: UTF-8 with or without a byte-order mark, any line ending; another encoding
is named with its file, line and fix."""

from __future__ import annotations

import pytest

from niwt_pipeline.core.data.own import read_class_table_csv
from niwt_pipeline.core.data.text import read_text
from niwt_pipeline.core.errors import InputError


@pytest.mark.parametrize(
    "raw",
    [
        b"class_name,a\ncaf\xc3\xa9,1\n",  # UTF-8
        b"\xef\xbb\xbfclass_name,a\r\ncaf\xc3\xa9,1\r\n",  # BOM + Windows line endings
        b"class_name,a\rcaf\xc3\xa9,1\r",  # old Mac line endings
    ],
)
def test_utf8_with_any_bom_and_line_ending_reads_the_same(tmp_path, raw):
    path = tmp_path / "table.csv"
    path.write_bytes(raw)
    assert read_text(path) == "class_name,a\ncafé,1\n"
    assert read_class_table_csv(path).loc["café", "a"] == 1.0


def test_a_windows_1252_file_names_its_line_and_the_fix(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_bytes("class_name,a\nzebra,1\ncafé,2\n".encode("cp1252"))
    with pytest.raises(InputError, match=r"classes\.csv line 3: not UTF-8 text \(byte 0xe9\); "):
        read_class_table_csv(path)
    with pytest.raises(InputError, match="re-save the file as UTF-8"):
        read_text(path)
