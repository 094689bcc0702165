"""Tests for sgma_cli.engine.prepare on tiny real rasters (and the sample scene)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from sgma_cli.config.dataset import load_manifest
from sgma_cli.data.align import AlignedReader, reference_grid
from sgma_cli.data.raster import inspect_raster
from sgma_cli.engine.prepare import PrepareOptions, prepare
from sgma_cli.errors import RasterError, UsageError
from tests.data.conftest import (
    UTM,
    X0,
    Y0,
    Scene,
    make_deliver,
    make_dfc2023,
    make_potsdam,
    make_scene,
    write_polygons,
    write_raster,
)

MODS = ("rgb=rgb.tif", "dsm=dsm.tif", "sar=sar.tif")


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    return make_scene(tmp_path / "scene")


def _opts(scene: Scene, out: Path, **kw: object) -> PrepareOptions:
    base: dict[str, object] = dict(
        src=scene.root,
        out=out,
        modality=MODS,
        labels="labels_index.tif",
        palette="potsdam",
        tile=32,
        stride=16,
        split="1,0,0",
    )
    base.update(kw)
    return PrepareOptions(**base)  # type: ignore[arg-type]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in {".tif", ".toml"}
    }


class TestPrepare:
    def test_tiles_share_one_grid(self, scene: Scene, tmp_path: Path) -> None:
        report = prepare(_opts(scene, tmp_path / "out"))
        m = load_manifest(tmp_path / "out")
        assert (
            m.modality_names == ["rgb", "dsm", "sar"]
            and m.crs == "EPSG:32633"
            and m.resolution == (1.0, 1.0)
        )
        assert m.modality("rgb").optical and not m.modality("dsm").optical and m.tile_size == 32
        assert report.tiles_written == 25 and m.splits == {"train": 25}
        for folder in (tmp_path / "out" / "tiles" / "train").iterdir():
            profiles = []
            for name in ("rgb", "dsm", "sar", "mask", "label"):
                with rasterio.open(folder / f"{name}.tif") as src:
                    profiles.append((src.crs, src.transform, src.shape))
                    assert src.dtypes[0] == {"mask": "uint8", "label": "uint8"}.get(name, "float32")
            assert len(set(profiles)) == 1

    def test_world_point_same_pixel_and_masks(self, scene: Scene, tmp_path: Path) -> None:
        prepare(_opts(scene, tmp_path / "out"))
        tile = tmp_path / "out" / "tiles" / "train" / "scene_r00000_c00000"
        with rasterio.open(tile / "mask.tif") as src:
            mask = src.read()
            row, col = src.index(X0 + 6.5, Y0 - 6.5)  # inside the DSM hole (world X0+4..10)
        with rasterio.open(tile / "dsm.tif") as src:
            dsm = src.read(1)
            assert src.index(X0 + 6.5, Y0 - 6.5) == (row, col) == (6, 6)
        assert mask[1, row, col] == 0 and np.isnan(dsm[row, col]) and mask[0, row, col] == 1
        assert mask[1, 20, 20] == 1 and dsm[20, 20] == pytest.approx(30.0)
        east = (
            tmp_path / "out" / "tiles" / "train" / "scene_r00064_c00064"
        )  # world x X0+64..96: east of the swath
        with rasterio.open(east / "mask.tif") as src:
            assert not src.read(3).any() and src.read(1).all()
        idx = gpd.read_file(tmp_path / "out" / "index.gpkg", layer="tiles")
        row = idx.set_index("tile_id").loc["scene_r00064_c00064"]
        assert row.coverage_sar == 0 and row.coverage_rgb == 1 and row.split == "train"
        assert idx.crs == UTM and len(idx) == 25

    def test_resolution_and_crs_options(self, scene: Scene, tmp_path: Path) -> None:
        prepare(_opts(scene, tmp_path / "coarse", resolution=2.0, tile=16, stride=16))
        m = load_manifest(tmp_path / "coarse")
        assert m.resolution == (2.0, 2.0) and m.splits == {"train": 9}
        prepare(_opts(scene, tmp_path / "merc", crs="EPSG:3857", tile=32, stride=32))
        assert load_manifest(tmp_path / "merc").crs == "EPSG:3857"

    def test_stats_equal_numpy(self, scene: Scene, tmp_path: Path) -> None:
        prepare(_opts(scene, tmp_path / "out"))
        m = load_manifest(tmp_path / "out")
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        for name in ("rgb", "dsm", "sar"):
            with AlignedReader(inspect_raster(scene.root / f"{name}.tif"), grid) as r:
                data, valid = r.read(Window(0, 0, 96, 96))
            values = data[:, valid].astype(np.float64)
            stats = m.modality(name).stats
            assert stats is not None
            np.testing.assert_allclose(stats.mean, values.mean(axis=1), rtol=1e-6)
            np.testing.assert_allclose(stats.std, values.std(axis=1), rtol=1e-5)
            np.testing.assert_allclose(stats.p2, np.percentile(values, 2, axis=1), rtol=1e-5)
            np.testing.assert_allclose(stats.p98, np.percentile(values, 98, axis=1), rtol=1e-5)
        assert m.class_pixels == np.bincount(scene.classes.ravel(), minlength=6).tolist()

    def test_polygon_labels(self, scene: Scene, tmp_path: Path) -> None:
        write_polygons(scene.root / "poly.gpkg")
        prepare(_opts(scene, tmp_path / "out", labels="poly.gpkg", tile=48, stride=48))
        with rasterio.open(
            tmp_path / "out" / "tiles" / "train" / "scene_r00000_c00000" / "label.tif"
        ) as src:
            label = src.read(1)
        assert (
            (label[11:29, 11:29] == 1).all()
            and (label[21:29, 41:47] == 3).all()
            and label[40, 5] == 255
        )
        # the all-ignore tiles (no polygon) are skipped
        assert not (tmp_path / "out" / "tiles" / "train" / "scene_r00048_c00048").exists()

    def test_killed_then_rerun_equals_clean(self, scene: Scene, tmp_path: Path) -> None:
        prepare(_opts(scene, tmp_path / "clean"))

        def die(done: int, total: int) -> None:
            if done == 9:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            prepare(_opts(scene, tmp_path / "resumed"), progress=die)
        tiles = tmp_path / "resumed" / "tiles" / "train"
        assert (
            len(list(tiles.iterdir())) == 9 and not (tmp_path / "resumed" / "dataset.toml").exists()
        )
        (tiles / ".tmp-scene_r00064_c00064").mkdir()  # a half-written tile of the killed run
        report = prepare(_opts(scene, tmp_path / "resumed"))
        assert report.tiles_resumed == 9 and report.tiles_written == 16
        assert _digest(tmp_path / "resumed") == _digest(tmp_path / "clean")
        a = gpd.read_file(tmp_path / "clean" / "index.gpkg")
        b = gpd.read_file(tmp_path / "resumed" / "index.gpkg")
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry")) and a.geometry.equals(
            b.geometry
        )

    def test_rerun_with_other_options_needs_overwrite(self, scene: Scene, tmp_path: Path) -> None:
        prepare(_opts(scene, tmp_path / "out"))
        with pytest.raises(UsageError, match="other options; add --overwrite"):
            prepare(_opts(scene, tmp_path / "out", tile=48))
        report = prepare(_opts(scene, tmp_path / "out", tile=48, overwrite=True))
        assert (
            load_manifest(tmp_path / "out").tile_size == 48
            and report.tiles_written == report.tiles_total
        )

    def test_spatial_block_split_no_overlap(self, tmp_path: Path) -> None:
        scene = make_scene(tmp_path / "big", size=160)
        prepare(_opts(scene, tmp_path / "out", split="0.6,0.2,0.2", tile=32, stride=16))
        idx = gpd.read_file(tmp_path / "out" / "index.gpkg")
        assert set(idx.split) == {"train", "val", "test"}
        for s in ("val", "test"):
            other = idx[idx.split != s].geometry.union_all()
            assert all(g.intersection(other).area == 0 for g in idx[idx.split == s].geometry)

    def test_dry_run_writes_nothing(self, scene: Scene, tmp_path: Path) -> None:
        seen = []
        report = prepare(_opts(scene, tmp_path / "out", dry_run=True), on_plan=seen.append)
        assert seen and report.tiles_total == 25 and not (tmp_path / "out").exists()
        assert {r.role for r in report.rows} == {"rgb", "dsm", "sar", "labels"}
        assert next(r for r in report.rows if r.role == "sar").crs == "EPSG:3857"

    def test_sample_folder(self, tmp_path: Path) -> None:
        from sgma_cli.engine.sample_scene import sample

        sample(tmp_path / "s", size=256, vectors=False)
        report = prepare(PrepareOptions(src=tmp_path / "s", out=tmp_path / "d", tile=64, stride=32))
        m = load_manifest(tmp_path / "d")
        assert report.layout == "sample" and m.class_names[1] == "building" and len(m.classes) == 6
        assert (
            set(m.splits) == {"train", "val", "test"}
            and m.provenance["split"] == "by spatial blocks"
        )

    def test_sample_polygons_equal_colour_raster(self, tmp_path: Path) -> None:
        from sgma_cli.engine.sample_scene import sample

        sample(tmp_path / "s", size=128)
        prepare(
            PrepareOptions(
                src=tmp_path / "s", out=tmp_path / "a", tile=64, stride=64, split="1,0,0"
            )
        )
        prepare(
            PrepareOptions(
                src=tmp_path / "s",
                out=tmp_path / "b",
                tile=64,
                stride=64,
                split="1,0,0",
                labels="labels.gpkg",
            )
        )
        labels = sorted((tmp_path / "a").rglob("label.tif"))
        assert len(labels) == 4
        for path in labels:
            with (
                rasterio.open(path) as a,
                rasterio.open(tmp_path / "b" / path.relative_to(tmp_path / "a")) as b,
            ):
                np.testing.assert_array_equal(a.read(), b.read())


class TestPresets:
    def test_potsdam_official_split(self, tmp_path: Path) -> None:
        warnings: list[str] = []
        prepare(
            PrepareOptions(
                src=make_potsdam(tmp_path / "P"),
                out=tmp_path / "d",
                preset="potsdam",
                tile=32,
                stride=32,
            ),
            warn=warnings.append,
        )
        m = load_manifest(tmp_path / "d")
        # no official val: one of the 4 blocks of the one training scene is held out for it
        assert m.modality_names == ["rgb", "nir", "dsm"]
        assert m.splits == {"train": 3, "val": 1, "test": 4}
        assert m.provenance["split"].startswith("official + val held out: 1 of 4 spatial blocks")
        assert m.modality("nir").bands == 1 and m.modality("nir").optical
        assert any("no CRS" in w for w in warnings)  # the nDSM is taken on the ortho's grid

    def test_dfc2023_coco(self, tmp_path: Path) -> None:
        prepare(
            PrepareOptions(
                src=make_dfc2023(tmp_path / "D"), out=tmp_path / "d", preset="dfc2023", tile=64
            )
        )
        m = load_manifest(tmp_path / "d")
        assert m.class_names == ["background", "building"] and m.splits == {"train": 2, "val": 1}
        with rasterio.open(
            tmp_path / "d" / "tiles" / "train" / "P_0001_r00000_c00000" / "label.tif"
        ) as src:
            label = src.read(1)
        assert (
            (label[8:24, 8:24] == 1).all()
            and (label == 1).sum() == 256
            and (label[label != 1] == 0).all()
        )
        assert not (
            tmp_path / "d" / "tiles" / "val" / "P_0101_r00000_c00000" / "label.tif"
        ).exists()

    def test_deliver_no_crs(self, tmp_path: Path) -> None:
        warnings: list[str] = []
        prepare(
            PrepareOptions(
                src=make_deliver(tmp_path / "V"), out=tmp_path / "d", preset="deliver", tile=32
            ),
            warn=warnings.append,
        )
        m = load_manifest(tmp_path / "d")
        assert (
            m.crs is None
            and m.modality_names == ["rgb", "depth", "event", "lidar"]
            and len(m.classes) == 25
        )
        assert any("without CRS" in w for w in warnings)
        with rasterio.open(
            next((tmp_path / "d" / "tiles" / "train").iterdir()) / "label.tif"
        ) as src:
            label = src.read(1)
        assert (label[:4] == 255).all() and label[4:].max() <= 24


class TestBadInput:
    """Each problem: one error naming the file, and no output folder left behind."""

    def _fails(self, opts: PrepareOptions, err: type[Exception], match: str) -> None:
        with pytest.raises(err, match=match):
            prepare(opts)
        assert not Path(opts.out).exists()

    def test_tile_larger_than_scene(self, scene: Scene, tmp_path: Path) -> None:
        self._fails(
            _opts(scene, tmp_path / "o", tile=128),
            UsageError,
            "--tile 128 is larger than scene scene",
        )

    def test_bad_split(self, scene: Scene, tmp_path: Path) -> None:
        self._fails(_opts(scene, tmp_path / "o", split="0.5,0.2"), UsageError, "--split")

    def test_corrupt_raster(self, scene: Scene, tmp_path: Path) -> None:
        (scene.root / "sar.tif").write_bytes(b"not a tiff")
        self._fails(_opts(scene, tmp_path / "o"), RasterError, "sar.tif: not a readable raster")

    def test_no_overlap(self, scene: Scene, tmp_path: Path) -> None:
        write_raster(
            scene.root / "far.tif",
            np.ones((1, 8, 8), np.float32),
            UTM,
            rasterio.Affine(1, 0, X0 + 1e5, 0, -1, Y0),
        )
        self._fails(
            _opts(scene, tmp_path / "o", modality=(*MODS, "far=far.tif")),
            RasterError,
            "far.tif: far does not overlap",
        )

    def test_no_crs_on_one_sensor(self, scene: Scene, tmp_path: Path) -> None:
        write_raster(scene.root / "plain.tif", np.ones((1, 96, 96), np.float32), None, None)
        self._fails(
            _opts(scene, tmp_path / "o", modality=(*MODS, "plain=plain.tif")),
            RasterError,
            "plain.tif: plain has no CRS, but the reference rgb has one",
        )

    def test_unknown_label_values(self, scene: Scene, tmp_path: Path) -> None:
        self._fails(
            _opts(scene, tmp_path / "o", palette=None, labels="labels_colour.tif"),
            UsageError,
            "need a palette",
        )
        self._fails(
            _opts(scene, tmp_path / "o", palette="dfc2023", labels="labels_colour.tif"),
            RasterError,
            r"labels_colour.tif: label colours not in the palette: "
            r"#0000ff, #00ff00, #00ffff, #ffffff",
        )

    def test_vector_without_field(self, scene: Scene, tmp_path: Path) -> None:
        write_polygons(scene.root / "poly.gpkg", field="kind")
        self._fails(
            _opts(scene, tmp_path / "o", labels="poly.gpkg"),
            RasterError,
            "poly.gpkg: no class field 'class'",
        )

    def test_empty_folder(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        self._fails(PrepareOptions(src=tmp_path / "empty", out=tmp_path / "o"), UsageError, "empty")

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
    def test_not_writable(self, scene: Scene, tmp_path: Path) -> None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(UsageError, match="not writable"):
                prepare(_opts(scene, ro / "out"))
        finally:
            ro.chmod(0o700)

    def test_out_under_a_file(self, scene: Scene, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(UsageError, match="output folder is not writable"):
            prepare(_opts(scene, tmp_path / "file" / "out"))

    def test_failed_run_keeps_users_empty_folder(self, scene: Scene, tmp_path: Path) -> None:
        (tmp_path / "o").mkdir()
        with pytest.raises(UsageError):
            prepare(_opts(scene, tmp_path / "o", tile=128))
        assert (tmp_path / "o").is_dir() and not any((tmp_path / "o").iterdir())

    def test_output_is_foreign_folder(self, scene: Scene, tmp_path: Path) -> None:
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "notes.txt").write_text("mine")
        with pytest.raises(UsageError, match="not written by sgma prepare"):
            prepare(_opts(scene, tmp_path / "o"))
        assert (tmp_path / "o" / "notes.txt").read_text() == "mine"

    def test_read_error_mid_run_leaves_nothing(
        self, scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sgma_cli.data import align

        calls = {"n": 0}
        original = align.AlignedReader.read

        def flaky(self, window):  # noqa: ANN001, ANN202
            calls["n"] += 1
            if calls["n"] > 20:
                raise RasterError("cannot read pixels (simulated)", self.info.path)
            return original(self, window)

        monkeypatch.setattr(align.AlignedReader, "read", flaky)
        self._fails(_opts(scene, tmp_path / "o"), RasterError, "simulated")


class TestScenesInSeveralCRS:
    def test_footprints_reprojected_to_one_crs(self, tmp_path: Path) -> None:
        from rasterio.crs import CRS
        from rasterio.transform import from_origin

        src = tmp_path / "src"
        for name, epsg in (("a", 32633), ("b", 32632)):
            folder = src / name
            folder.mkdir(parents=True)
            cls = np.zeros((64, 64), np.uint8)
            cls[:, 32:] = 1
            rgb = np.stack([cls * 100 + 50] * 3).astype(np.uint8)
            transform = from_origin(500000, 5800000, 1.0, 1.0)
            write_raster(folder / "rgb.tif", rgb, CRS.from_epsg(epsg), transform)
            write_raster(folder / "labels.tif", cls, CRS.from_epsg(epsg), transform)
        out = tmp_path / "data"
        report = prepare(
            PrepareOptions(
                src=src, out=out, palette="potsdam", tile=32, stride=32, split="0.5,0.5,0"
            )
        )
        index = gpd.read_file(out / "index.gpkg")
        assert index.crs.to_epsg() == 32633
        assert len(index) == sum(report.splits.values()) == 8
        b = index[index["scene"] == "b"]
        assert len(b) == 4
        # scene b sits on zone 32N's central meridian (9°E): in zone 33N (15°E) that is
        # ~408 km west of a
        assert (
            b.geometry.bounds["maxx"].max()
            < index[index["scene"] == "a"].geometry.bounds["minx"].min() - 400_000
        )


def test_coco_labels_need_the_reference_grid(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match="COCO labels are pixel coordinates .* drop --resolution/--crs"
    ):
        prepare(
            PrepareOptions(
                src=make_dfc2023(tmp_path / "D"),
                out=tmp_path / "d",
                preset="dfc2023",
                tile=64,
                resolution=0.25,
            )
        )
    assert not (tmp_path / "d").exists()


class TestPapercuts:
    """Behaviour a new user ran into (issue 10): eval-only splits, the sample chain, --out."""

    def test_split_without_training_tiles(self, scene: Scene, tmp_path: Path) -> None:
        warnings: list[str] = []
        report = prepare(_opts(scene, tmp_path / "out", split="0,0,1"), warn=warnings.append)
        m = load_manifest(tmp_path / "out")
        assert m.splits == {"test": 25} and report.splits == {"test": 25}
        assert m.modality("rgb").stats is not None and m.modality("rgb").stats.std == [1.0] * 3
        assert any("no training tiles" in w for w in warnings)

    def test_training_refuses_a_dataset_without_training_tiles(
        self, scene: Scene, tmp_path: Path
    ) -> None:
        from sgma_cli.config.recipe import load_recipe
        from sgma_cli.engine.train.plan import TrainOptions, plan_training
        from sgma_cli.errors import DatasetError

        prepare(_opts(scene, tmp_path / "data", split="0,0.5,0.5", tile=32, stride=32))
        recipe = load_recipe(Path("recipes/sample.toml"))
        with pytest.raises(DatasetError, match=r"data: no training tiles .*--split 0.8,0.1,0.1"):
            plan_training(
                recipe,
                TrainOptions(data_dir=tmp_path / "data", run_dir=tmp_path / "run", device="cpu"),
            )

    def test_sample_chain_without_flags(self, tmp_path: Path) -> None:
        """`sgma sample` -> `sgma prepare` (no --tile) -> the sample recipe's training check."""
        from sgma_cli.config.recipe import load_recipe
        from sgma_cli.engine.sample_scene import sample
        from sgma_cli.engine.train.plan import TrainOptions, plan_training

        sample(tmp_path / "scene", size=512, vectors=False)
        report = prepare(PrepareOptions(src=tmp_path / "scene", out=tmp_path / "data"))
        m = load_manifest(tmp_path / "data")
        assert (report.tile, report.stride) == (128, 128) == (m.tile_size, m.stride)
        assert m.splits == {"train": 12, "val": 2, "test": 2}
        plan = plan_training(
            load_recipe(Path("recipes/sample.toml")),
            TrainOptions(data_dir=tmp_path / "data", run_dir=tmp_path / "run", device="cpu"),
        )
        assert plan.data_dir == (tmp_path / "data").resolve()

    @pytest.mark.parametrize("where", ["under_a_file", "foreign_folder"])
    def test_output_checked_before_the_plan(self, scene: Scene, tmp_path: Path, where: str) -> None:
        (tmp_path / "file").write_text("")
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "notes.txt").write_text("mine")
        out = tmp_path / "file" / "out" if where == "under_a_file" else tmp_path / "foreign"
        seen: list[object] = []
        with pytest.raises(UsageError, match="output folder is not"):
            prepare(_opts(scene, out), on_plan=seen.append)
        assert seen == []  # the plan was never made nor printed
        assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["notes.txt"]

    def test_dry_run_does_not_check_the_output(self, scene: Scene, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        report = prepare(_opts(scene, tmp_path / "file" / "out", dry_run=True))
        assert report.tiles_total == 25
