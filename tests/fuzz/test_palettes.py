"""Fuzzing palette JSON files (``--palette FILE``): text and JSON documents of any shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sgma_cli.data.palettes import load_palette
from tests.fuzz.conftest import Fuzz, works_or_sgma_error

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
colours = st.lists(
    st.integers(-300, 600) | st.floats() | st.text(max_size=3), min_size=0, max_size=4
)
entries = st.tuples(st.text(max_size=8) | json_scalars, colours | json_values)
palettes = (
    st.lists(entries.map(list), max_size=6)
    | st.dictionaries(st.text(max_size=8), colours | json_values, max_size=6)
    | json_values
)


def _check(folder: Any, data: bytes) -> None:
    path = folder / "palette.json"
    path.write_bytes(data)
    palette = works_or_sgma_error(load_palette, str(path))
    if palette is not None:  # what loads is a usable class list
        assert len(palette) >= 2
        for name, colour in palette:
            assert isinstance(name, str) and len(colour) == 3
            assert all(isinstance(c, int) and 0 <= c <= 255 for c in colour), colour


def test_palette_documents(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(palettes)
    @fuzz
    def check(doc: Any) -> None:
        with scratch() as folder:
            _check(folder, json.dumps(doc).encode())  # NaN/Infinity as Python writes them

    check()


def test_palette_bytes(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    @fuzz
    def check(data: bytes) -> None:
        with scratch() as folder:
            _check(folder, data)

    check()
