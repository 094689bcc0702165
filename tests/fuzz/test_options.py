"""Fuzzing option strings: ``--modality NAME=PATH``, ``--subsets``, ``--split``, ``--ignore``."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sgma_cli.data.discovery import parse_modality_option
from sgma_cli.data.labels import parse_ignore
from sgma_cli.data.plan import NAME_RE
from sgma_cli.data.tile_layout import parse_split
from sgma_cli.engine.subsets import select_subsets
from sgma_cli.errors import DatasetError, UsageError
from tests.fuzz.conftest import Fuzz, works_or_sgma_error

MODALITIES = ["rgb", "dsm", "sar", "nir"]
pieces = st.sampled_from(
    [*MODALITIES, "RGB", "all", ",", ";", "=", " ", "+", "", "\n", "\x00", "é", "..", "/", "*"]
)
texts = st.lists(pieces | st.text(max_size=6), max_size=10).map("".join)
numbers = st.sampled_from(
    ["0", "1", "0.8", "0.1", ".5", "-0.1", "nan", "inf", "-inf", "1e-7", "1e308", "1_0", " 0.2 "]
)


def test_modality_option(fuzz: Fuzz) -> None:
    @given(texts)
    @fuzz
    def check(text: str) -> None:
        parsed = works_or_sgma_error(parse_modality_option, text)
        if parsed is not None:
            name, where = parsed
            assert NAME_RE.match(name) and "\n" not in name and where == where.strip() != ""

    check()


def test_subsets(fuzz: Fuzz) -> None:
    @given(
        texts,
        st.lists(st.sampled_from(MODALITIES), min_size=1, max_size=4, unique=True),
        st.lists(st.sampled_from(MODALITIES), max_size=2, unique=True),
    )
    @fuzz
    def check(text: str, modalities: list[str], missing: list[str]) -> None:
        try:
            subsets = select_subsets(text, modalities, missing)
        except (UsageError, DatasetError) as err:
            assert "\n" not in str(err)
            return
        assert subsets and len(set(subsets)) == len(subsets)
        for subset in subsets:  # in model order, known, none of the missing sensors
            assert subset and list(subset) == [m for m in modalities if m in subset]
            assert not set(subset) & set(missing)

    check()


def test_split(fuzz: Fuzz) -> None:
    three = st.lists(numbers, min_size=3, max_size=3).map(",".join)
    some = st.lists(numbers | st.text(max_size=4), max_size=4).map(",".join)

    @given(three | some | texts)
    @fuzz
    def check(text: str) -> None:
        fractions = works_or_sgma_error(parse_split, text)
        if fractions is not None:
            assert len(fractions) == 3 and all(math.isfinite(f) and f >= 0 for f in fractions)
            assert abs(sum(fractions) - 1) <= 1e-6

    check()


def test_ignore(fuzz: Fuzz) -> None:
    @given(st.lists(texts | numbers, max_size=3), st.booleans())
    @fuzz
    def check(specs: list[str], colour: bool) -> None:
        values = works_or_sgma_error(parse_ignore, specs, colour)
        if values is not None and colour:
            assert all(isinstance(v, int) and 0 <= v < 1 << 24 for v in values)

    check()
