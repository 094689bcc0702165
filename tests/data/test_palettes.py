"""Tests for sgma_cli.data.palettes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgma_cli.data.palettes import DELIVER, POTSDAM, default_colors, load_palette
from sgma_cli.errors import UsageError


class TestPalettes:
    def test_potsdam_scheme(self) -> None:
        assert [n for n, _ in POTSDAM] == [
            "impervious_surfaces",
            "building",
            "low_vegetation",
            "tree",
            "car",
            "clutter",
        ]
        assert POTSDAM[1][1] == (0, 0, 255) and POTSDAM[5][1] == (255, 0, 0)
        assert len(DELIVER) == 25

    def test_default_colors_distinct(self) -> None:
        colors = default_colors(25)
        assert len(set(colors)) == 25 and all(0 <= c <= 255 for rgb in colors for c in rgb)

    def test_load_by_name_and_file(self, tmp_path: Path) -> None:
        assert load_palette("Potsdam") == POTSDAM
        path = tmp_path / "p.json"
        path.write_text(json.dumps({"ground": [0, 0, 0], "roof": [255, 0, 0]}))
        assert load_palette(str(path)) == [("ground", (0, 0, 0)), ("roof", (255, 0, 0))]

    @pytest.mark.parametrize("content", ["[1, 2]", "not json", '[["only", [1, 2, 3]]]'])
    def test_bad_file(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "p.json"
        path.write_text(content)
        with pytest.raises(UsageError, match="p.json"):
            load_palette(str(path))

    def test_unknown_name(self) -> None:
        with pytest.raises(UsageError, match="neither a known palette"):
            load_palette("vaihingen")
