"""Sensor sources: files, tiles read as one raster (glob, folder, list, VRT), URLs over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from sgma_cli.data.align import AlignedReader
from sgma_cli.data.raster import inspect_raster
from sgma_cli.data.sources import (
    RasterSource,
    gdal_path_of,
    is_url,
    remote_error,
    resolve_source,
)
from sgma_cli.errors import RasterError
from tests.tiled_region import RangeServer, TiledRegion, serve


def _read_all(source: Path | RasterSource) -> tuple[np.ndarray, np.ndarray]:
    info = inspect_raster(source)
    with AlignedReader(info, info.grid) as reader:
        return reader.read(Window(0, 0, info.width, info.height))


def _same_pixels(a: Path | RasterSource, b: Path | RasterSource) -> None:
    (da, va), (db, vb) = _read_all(a), _read_all(b)
    assert inspect_raster(a).grid == inspect_raster(b).grid
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(da, db)  # NaN where unseen, in both


class TestMosaics:
    def test_glob_folder_list_and_vrt_read_like_the_merged_files(
        self, tiled_region: TiledRegion
    ) -> None:
        root = tiled_region.root
        listing = root / "rgb.txt"
        listing.write_text(
            "# the RGB tiles\n" + "\n".join(f"tiles/rgb/{p.name}" for p in tiled_region.rgb_tiles)
        )
        glob_source = resolve_source("tiles/rgb/*.tif", root)
        assert glob_source.label == "tiles/rgb/*.tif (9 files)"
        assert glob_source.is_mosaic and len(glob_source.footprints) == 9
        vrt = root / "rgb.vrt"
        vrt.write_text(glob_source.gdal_path)
        for spec in ("tiles/rgb/*.tif", "tiles/rgb", "rgb.txt", "rgb.vrt"):
            _same_pixels(resolve_source(spec, root), tiled_region.merged / "rgb.tif")
        assert resolve_source("rgb.txt", root).label == "rgb.txt (9 files)"

    def test_dsm_tiling_with_a_gap_reads_as_unseen_there(self, tiled_region: TiledRegion) -> None:
        source = resolve_source(str(tiled_region.dsm_dir))
        _same_pixels(source, tiled_region.merged / "dsm.tif")
        data, valid = _read_all(source)
        h, w = valid.shape
        assert not valid[: h // 2, w // 2 :].any()  # the missing top-right tile
        assert np.isnan(data[:, : h // 2, w // 2 :]).all()
        assert valid[: h // 2, : w // 2].all()

    def test_a_read_opens_only_the_tiles_it_intersects(self, tiled_region: TiledRegion) -> None:
        source = resolve_source(str(tiled_region.rgb_dir))
        info = inspect_raster(source)
        tiled_region.rgb_tiles[0].unlink()  # the top-left tile is gone after planning
        with AlignedReader(info, info.grid) as reader:
            data, valid = reader.read(Window(100, 100, 40, 40))  # inside tile r2c2 only
            assert valid.all()
            with rasterio.open(tiled_region.merged / "rgb.tif") as merged:
                expected = merged.read(window=Window(100, 100, 40, 40)).astype(np.float32)
            np.testing.assert_array_equal(data, expected)
            with pytest.raises(RasterError, match="cannot read pixels"):
                reader.read(Window(0, 0, 20, 20))

    def test_tiles_of_another_resolution_are_sampled_at_the_finest(self, tmp_path: Path) -> None:
        kw = {"driver": "GTiff", "count": 1, "dtype": "float32", "crs": "EPSG:32633"}
        with rasterio.open(
            tmp_path / "a.tif", "w", width=4, height=4, transform=from_origin(0, 4, 1, 1), **kw
        ) as dst:
            dst.write(np.full((1, 4, 4), 1, np.float32))
        with rasterio.open(
            tmp_path / "b.tif", "w", width=2, height=2, transform=from_origin(4, 4, 2, 2), **kw
        ) as dst:
            dst.write(np.arange(4, dtype=np.float32).reshape(1, 2, 2) + 10)
        data, valid = _read_all(resolve_source(str(tmp_path)))
        assert data.shape == (1, 4, 8) and valid.all()
        np.testing.assert_array_equal(
            data[0, :, 4:], [[10, 10, 11, 11]] * 2 + [[12, 12, 13, 13]] * 2
        )

    def test_tiles_with_different_band_counts_are_one_line(self, tiled_region: TiledRegion) -> None:
        odd = tiled_region.rgb_dir / "rgb_r9c9.tif"
        with rasterio.open(tiled_region.rgb_tiles[0]) as src:
            profile, data = src.profile, src.read([1])
        profile.update(count=1)
        with rasterio.open(odd, "w", **profile) as dst:
            dst.write(data)
        with pytest.raises(RasterError) as err:
            resolve_source(str(tiled_region.rgb_dir))
        text = str(err.value)
        assert "\n" not in text and "rgb_r9c9.tif" in text and "rgb_r0c0.tif" in text
        assert "has 1 band(s) but" in text and "has 3" in text

    def test_tiles_in_different_crs_are_one_line(self, tiled_region: TiledRegion) -> None:
        mixed = [str(tiled_region.rgb_tiles[0]), str(tiled_region.dsm_tiles[0])]
        listing = tiled_region.root / "mixed.txt"
        listing.write_text("\n".join(mixed))
        with pytest.raises(RasterError, match="must share their (band count|CRS)"):
            resolve_source(listing)

    def test_nothing_there_is_one_line(self, tmp_path: Path) -> None:
        with pytest.raises(RasterError, match="no file matches"):
            resolve_source("nowhere/*.tif", tmp_path)
        with pytest.raises(RasterError, match="file not found"):
            resolve_source("missing.tif", tmp_path)
        (tmp_path / "empty").mkdir()
        with pytest.raises(RasterError, match="holds no raster"):
            resolve_source("empty", tmp_path)
        (tmp_path / "list.txt").write_text("# only a comment\n")
        with pytest.raises(RasterError, match="names no raster"):
            resolve_source("list.txt", tmp_path)

    def test_a_source_travels_to_other_processes(self, tiled_region: TiledRegion) -> None:
        import pickle

        source = resolve_source(str(tiled_region.rgb_dir))
        again = pickle.loads(pickle.dumps(source))
        assert again == source
        assert inspect_raster(again).width == 160


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "gdal"),
        [
            ("https://host/a/b.tif", "/vsicurl/https://host/a/b.tif"),
            ("http://host/b.tif", "/vsicurl/http://host/b.tif"),
            ("s3://bucket/key/c.tif", "/vsis3/bucket/key/c.tif"),
            ("gs://bucket/d.tif", "/vsigs/bucket/d.tif"),
            ("/data/e.tif", "/data/e.tif"),
        ],
    )
    def test_schemes_map_to_gdal_file_systems(self, url: str, gdal: str) -> None:
        assert gdal_path_of(url) == gdal
        assert is_url(url) == (url != "/data/e.tif")

    @pytest.mark.parametrize(
        ("gdal_says", "line"),
        [
            ("HTTP response code: 404", "cannot open (not found (HTTP 404))"),
            ("Could not resolve host: tiles.example", "cannot open (unknown host (DNS))"),
            (
                "HTTP response code: 403",
                "cannot open (access denied (HTTP 403); check the credentials in the environment)",
            ),
            (
                "AWS_SECRET_ACCESS_KEY and AWS_NO_SIGN_REQUEST configuration options not defined",
                "cannot open (no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or "
                "AWS_NO_SIGN_REQUEST=YES for a public bucket)",
            ),
            (
                "Operation timed out after 1000 milliseconds",
                "cannot open (timed out (GDAL_HTTP_TIMEOUT))",
            ),
            ("tile_404.tif: Operation timed out", "cannot open (timed out (GDAL_HTTP_TIMEOUT))"),
            (
                "HTTP error code: 401",
                "cannot open (access denied (HTTP 401); check the credentials in the environment)",
            ),
        ],
    )
    def test_remote_failures_read_as_one_line(self, gdal_says: str, line: str) -> None:
        err = remote_error(OSError(f"/vsis3/b/k.tif: {gdal_says}"), "s3://b/k.tif")
        assert str(err) == f"s3://b/k.tif: {line}"

    def test_http_reads_equal_local_reads(
        self, tiled_region: TiledRegion, range_server: RangeServer
    ) -> None:
        url = range_server.url(tiled_region.merged / "dsm.tif")
        source = resolve_source(url)
        assert source.remote and source.label == url
        _same_pixels(source, tiled_region.merged / "dsm.tif")
        tiles = tiled_region.root / "dsm_urls.txt"
        tiles.write_text("\n".join(range_server.url(p) for p in tiled_region.dsm_tiles))
        _same_pixels(resolve_source(tiles), tiled_region.merged / "dsm.tif")  # mosaic of URLs

    def test_a_small_window_fetches_a_small_part_of_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "big.tif"
        rng = np.random.default_rng(0)
        with rasterio.open(
            path,
            "w",
            driver="COG",
            width=512,
            height=512,
            count=3,
            dtype="uint8",
            crs="EPSG:32633",
            transform=from_origin(0, 512, 1, 1),
            blocksize=64,
            compress="NONE",
            overviews="NONE",
        ) as dst:
            dst.write(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8))
        size = path.stat().st_size
        with serve(tmp_path) as server:
            info = inspect_raster(resolve_source(server.url(path)))
            with AlignedReader(info, info.grid) as reader:
                data, _ = reader.read(Window(128, 128, 64, 64))
            with rasterio.open(path) as src:
                expected = src.read(window=Window(128, 128, 64, 64)).astype(np.float32)
            np.testing.assert_array_equal(data, expected)
            assert server.ranged > 0  # answered with 206 Partial Content
            assert server.sent["big.tif"] < size / 4, (server.sent, size)

    def test_404_is_one_line_naming_the_url(self, range_server: RangeServer) -> None:
        url = range_server.url("tiles/rgb/nothing.tif")
        with pytest.raises(RasterError) as err:
            inspect_raster(resolve_source(url))
        assert str(err.value) == f"{url}: cannot open (not found (HTTP 404))"

    def test_a_refused_connection_is_one_line(self) -> None:
        import socket

        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/a.tif"
        with pytest.raises(RasterError) as err:
            inspect_raster(resolve_source(url))
        assert str(err.value).startswith(f"{url}: cannot open (") and "\n" not in str(err.value)

    @pytest.mark.slow  # 1 s of waiting; tests/cli/test_predict.py checks the same in make test
    def test_a_stalled_server_times_out_in_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
        monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
        (tmp_path / "a.tif").write_bytes(b"x" * 100)
        with serve(tmp_path, stall=4) as server:
            url = server.url("a.tif")
            start = time.perf_counter()
            with pytest.raises(RasterError) as err:
                inspect_raster(resolve_source(url))
            assert time.perf_counter() - start < 3.5
        assert str(err.value) == f"{url}: cannot open (timed out (GDAL_HTTP_TIMEOUT))"
