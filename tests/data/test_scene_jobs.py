"""Tests for sgma_cli.data.scene_jobs (and sgma_cli.data.plan): checks and tiles before writing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sgma_cli.data.discovery import discover
from sgma_cli.data.plan import scene_key
from sgma_cli.data.scene_jobs import cut_tiles, inspect_plan, resolve_palette
from sgma_cli.errors import RasterError, UsageError

from .conftest import UTM, Scene, write_raster


def _many(scene: Scene, root: Path, n: int) -> Path:
    for i in range(n):
        d = root / f"s{i}"
        d.mkdir(parents=True)
        for m in ("rgb", "dsm"):
            shutil.copy(scene.root / f"{m}.tif", d / f"{m}.tif")
        shutil.copy(scene.root / "labels_index.tif", d / "labels.tif")
    return root


class TestInventory:
    def test_scene_key(self) -> None:
        assert scene_key(Path("a_rgb.tif"), "rgb") == scene_key(Path("A-DSM.TIF"), "dsm") == "a"
        assert scene_key(Path("top_potsdam_2_10_RGB.tif"), "rgb") == "top_potsdam_2_10"

    def test_rows_and_grids(self, scene: Scene) -> None:
        plan = discover(
            scene.root, modality=["rgb=rgb.tif", "sar=sar.tif"], labels="labels_index.tif"
        )
        jobs, rows, bands = inspect_plan(plan, "rgb", None, None, lambda _: None)
        assert bands == {"rgb": 3, "sar": 1} and [r.role for r in rows] == ["rgb", "sar", "labels"]
        assert (jobs["scene"].grid.width, jobs["scene"].grid.crs) == (96, UTM)

    def test_index_labels_without_palette(self, scene: Scene) -> None:
        plan = discover(scene.root, modality=["rgb=rgb.tif"], labels="labels_index.tif")
        palette, maps = resolve_palette(plan, None, ())
        assert [n for n, _ in palette] == ["class_0", "class_1", "class_2", "class_3"]
        assert maps[scene.root / "labels_index.tif"][1] == {0: 0, 1: 1, 2: 2, 3: 3}

    def test_split_by_scene(self, scene: Scene, tmp_path: Path) -> None:
        plan = discover(_many(scene, tmp_path / "many", 10))
        jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
        assert cut_tiles(jobs, 48, 48, "0.8,0.1,0.1", 0) == "by scene"
        per_scene = {name: {s for _, s, _ in job.tiles} for name, job in jobs.items()}
        assert all(len(s) == 1 for s in per_scene.values())  # a scene never straddles splits
        assert sorted(next(iter(s)) for s in per_scene.values()).count("train") == 8

    def test_band_mismatch(self, scene: Scene, tmp_path: Path) -> None:
        root = _many(scene, tmp_path / "many", 2)
        write_raster(
            root / "s1" / "dsm.tif", np.zeros((2, 48, 48), np.float32), UTM, scene_transform(2.0)
        )
        with pytest.raises(
            RasterError, match="s1/dsm.tif: dsm has 2 bands here but 1 in other scenes"
        ):
            inspect_plan(discover(root), "rgb", None, None, lambda _: None)

    def test_missing_reference(self, scene: Scene, tmp_path: Path) -> None:
        root = _many(scene, tmp_path / "many", 2)
        (root / "s1" / "rgb.tif").unlink()
        with pytest.raises(RasterError, match="scene s1 has no rgb raster"):
            inspect_plan(discover(root), "rgb", None, None, lambda _: None)

    def test_tile_too_large(self, scene: Scene) -> None:
        plan = discover(scene.root, modality=["rgb=rgb.tif"])
        jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
        with pytest.raises(UsageError, match="--tile 100 is larger than scene scene"):
            cut_tiles(jobs, 100, 50, None, 0)

    def test_too_many_tiles_refused_before_listing(
        self, scene: Scene, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plan = discover(scene.root, modality=["rgb=rgb.tif"])
        jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
        monkeypatch.setattr("sgma_cli.data.scene_jobs.MAX_TILES", 100)  # 96 x 96 px at 1 px
        with pytest.raises(UsageError, match=r"cut the scenes into 9,216 tiles \(more than 100\)"):
            cut_tiles(jobs, 1, 1, None, 0)
        assert jobs["scene"].tiles == []


def scene_transform(res: float):  # noqa: ANN201
    from affine import Affine

    from .conftest import X0, Y0

    return Affine(res, 0, X0, 0, -res, Y0)
