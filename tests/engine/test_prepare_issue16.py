"""Issue 16 on ``sgma prepare``: the documented flight example, clean failures, splits.

A per-scene glob beside one single-file modality, ``--palette`` looked up in SRC_DIR, a
plan row for vector labels, a failed first run that leaves nothing, how two scenes are
split, and the val split held out of an official split that has none (Potsdam).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

import sgma_cli.engine.prepare as prepare_module
from sgma_cli.config.dataset import load_manifest
from sgma_cli.data.discovery import discover
from sgma_cli.data.scene_jobs import cut_tiles, inspect_plan
from sgma_cli.engine.prepare import PrepareOptions, prepare
from sgma_cli.errors import UsageError
from tests.data.conftest import UTM, X0, Y0, make_potsdam, write_raster

FLIGHT_MODALITIES = ("rgb=ortho/*.tif", "dsm=dsm/*.tif", "sar=s1.tif")


def make_flight(root: Path, n: int = 64) -> Path:
    """Two orthophoto scenes (``ortho/a.tif``, ``ortho/b.tif``, 0.5 m) side by side, their
    DSMs (1 m), one SAR raster ``s1.tif`` (2 m) over both, ``buildings.gpkg`` (field
    ``kind``) and ``classes.json``: the layout of docs/prepare.md's flight example."""
    rng = np.random.default_rng(16)
    for i, name in enumerate(("a", "b")):
        x0 = X0 + i * n * 0.5
        rgb = rng.integers(0, 255, (3, n, n), dtype=np.uint8)
        write_raster(root / "ortho" / f"{name}.tif", rgb, UTM, Affine(0.5, 0, x0, 0, -0.5, Y0))
        dsm = rng.normal(5, 2, (1, n // 2, n // 2)).astype(np.float32)
        write_raster(root / "dsm" / f"{name}.tif", dsm, UTM, Affine(1.0, 0, x0, 0, -1.0, Y0))
    sar = rng.normal(-10, 2, (1, n // 4, n // 2)).astype(np.float32)
    write_raster(root / "s1.tif", sar, UTM, Affine(2.0, 0, X0, 0, -2.0, Y0))
    half = n * 0.5  # metres per scene
    frame = gpd.GeoDataFrame(
        {"kind": ["house", "garage", "house"]},
        geometry=[
            box(X0, Y0 - half, X0 + half / 2, Y0),
            box(X0 + half / 2, Y0 - half, X0 + half, Y0),
            box(X0 + half, Y0 - half, X0 + 2 * half, Y0),
        ],
        crs=UTM,
    )
    frame.to_file(root / "buildings.gpkg", driver="GPKG")
    (root / "classes.json").write_text(
        json.dumps([["house", [255, 0, 0]], ["garage", [0, 0, 255]]])
    )
    return root


def _flight_options(src: Path, out: Path, **kw: object) -> PrepareOptions:
    base: dict[str, object] = dict(
        src=src,
        out=out,
        modality=FLIGHT_MODALITIES,
        labels="buildings.gpkg",
        label_field="kind",
        palette="classes.json",
        tile=16,
        stride=16,
    )
    base.update(kw)
    return PrepareOptions(**base)  # type: ignore[arg-type]


class TestFlightExample:
    def test_single_file_modality_joins_every_scene(self, tmp_path: Path) -> None:
        plan = discover(make_flight(tmp_path / "flight"), modality=list(FLIGHT_MODALITIES))
        assert [s.name for s in plan.scenes] == ["a", "b"]
        for scene in plan.scenes:
            assert list(scene.modalities) == ["rgb", "dsm", "sar"]
            assert scene.modalities["sar"].path == tmp_path / "flight" / "s1.tif"

    def test_glob_files_that_match_no_scene(self, tmp_path: Path) -> None:
        src = make_flight(tmp_path / "flight")
        for name in ("x", "y"):
            shutil.copy(src / "s1.tif", src / f"sar_{name}.tif")
        with pytest.raises(UsageError, match="--modality sar: no file name matches a scene"):
            discover(src, modality=["rgb=ortho/*.tif", "sar=sar_*.tif"])

    def test_runs_with_sar_in_both_scenes(self, tmp_path: Path) -> None:
        src = make_flight(tmp_path / "flight")
        report = prepare(_flight_options(src, tmp_path / "out", split="1,0,0"))
        sar_rows = [r for r in report.rows if r.role == "sar"]
        assert [(r.scene, r.path.name) for r in sar_rows] == [("a", "s1.tif"), ("b", "s1.tif")]
        manifest = load_manifest(tmp_path / "out")
        assert manifest.modality_names == ["rgb", "dsm", "sar"]
        assert manifest.class_names == ["house", "garage"]
        index = gpd.read_file(tmp_path / "out" / "index.gpkg")
        assert set(index["scene"]) == {"a", "b"} and len(index) == 32
        assert (index["coverage_sar"] == 1.0).all()  # the SAR raster covers both scenes

    def test_palette_found_in_src_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        src = make_flight(tmp_path / "flight")
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)  # classes.json is beside buildings.gpkg, not in the cwd
        report = prepare(_flight_options(src, tmp_path / "out", split="1,0,0", dry_run=True))
        assert report.tiles_total == 32
        prepare(_flight_options(src, tmp_path / "out", split="1,0,0"))
        assert load_manifest(tmp_path / "out").class_names == ["house", "garage"]

    def test_plan_has_a_row_for_vector_labels(self, tmp_path: Path) -> None:
        src = make_flight(tmp_path / "flight")
        report = prepare(_flight_options(src, tmp_path / "out", split="1,0,0", dry_run=True))
        labels = [r for r in report.rows if r.role == "labels"]
        assert [(r.scene, r.path.name, r.dtype, r.size[0]) for r in labels] == [
            ("a", "buildings.gpkg", "vector", 3),
            ("b", "buildings.gpkg", "vector", 3),
        ]
        assert labels[0].crs == "EPSG:32633"
        assert labels[0].bounds == pytest.approx((X0, Y0 - 32, X0 + 64, Y0))


class TestFailedFirstRun:
    def test_a_bug_mid_run_removes_everything(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        src = make_flight(tmp_path / "flight")
        calls = {"n": 0}
        real = prepare_module._read

        def flaky(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyError("sar")  # what the unfixed flight example raised
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(prepare_module, "_read", flaky)
        out = tmp_path / "out"
        with pytest.raises(KeyError):
            prepare(_flight_options(src, out, split="1,0,0"))
        assert not out.exists()  # tiles, .sgma-prepare.json and the folder itself are gone
        monkeypatch.setattr(prepare_module, "_read", real)
        prepare(_flight_options(src, out, split="1,0,0"))  # the rerun is not refused
        assert load_manifest(out).splits == {"train": 32}


class TestTwoScenes:
    """Whole scenes go to a split when there are as many scenes as non-zero splits."""

    def test_fewer_scenes_than_splits_use_blocks(self, tmp_path: Path) -> None:
        plan = discover(make_flight(tmp_path / "flight", n=128), modality=list(FLIGHT_MODALITIES))
        jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
        method = cut_tiles(jobs, 16, 16, "0.8,0.1,0.1", 0)
        assert method == "by spatial blocks (2 scenes for 3 splits)"
        for job in jobs.values():  # each scene holds blocks of every split
            assert {s for _, s, _ in job.tiles} == {"train", "val", "test"}

    def test_as_many_scenes_as_splits_go_whole(self, tmp_path: Path) -> None:
        plan = discover(make_flight(tmp_path / "flight"), modality=list(FLIGHT_MODALITIES))
        jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
        assert cut_tiles(jobs, 16, 16, "0.5,0.5,0", 0) == "by scene"
        assert sorted({s for _, s, _ in job.tiles}.pop() for job in jobs.values()) == [
            "train",
            "val",
        ]


def _potsdam_with_three_scenes(root: Path) -> Path:
    """make_potsdam's scenes 2_10 (train) and 2_13 (test) plus 2_11 (train), a copy of 2_10."""
    make_potsdam(root)
    for path in list(root.rglob("*2_10*")) + list(root.rglob("*02_10*")):
        twin = path.with_name(path.name.replace("2_10", "2_11").replace("02_10", "02_11"))
        if not twin.exists():
            shutil.copy(path, twin)
    with rasterio.open(root / "2_Ortho_RGB" / "top_potsdam_2_11_RGB.tif") as src:
        assert src.transform  # a copy on the same ground: only the split matters here
    return root


class TestValHeldOut:
    def test_one_training_scene_gives_blocks(self, tmp_path: Path) -> None:
        report = prepare(
            PrepareOptions(
                src=make_potsdam(tmp_path / "P"),
                out=tmp_path / "d",
                preset="potsdam",
                tile=32,
                stride=32,
            )
        )
        assert report.split_method == (
            "official + val held out: 1 of 4 spatial blocks of training scene potsdam_2_10"
        )
        assert load_manifest(tmp_path / "d").splits == {"train": 3, "val": 1, "test": 4}

    def test_several_training_scenes_give_whole_scenes(self, tmp_path: Path) -> None:
        report = prepare(
            PrepareOptions(
                src=_potsdam_with_three_scenes(tmp_path / "P"),
                out=tmp_path / "d",
                preset="potsdam",
                tile=32,
                stride=32,
                dry_run=True,
            )
        )
        assert report.split_method.startswith("official + val held out: 1 of 2 training scenes")
        assert report.tiles_total == 12
