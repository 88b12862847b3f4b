"""The settings mechanism: validation from field declarations, help from docstrings, TOML and argparse round trips."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass

import pytest

from activations.errors import UserError
from activations.settings import (
    SettingError,
    Settings,
    add_options,
    choice,
    describe,
    from_table,
    given_options,
    integer,
    integers,
    number,
    switch,
    toml_lines,
)


@dataclass(frozen=True)
class Example(Settings):
    """An example group."""

    count: int = integer(3, lo=1, hi=10)
    """How many."""
    rate: float = number(0.5, 0.0, 1.0, lo_open=True)
    """A rate in (0, 1]."""
    mode: str = choice("a", "a", "b")
    """Mode a or b."""
    on: bool = switch(True)
    """Whether it is on."""
    seeds: tuple[int, ...] = integers((0, 1), lo=0, min_len=1)
    """Seeds."""
    cap: int | None = integer(None, lo=1, optional=True)
    """Optional cap."""

    def check(self) -> None:
        if self.mode == "b" and self.count > 5:
            raise SettingError("count", self.count, "must be <= 5 in mode b")


def test_validation_names_the_key() -> None:
    assert Example().count == 3
    for kwargs, msg in [
        ({"count": 0}, r"count = 0 is out of range \[1, 10\]"),
        ({"count": 2.5}, "count = 2.5 must be an integer"),
        ({"count": True}, "must be an integer"),
        ({"rate": 0.0}, r"rate = 0.0 is out of range \(0, 1\]"),
        ({"rate": float("nan")}, "out of range"),
        ({"mode": "c"}, "must be one of a, b"),
        ({"on": 1}, "must be true or false"),
        ({"seeds": [0, -1]}, r"out of range \[0, inf\)"),
        ({"seeds": []}, "at least 1"),
        ({"cap": 0}, "out of range"),
        ({"mode": "b", "count": 7}, "must be <= 5 in mode b"),
        ({"count": 10**40}, "out of range"),
    ]:
        with pytest.raises(SettingError, match=msg):
            Example(**kwargs)
    assert Example(rate=1).rate == 1.0 and isinstance(Example(rate=1).rate, float)
    assert Example(seeds=[2, 3]).seeds == (2, 3)
    assert Example(cap=None).cap is None


def test_toml_round_trip_and_help() -> None:
    obj = Example(count=4, rate=0.25, mode="b", on=False, seeds=(5,), cap=7)
    text = "\n".join(toml_lines(obj))
    assert "# A rate in (0, 1]." in text
    assert from_table(Example, tomllib.loads(text), "f.toml: [x]") == obj
    # None is written as a comment and comes back as the default (None)
    assert from_table(Example, tomllib.loads("\n".join(toml_lines(Example()))), "f") == Example()


def test_from_table_errors_are_one_line_user_errors() -> None:
    with pytest.raises(UserError, match=r"f.toml: \[x\] unknown key 'cnt' \(known: count, rate"):
        from_table(Example, {"cnt": 1}, "f.toml: [x]")
    with pytest.raises(UserError, match=r"f.toml: \[x\] count = 11 is out of range"):
        from_table(Example, {"count": 11}, "f.toml: [x]")
    with pytest.raises(UserError, match="must be a table"):
        from_table(Example, [1], "f.toml: [x]")


def test_argparse_options_follow_the_declaration() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, Example)
    args = parser.parse_args(["--count", "5", "--seeds", "1,2,3", "--on", "false"])
    given = given_options(args, Example)
    assert given == {"count": 5, "seeds": (1, 2, 3), "on": False}
    assert Example(**given).seeds == (1, 2, 3)
    assert "How many. (default: 3)" in parser.format_help()


def test_describe_lists_every_field() -> None:
    rows = {r.key: r for r in describe(Example)}
    assert rows["rate"].allowed == "(0, 1]" and rows["rate"].help == "A rate in (0, 1]."
    assert rows["mode"].allowed == "a / b" and rows["cap"].allowed.endswith("or none")
    assert list(rows) == ["count", "rate", "mode", "on", "seeds", "cap"]
