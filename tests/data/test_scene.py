"""Tests for sgma_cli.data.scene: finding sensor files, the reference grid, aligned window reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from sgma_cli.data.align import AlignedReader
from sgma_cli.data.scene import find_sensor_files, open_scene
from sgma_cli.errors import RasterError, UsageError
from tests.conftest import TINY_SCENE_ORIGIN, make_tiny_scene

NAMES = ["rgb", "dsm", "sar"]
BANDS = {"rgb": 3, "dsm": 1, "sar": 1}


def _rewrite(path: Path, **changes: object) -> None:
    """Rewrite a GeoTIFF with some profile entries (or data) changed."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    data = changes.pop("data", data)  # type: ignore[assignment]
    profile.update(changes, count=data.shape[0])
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


class TestFindSensorFiles:
    def test_folder_case_and_explicit(self, tiny_scene: Path, tmp_path: Path) -> None:
        (tiny_scene / "rgb.tif").rename(tiny_scene / "RGB.TIF")
        other = tmp_path / "elsewhere.tif"
        shutil.copy(tiny_scene / "sar.tif", other)
        files = find_sensor_files(tiny_scene, NAMES, {"sar": other})
        assert files == {"rgb": tiny_scene / "RGB.TIF", "dsm": tiny_scene / "dsm.tif", "sar": other}
        assert list(files) == NAMES  # checkpoint order

    def test_sample_marker_names_files(self, tiny_scene: Path) -> None:
        (tiny_scene / "dsm.tif").rename(tiny_scene / "height.tif")
        (tiny_scene / "sample.json").write_text(json.dumps({"modalities": {"dsm": "height.tif"}}))
        assert find_sensor_files(tiny_scene, NAMES)["dsm"] == tiny_scene / "height.tif"

    def test_errors(self, tiny_scene: Path, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="'nir' is not in the checkpoint"):
            find_sensor_files(tiny_scene, NAMES, {"nir": tiny_scene / "rgb.tif"})
        with pytest.raises(RasterError, match="scene folder not found"):
            find_sensor_files(tmp_path / "nope", NAMES)
        with pytest.raises(RasterError, match="not found"):
            find_sensor_files(None, NAMES, {"sar": tmp_path / "missing.tif"})


class TestOpenScene:
    def test_reference_is_finest_sensor(self, tiny_scene: Path) -> None:
        scene = open_scene(find_sensor_files(tiny_scene, NAMES), BANDS)
        assert scene.reference == "rgb" and scene.names == NAMES
        with rasterio.open(tiny_scene / "rgb.tif") as src:
            assert scene.grid.crs == src.crs and scene.grid.transform == src.transform
            assert (scene.grid.width, scene.grid.height) == (src.width, src.height)

    def test_checkpoint_resolution_vs_native(self, tiny_scene: Path) -> None:
        files = find_sensor_files(tiny_scene, NAMES)
        native = open_scene(files, BANDS, modalities=["dsm", "sar"])
        assert native.reference == "dsm" and native.grid.resolution == (1.0, 1.0)
        assert (native.grid.width, native.grid.height) == (80, 80)
        at_ckpt = open_scene(
            files, BANDS, modalities=["dsm", "sar"], resolution=0.5, resolution_crs="EPSG:32633"
        )
        assert at_ckpt.grid.resolution == (0.5, 0.5) and (
            at_ckpt.grid.width,
            at_ckpt.grid.height,
        ) == (160, 160)
        assert (
            at_ckpt.grid.transform.c == TINY_SCENE_ORIGIN[0]
            and at_ckpt.grid.transform.f == TINY_SCENE_ORIGIN[1]
        )
        geographic = open_scene(
            files, BANDS, modalities=["dsm"], resolution=0.5, resolution_crs="EPSG:4326"
        )
        assert geographic.grid.resolution == (1.0, 1.0)  # degrees vs metres: keep the sensor's own

    def test_union_extent_contains_reference(self, tiny_scene: Path) -> None:
        files = find_sensor_files(tiny_scene, NAMES)
        ref = open_scene(files, BANDS).grid
        union = open_scene(files, BANDS, extent="union").grid
        assert union.bounds[0] <= ref.bounds[0] and union.bounds[2] >= ref.bounds[2]
        assert union.width * union.height > ref.width * ref.height
        assert (union.transform.c - ref.transform.c) / 0.5 == pytest.approx(
            round((union.transform.c - ref.transform.c) / 0.5)
        )

    def test_bad_inputs(self, tiny_scene: Path, tmp_path: Path) -> None:
        files = find_sensor_files(tiny_scene, NAMES)
        with pytest.raises(UsageError, match="'nir' is not in the checkpoint"):
            open_scene(files, BANDS, modalities=["rgb", "nir"])
        with pytest.raises(RasterError, match="none of the chosen sensors"):
            open_scene({"rgb": files["rgb"]}, BANDS, modalities=["sar"])
        _rewrite(tiny_scene / "dsm.tif", data=np.zeros((2, 80, 80), np.float32))
        with pytest.raises(
            RasterError, match=r"dsm.tif: has 2 band\(s\) but the checkpoint's 'dsm' has 1"
        ):
            open_scene(files, BANDS)
        far = make_tiny_scene(tmp_path / "far", size=64)
        _rewrite(far / "sar.tif", transform=from_origin(0, 0, 2.0, 2.0))
        with pytest.raises(RasterError, match="sar.tif: sar does not overlap"):
            open_scene({"rgb": files["rgb"], "sar": far / "sar.tif"}, BANDS)
        _rewrite(far / "dsm.tif", crs=None)
        with pytest.raises(RasterError, match="dsm.tif: has no CRS"):
            open_scene({"rgb": files["rgb"], "dsm": far / "dsm.tif"}, BANDS)


class TestSceneReader:
    def test_aligned_reads_and_availability(self, tiny_scene: Path) -> None:
        scene = open_scene(find_sensor_files(tiny_scene, NAMES), BANDS)
        with rasterio.open(tiny_scene / "rgb.tif") as src:
            rgb = src.read().astype(np.float32)
        with scene.reader() as reader:
            arrays, valid = reader.read(0, 0, 160, 160)
        np.testing.assert_array_equal(arrays["rgb"], rgb)  # the reference sensor, read as is
        assert valid["rgb"].all()
        assert arrays["dsm"].dtype == np.float32 and arrays["dsm"].shape == (1, 160, 160)
        assert valid["dsm"][:70, :].all() and not valid["dsm"][90:, 90:].any()  # the hole
        assert (
            valid["sar"][5:-5, 5:70].all() and not valid["sar"][:, 90:].any()
        )  # swath ends mid-scene
        assert np.isnan(arrays["sar"][:, :, 90:]).all()
        # DSM at 1 m on the 0.5 m grid: bilinear values stay within the data range
        assert np.nanmin(arrays["dsm"]) > -5 and np.nanmax(arrays["dsm"]) < 20

    def test_window_past_the_edge_is_padding(self, tiny_scene: Path) -> None:
        scene = open_scene(find_sensor_files(tiny_scene, NAMES), BANDS, modalities=["rgb"])
        with scene.reader() as reader:
            arrays, valid = reader.read(128, 128, 64, 64)
        assert (
            valid["rgb"][:32, :32].all()
            and not valid["rgb"][32:].any()
            and not valid["rgb"][:, 32:].any()
        )
        assert np.isnan(arrays["rgb"][:, 40:, 40:]).all()

    def test_sensor_on_the_grid_lattice_is_read_directly(
        self, tiny_scene: Path, tmp_path: Path
    ) -> None:
        """A DSM at the RGB's 0.5 m over a shifted extent: no warp, the same pixels."""
        with rasterio.open(tiny_scene / "dsm.tif") as src:
            profile = src.profile
        x0, y0 = TINY_SCENE_ORIGIN
        dsm = np.arange(100 * 120, dtype=np.float32).reshape(1, 100, 120)
        dsm[0, 40:44, 50:55] = -9999
        profile.update(
            width=120, height=100, transform=from_origin(x0 + 0.5 * 70, y0 - 0.5 * 30, 0.5, 0.5)
        )
        with rasterio.open(tmp_path / "dsm.tif", "w", **profile) as dst:
            dst.write(dsm)
        files = {"rgb": tiny_scene / "rgb.tif", "dsm": tmp_path / "dsm.tif"}
        scene = open_scene(files, BANDS)
        dsm_sensor = scene.sensors[1]
        with scene.reader() as reader:
            arrays, valid = reader.read(-16, 64, 128, 128)  # past the top and the right
            assert reader._readers["dsm"].direct and reader._readers["rgb"].direct
        with AlignedReader(dsm_sensor.info, scene.grid, force_warp=True) as warped:
            ref, ref_ok = warped.read(Window(64, 0, 96, 112))
        np.testing.assert_array_equal(arrays["dsm"][:, 16:, :96], ref)
        np.testing.assert_array_equal(valid["dsm"][16:, :96], ref_ok)
        assert not valid["dsm"][:16].any() and not valid["dsm"][:, 96:].any()  # padding
        assert arrays["dsm"][0, 16 + 30, 70 - 64] == 0.0  # the DSM's first pixel
        assert not valid["dsm"][16 + 70 : 16 + 74, 120 - 64 : 125 - 64].any()  # its hole
        assert valid["dsm"][16 + 30 :, 6:96].sum() == 82 * 90 - 20
