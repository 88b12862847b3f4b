"""Hostile definition files: endless devices, huge or deeply nested TOML, bytes that are not UTF-8.

Each must be refused in one line naming the file, exit status 2, before anything is computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activations.errors import UserError
from features.definition import MAX_DEFINITION_BYTES, load_definition
from tests.helpers.common import error_line, run_cli


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_is_refused_in_one_line():
    line = error_line(run_cli("definition", "show", "--definition", "/dev/zero"))
    assert "/dev/zero" in line and "regular file" in line


def test_deeply_nested_toml_is_refused_in_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    line = error_line(run_cli("definition", "show", "--definition", str(deep)))
    assert str(deep) in line and "nested too deeply" in line


def test_nested_inline_tables_are_refused(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("[support]\nx = " + "{a=" * 5000 + "1" + "}" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="nested too deeply"):
        load_definition(deep)


def test_oversized_file_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * (MAX_DEFINITION_BYTES // 10 + 10), encoding="utf-8")
    with pytest.raises(UserError, match="larger than"):
        load_definition(big)


def test_folder_and_fifo_are_refused(tmp_path):
    with pytest.raises(UserError, match="regular file"):
        load_definition(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.toml"
        os.mkfifo(fifo)
        with pytest.raises(UserError, match="regular file"):
            load_definition(fifo)  # opening it would block forever: it must not be opened


def test_non_utf8_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(UserError, match="not UTF-8"):
        load_definition(bad)


def test_ordinary_definition_file_still_loads(tmp_path):
    """The guards above must not refuse a normal file: the built-in definition, copied, loads equal."""
    from features.definition import DEFAULT_PATH

    copy = tmp_path / "mine.toml"
    copy.write_bytes(DEFAULT_PATH.read_bytes())
    assert load_definition(copy) == load_definition(None)
