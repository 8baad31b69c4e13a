"""Exact unit conversion."""
from __future__ import annotations

import pytest

from selfheal.handlers.observer.units import convert, decimal_of, split_size, target_unit


@pytest.mark.parametrize("text, unit, to, expected", [
    ("3.09 GiB", "size", "MiB", 3164.16),
    ("605.88 MiB", "size", "MiB", 605.88),
    ("605.88 MiB", "size", "GiB", 0.5916796875),
    ("448.00 KiB", "size", "MiB", 0.4375),
    ("0 bytes", "size", "MiB", 0.0),
    ("1024 bytes", "size", "MiB", 0.0009765625),
    ("1.95 GiB", "size", "MiB", 1996.8),
    ("4.00 GB", "size", "GiB", 4.0),        # vLLM 0.7-0.8.2: "GB" is bytes / 1024**3
    ("2.50GB", "size", "MiB", 2560.0),
    ("36.0 GiB", "size", "GiB", 36.0),      # format_gib drops trailing zeros
    ("2.5", "GiB", "GiB", 2.5),
    ("-2.14", "GiB", "MiB", -2191.36),
    ("10.44", "GB", "GiB", 10.44),
])
def test_sizes(text, unit, to, expected):
    assert convert(text, unit, to) == expected


@pytest.mark.parametrize("text, expected", [
    ("43,392", 43392), ("8192", 8192), ("1,048,576", 1048576), ("8192.0", 8192), ("0", 0),
])
def test_counts_are_ints(text, expected):
    value = convert(text, "count", "count")
    assert value == expected and isinstance(value, int)


def test_ratios_are_floats():
    assert convert("0.9", "ratio", "ratio") == 0.9
    assert convert("1", "ratio", "ratio") == 1.0 and isinstance(convert("1", "ratio", "ratio"), float)


def test_nonsense_gives_none():
    assert convert("abc GiB", "size", "MiB") is None
    assert convert("5 parsecs", "size", "MiB") is None
    assert convert("GiB", "size", "MiB") is None
    assert convert("1.5 GiB", "size", "count") is None
    assert convert("9" * 400, "count", "count") is None  # beyond any real count; int() limits
    for text in ("", "1e400", "nan", "inf", "1.2.3", "--1"):
        assert decimal_of(text) is None, text


def test_split_size_and_target_units():
    assert split_size("605.88 MiB") == ("605.88", "MiB")
    assert split_size("0 bytes") == ("0", "bytes")
    assert split_size(" 3.09GiB ") == ("3.09", "GiB")
    assert target_unit("free_gib") == "GiB"
    assert target_unit("gpu_free_mib") == "MiB"
    assert target_unit("requested_utilization") == "ratio"
    assert target_unit("max_num_seqs") == "count"
