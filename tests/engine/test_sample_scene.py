"""Tests for sgma_cli.engine.sample_scene."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgma_cli.engine.sample_scene import sample
from sgma_cli.errors import UsageError


class TestSample:
    def test_writes_scene(self, tmp_path: Path) -> None:
        result = sample(tmp_path / "scene", size=128, seed=2)
        assert set(result.files) == {"rgb", "dsm", "sar", "labels", "vectors", "marker"}
        assert all(p.exists() for p in result.files.values())
        marker = json.loads(result.files["marker"].read_text())
        assert marker["seed"] == 2 and marker["modalities"] == {
            "rgb": "rgb.tif",
            "dsm": "dsm.tif",
            "sar": "sar.tif",
        }
        assert not any(
            p.name.startswith(".") for p in (tmp_path / "scene").iterdir()
        )  # no temp files left

    def test_without_vectors(self, tmp_path: Path) -> None:
        result = sample(tmp_path / "scene", size=64, vectors=False)
        assert "vectors" not in result.files and not (tmp_path / "scene" / "labels.gpkg").exists()

    @pytest.mark.parametrize("size", [32, 65, 20000])
    def test_bad_size(self, tmp_path: Path, size: int) -> None:
        with pytest.raises(UsageError, match="--size"):
            sample(tmp_path / "scene", size=size)
        assert not (tmp_path / "scene").exists()

    def test_out_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_text("")
        with pytest.raises(UsageError, match="not a folder"):
            sample(tmp_path / "f", size=64)
