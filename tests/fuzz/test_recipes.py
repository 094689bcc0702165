"""Fuzzing recipes: TOML text, TOML tables over the recipe's keys, and ``--set`` overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from sgma_cli.config.recipe import Recipe, load_recipe, recipe_to_toml
from tests.fuzz.conftest import Fuzz, works_or_sgma_error

#: Every table and key of the schema, so generated recipes hit real fields as often as not.
TABLES: dict[str, list[str]] = {
    name: list(field.annotation.model_fields)  # type: ignore[union-attr]
    for name, field in Recipe.model_fields.items()
    if hasattr(field.annotation, "model_fields")
}

scalars = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["sgf", "sum", "mean", "auto", "bf16", "test_convnext", "all", "rgb,dsm"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@st.composite
def recipe_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A TOML document over the recipe's tables: known or unknown keys, values of any type."""
    doc: dict[str, Any] = {}
    for table in draw(st.lists(st.sampled_from([*TABLES, "extra"]), unique=True, max_size=4)):
        keys = TABLES.get(table, ["x"])
        names = st.sampled_from(keys) | st.text(min_size=1, max_size=8)
        doc[table] = draw(st.dictionaries(names, values, max_size=4))
    if draw(st.booleans()):
        doc["name"] = draw(scalars)
    return doc


def _load_text(folder: Path, text: str | bytes) -> Recipe | None:
    path = folder / "recipe.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    return works_or_sgma_error(load_recipe, path)


def _round_trip(recipe: Recipe | None, folder: Path) -> None:
    """A valid recipe written as train writes it reads back equal."""
    if recipe is not None:
        again = folder / "again.toml"
        again.write_text(recipe_to_toml(recipe))
        assert load_recipe(again) == recipe


def test_recipe_text(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    fragments = st.sampled_from(
        ["[data]\n", "[model]\n", "[train]\n", "crop_size = ", "lr = ", "= 1\n", "[[x]]\n"]
        + ['"\\u00e9"', "[1, 2]", "{a = 1}", "inf", "nan", "1e400", "\n", "\x00", "\xff"]
    )

    @given(st.lists(fragments | st.text(max_size=20), max_size=12).map("".join))
    @fuzz
    def check(text: str) -> None:
        with scratch() as folder:
            _round_trip(_load_text(folder, text), folder)

    check()


def test_recipe_bytes(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(st.binary(max_size=200))
    @fuzz
    def check(data: bytes) -> None:
        with scratch() as folder:
            _load_text(folder, data)

    check()


def test_recipe_tables(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(recipe_dicts())
    @fuzz
    def check(doc: dict[str, Any]) -> None:
        with scratch() as folder:
            _round_trip(_load_text(folder, tomli_w.dumps(doc)), folder)

    check()


def test_set_overrides(fuzz: Fuzz) -> None:
    keys = st.sampled_from(
        [f"{t}.{k}" for t, ks in TABLES.items() for k in ks] + ["name", "data", "x.y.z", ""]
    )
    texts = st.text(max_size=15) | values.map(lambda v: tomli_w.dumps({"v": v})[4:].strip())
    item = st.builds(
        lambda k, sep, v: f"{k}{sep}{v}", keys, st.sampled_from(["=", " = ", ""]), texts
    )

    @given(st.lists(item | st.text(max_size=20), min_size=1, max_size=3))
    @fuzz
    def check(overrides: list[str]) -> None:
        works_or_sgma_error(load_recipe, None, overrides)

    check()
