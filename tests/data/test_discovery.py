"""Tests for sgma_cli.data.discovery: presets, sample folder, scene folders, options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sgma_cli.data.discovery import discover, parse_modality_option
from sgma_cli.data.synthetic import write_scene
from sgma_cli.errors import RasterError, UsageError

from .conftest import Scene


class TestDiscover:
    def test_sample_folder(self, tmp_path: Path) -> None:
        write_scene(tmp_path / "s", size=64, vectors=False)
        plan = discover(tmp_path / "s")
        assert plan.layout == "sample" and plan.modalities == ["rgb", "dsm", "sar"]
        assert plan.scenes[0].labels is not None and plan.scenes[0].labels.path.name == "labels.tif"
        assert plan.optical == {"rgb"}
        assert plan.tile == (32, 32)  # sample.json carries the tile size for prepare

    def test_sample_marker_tiling(self, tmp_path: Path) -> None:
        write_scene(tmp_path / "s", size=64, vectors=False)
        marker = tmp_path / "s" / "sample.json"
        meta = json.loads(marker.read_text())
        del meta["tile"], meta["stride"]  # a marker from before the tile size was recorded
        marker.write_text(json.dumps(meta))
        assert discover(tmp_path / "s").tile is None
        marker.write_text(json.dumps({**meta, "tile": 64, "stride": 128}))
        with pytest.raises(RasterError, match="sample.json: not an sgma sample marker"):
            discover(tmp_path / "s")

    def test_scene_folders(self, scene: Scene, tmp_path: Path) -> None:
        for name in ("a", "b"):
            d = tmp_path / "many" / name
            d.mkdir(parents=True)
            for m in ("rgb", "dsm"):
                shutil.copy(scene.root / f"{m}.tif", d / f"{m}.tif")
            shutil.copy(scene.root / "labels_index.tif", d / "labels.tif")
        plan = discover(tmp_path / "many")
        assert plan.layout == "folders" and [s.name for s in plan.scenes] == ["a", "b"]
        assert plan.modalities == ["rgb", "dsm"] and plan.scenes[1].labels is not None

    def test_options_glob_and_single(self, scene: Scene) -> None:
        plan = discover(
            scene.root, modality=["rgb=rgb.tif", "sar=s*.tif"], labels="labels_index.tif"
        )
        assert plan.layout == "options" and list(plan.scenes[0].modalities) == ["rgb", "sar"]
        with pytest.raises(UsageError, match="no file matches"):
            discover(scene.root, modality=["rgb=nothing*.tif"])

    def test_parse_modality(self) -> None:
        assert parse_modality_option("dsm=a/*.tif") == ("dsm", "a/*.tif")
        for bad in ("dsm", "=x", "d-s=x"):
            with pytest.raises(UsageError, match="--modality"):
                parse_modality_option(bad)

    def test_empty_and_missing(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        with pytest.raises(UsageError, match="empty"):
            discover(tmp_path / "empty")
        with pytest.raises(UsageError, match="not found"):
            discover(tmp_path / "nope")
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "readme.txt").write_text("x")
        with pytest.raises(UsageError, match="no rasters found"):
            discover(tmp_path / "junk")
        with pytest.raises(UsageError, match="potsdam preset: no 2_Ortho_RGB"):
            discover(tmp_path / "junk", preset="potsdam")
        with pytest.raises(UsageError, match="unknown --preset 'vaihingen'"):
            discover(tmp_path / "junk", preset="vaihingen")
