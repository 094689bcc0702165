"""Fuzzing ``dataset.toml``: text, damaged copies of a real manifest, and edited fields."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from sgma_cli.config._base import tomllib
from sgma_cli.config.dataset import DatasetManifest, load_manifest, save_manifest
from tests.fuzz.conftest import Fuzz, works_or_sgma_error
from tests.fuzz.test_recipes import values

#: A manifest as prepare writes it (3 classes, 2 modalities with statistics).
MANIFEST = DatasetManifest.model_validate(
    {
        "name": "tiny",
        "crs": "EPSG:32633",
        "resolution": [0.5, 0.5],
        "tile_size": 64,
        "stride": 64,
        "classes": [
            {"name": "ground", "color": [255, 255, 255]},
            {"name": "building", "color": [0, 0, 255]},
            {"name": "tree", "color": [0, 255, 0]},
        ],
        "modalities": [
            {
                "name": "rgb",
                "bands": 3,
                "optical": True,
                "stats": {
                    "mean": [1.0, 2.0, 3.0],
                    "std": [1.0, 1.0, 1.0],
                    "p2": [0.0, 0.0, 0.0],
                    "p98": [9.0, 9.0, 9.0],
                },
            },
            {
                "name": "dsm",
                "bands": 1,
                "stats": {"mean": [4.0], "std": [5.0], "p2": [0.0], "p98": [12.0]},
            },
        ],
        "splits": {"train": 4, "val": 2},
        "class_pixels": [10, 20, 30],
    }
)
TEXT = tomli_w.dumps(MANIFEST.model_dump(mode="json", exclude_none=True)).encode()


def _load(folder: Path, data: bytes) -> DatasetManifest | None:
    (folder / "dataset.toml").write_bytes(data)
    manifest = works_or_sgma_error(load_manifest, folder)
    if manifest is not None:  # what loads is consistent and writes back the same
        again = folder / "again"
        again.mkdir()
        save_manifest(manifest, again)
        assert load_manifest(again) == manifest
        assert len(manifest.modality_names) == len(set(manifest.modality_names)) >= 1
    return manifest


def test_manifest_bytes(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    @fuzz
    def check(data: bytes) -> None:
        with scratch() as folder:
            _load(folder, data)

    check()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """The real manifest truncated, with bytes flipped, or with a span deleted or repeated."""
    data = bytearray(TEXT)
    kind = draw(st.sampled_from(["truncate", "flip", "delete", "repeat"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return bytes(data[:at])
    if kind == "flip":
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[pos] ^= draw(st.integers(1, 255))
        return bytes(data)
    end = min(len(data), at + draw(st.integers(1, 40)))
    return bytes(data[:at] + (data[at:end] * 2 if kind == "repeat" else b"") + data[end:])


def test_manifest_damaged(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(damaged())
    @fuzz
    def check(data: bytes) -> None:
        with scratch() as folder:
            _load(folder, data)

    check()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a nested dict/list document."""
    out = [prefix] if prefix else []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        out += _paths(value, (*prefix, key))
    return out


@st.composite
def edited(draw: st.DrawFn) -> dict[str, Any]:
    """The real manifest with a few fields replaced by any value, removed, or added."""
    doc = copy.deepcopy(tomllib.loads(TEXT.decode()))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return doc


def test_manifest_fields(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(edited())
    @fuzz
    def check(doc: dict[str, Any]) -> None:
        with scratch() as folder:
            _load(folder, tomli_w.dumps(doc).encode())

    check()
