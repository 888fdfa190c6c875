"""Parsing JSON from outside: nesting measured before parsing, in linear time."""

from __future__ import annotations

import time
from typing import Any

import pytest

from settle.core.json_input import InvalidJSONError, invalid_text, loads, nesting

MEGABYTE = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["[[[[", "}}}"]', 1),
        (b'["a \\" [[[ \\\\", [[]]]', 3),
        (b'"unterminated [[[[', 0),
    ],
)
def test_nesting_counts_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert nesting(text) == depth


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"[" * 65 + b"]" * 65, "JSON_TOO_DEEP"),
        (b'{"a": ' * 100_000, "JSON_TOO_DEEP"),
        (b'"\xff"', "INVALID_JSON"),
        (b"\xef\xbb\xbf{}", "INVALID_JSON"),
        (b'"\xed\xa0\x80"', "INVALID_JSON"),  # a surrogate encoded as UTF-8 is not UTF-8
        (b"[NaN]", "INVALID_JSON"),
        (b"-Infinity", "INVALID_JSON"),
        (b"1" * 5000, "INVALID_JSON"),
        (b"{", "INVALID_JSON"),
    ],
)
def test_loads_refuses_what_it_does_not_take(text: bytes, code: str) -> None:
    with pytest.raises(InvalidJSONError) as refused:
        loads(text)
    assert refused.value.code == code


def test_loads_takes_what_is_within_the_limits() -> None:
    assert loads(b"[" * 64 + b"]" * 64) is not None
    assert loads('{"name": "Acme \\ud83d\\ude00"}') == {"name": "Acme \U0001f600"}


@pytest.mark.parametrize(
    "text",
    [
        b"[" * MEGABYTE,
        b"[]," * (MEGABYTE // 3),
        b'"' + b'\\"' * (MEGABYTE // 2),
        b'"\\"' * (MEGABYTE // 3),
    ],
    ids=["deep", "wide", "one unterminated string of escapes", "many quotes and escapes"],
)
def test_a_megabyte_of_any_shape_is_measured_quickly(text: bytes) -> None:
    # when a megabyte built to be slow is measured
    started = time.perf_counter()
    nesting(text)
    # then it takes a fraction of a second (linear, in C)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"input": {"name": "Acme"}}, None),
        ({"input": {"name": "Ac\x00me"}}, "input.name"),
        ({"input": {"lines": [{"d": "ok"}, {"d": "\udcff"}]}}, "input.lines.1.d"),
        ({"s": "\ud800"}, "s"),
        ({"\udcff": 1}, "\\udcff"),
        ("\x00", ""),
    ],
)
def test_invalid_text_names_the_first_bad_string(value: Any, path: str | None) -> None:
    assert invalid_text(value) == path
