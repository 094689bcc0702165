"""`sgma predict` on the command line: outputs, the summary table, and every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sgma_cli.cli.app import app

runner = CliRunner()


def _run(*args: Any) -> Any:
    return runner.invoke(app, ["predict", *(str(a) for a in args)])


def _rewrite(path: Path, **changes: Any) -> None:
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    data = changes.pop("data", data)
    profile.update(changes, count=data.shape[0])
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


class TestPredict:
    def test_two_sensors_with_all_outputs(
        self, tiny_scene: Path, tiny_checkpoint: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out" / "map.tif"
        out.parent.mkdir()
        result = _run(
            tiny_scene,
            "-c",
            tiny_checkpoint,
            "--modalities",
            "dsm,sar",
            "--out",
            out,
            "--device",
            "cpu",
            "--robustness",
            "--confidence",
            "--vectorize",
            tmp_path / "out" / "map.gpkg",
            "--min-area",
            "1",
        )
        assert result.exit_code == 0, result.output
        for text in (
            "Predicted classes",
            "ground",
            "nodata (no sensor)",
            "MPix/s",
            "windows of 64 px",
        ):
            assert text in result.stdout, text
        assert "sensors: dsm, sar" in result.output
        assert sorted(p.name for p in out.parent.iterdir()) == [
            "map.confidence.tif",
            "map.gpkg",
            "map.robustness.tif",
            "map.tif",
        ]
        with rasterio.open(out) as src, rasterio.open(tiny_scene / "rgb.tif") as rgb:
            assert (
                src.crs == rgb.crs and src.transform == rgb.transform
            )  # checkpoint resolution on the DSM's grid
            classes = src.read(1)
        assert (classes == 255).sum() == 80 * 80  # DSM hole outside the SAR swath

    def test_compiled_writes_the_same_map(
        self,
        tiny_scene: Path,
        tiny_checkpoint: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("SGMA_COMPILE_BACKEND", "eager")  # tracing only: no C++ to build
        maps = {}
        for name, flags in (("plain", []), ("compiled", ["--compile"])):
            out = tmp_path / f"{name}.tif"
            result = _run(
                tiny_scene, "-c", tiny_checkpoint, "--out", out, "--device", "cpu", *flags
            )
            assert result.exit_code == 0, result.output
            assert ("torch.compile: backbone, fuse, head" in result.stderr) == (name == "compiled")
            with rasterio.open(out) as src:
                maps[name] = src.read(1)
        assert np.array_equal(maps["compiled"], maps["plain"])

    def test_explicit_files_and_default_out(
        self,
        tiny_scene: Path,
        tiny_checkpoint: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        result = _run(
            "-c",
            tiny_checkpoint,
            "--modality",
            f"rgb={tiny_scene / 'rgb.tif'}",
            "--window",
            "96",
            "--overlap",
            "0.5",
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / "scene_prediction.tif").is_file()


class TestBadInput:
    """Each: one line naming the problem, exit != 0, nothing written."""

    @pytest.fixture
    def out(self, tmp_path: Path) -> Path:
        (tmp_path / "o").mkdir()
        return tmp_path / "o" / "map.tif"

    def _fails(self, result: Any, out: Path, *needles: str, code: int | None = None) -> None:
        assert result.exit_code != 0, result.output
        if code is not None:
            assert result.exit_code == code, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        assert "Traceback" not in result.output
        assert not out.parent.exists() or list(out.parent.iterdir()) == []

    def test_sensor_not_in_checkpoint(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path
    ) -> None:
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-m", "rgb,nir", "-o", out),
            out,
            "'nir'",
            "rgb, dsm, sar",
            code=2,
        )
        self._fails(
            _run("-c", tiny_checkpoint, "--modality", f"nir={tiny_scene / 'rgb.tif'}", "-o", out),
            out,
            "'nir'",
        )

    def test_no_chosen_sensor_present(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path, tmp_path: Path
    ) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        self._fails(
            _run(empty, "-c", tiny_checkpoint, "-o", out), out, "empty: none of the chosen sensors"
        )
        (tiny_scene / "sar.tif").unlink()
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-m", "sar", "-o", out),
            out,
            "none of the chosen sensors (sar)",
        )

    def test_sensors_without_overlap(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path
    ) -> None:
        _rewrite(tiny_scene / "dsm.tif", transform=from_origin(100000, 100000, 1.0, 1.0))
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-o", out), out, "dsm.tif", "does not overlap"
        )

    def test_raster_without_crs(self, tiny_scene: Path, tiny_checkpoint: Path, out: Path) -> None:
        _rewrite(tiny_scene / "dsm.tif", crs=None)
        self._fails(_run(tiny_scene, "-c", tiny_checkpoint, "-o", out), out, "dsm.tif", "no CRS")

    def test_band_count(self, tiny_scene: Path, tiny_checkpoint: Path, out: Path) -> None:
        _rewrite(tiny_scene / "rgb.tif", data=np.zeros((4, 160, 160), np.uint8))
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-o", out), out, "rgb.tif", "4 band(s)", "has 3"
        )

    def test_unreadable_checkpoint(self, tiny_scene: Path, out: Path, tmp_path: Path) -> None:
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00garbage")
        self._fails(
            _run(tiny_scene, "-c", bad, "-o", out), out, "bad.pt", "not a readable checkpoint"
        )
        self._fails(
            _run(tiny_scene, "-c", tmp_path / "none.pt", "-o", out), out, "checkpoint not found"
        )

    def test_output_not_writable(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path, tmp_path: Path
    ) -> None:
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-o", tmp_path / "nope" / "map.tif"),
            out,
            "output folder does not exist",
        )
        other = tmp_path / "other"  # not a .tif: a region folder, but one holding other files
        other.mkdir()
        (other / "notes.txt").write_text("mine")
        self._fails(_run(tiny_scene, "-c", tiny_checkpoint, "-o", other), out, "and no region run")
        assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
        self._fails(
            _run(
                tiny_scene,
                "-c",
                tiny_checkpoint,
                "-o",
                out,
                "--vectorize",
                tmp_path / "nope" / "v.gpkg",
            ),
            out,
            "output folder does not exist",
        )

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--window", "100"], "multiple of 32"),
            (["--overlap", "0.95"], "--overlap"),
            (["--batch-size", "0"], "--batch-size"),
            (["--gpus", "2", "--device", "cpu"], "--nproc"),
            (["--extent", "everything"], "--extent"),
            (["--resolution", "fine"], "--resolution"),
            (["--modality", "rgb"], "NAME=PATH"),
        ],
    )
    def test_bad_options(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path, args: list[str], needle: str
    ) -> None:
        self._fails(_run(tiny_scene, "-c", tiny_checkpoint, "-o", out, *args), out, needle, code=2)

    def test_more_gpus_than_present(
        self, tiny_scene: Path, tiny_checkpoint: Path, out: Path
    ) -> None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("needs a machine without GPUs")
        self._fails(
            _run(tiny_scene, "-c", tiny_checkpoint, "-o", out, "--gpus", "2"),
            out,
            "--gpus 2",
            "0 GPU",
        )


class TestSources:
    """Tiles read as one raster, URLs and STAC give the map of the same data in single files."""

    @staticmethod
    def _maps(checkpoint: Path, out: Path, *args: Any) -> tuple[np.ndarray, np.ndarray, str]:
        out.parent.mkdir(parents=True, exist_ok=True)
        result = _run(*args, "-c", checkpoint, "--device", "cpu", "-o", out, "--probabilities",
                      "--window", "96")  # fmt: skip
        assert result.exit_code == 0, result.output
        with (
            rasterio.open(out) as classes,
            rasterio.open(out.with_name(f"{out.stem}.probabilities.tif")) as probs,
        ):
            return classes.read(), probs.read(), result.output

    def test_mosaics_urls_and_stac_give_the_map_of_the_merged_files(self, tmp_path: Path) -> None:
        from tests.tiled_region import (
            make_textured_checkpoint,
            make_tiled_region,
            serve,
            write_stac_items,
        )

        # the fixture region at 96 px (one 96 px window): the same layout, a quarter the compute
        region = make_tiled_region(tmp_path / "region", size=96)
        ck = make_textured_checkpoint(tmp_path / "textured.pt")
        with serve(region.root) as range_server:
            self._compare(region, ck, range_server, write_stac_items, tmp_path)

    def _compare(
        self, region: Any, ck: Path, range_server: Any, write_stac_items: Any, tmp_path: Path
    ) -> None:
        classes, probs, _ = self._maps(ck, tmp_path / "merged" / "map.tif", region.merged)
        # the scaled classifier makes the map follow its inputs: +3 on 10x10 RGB pixels, or
        # +0.5 m on 2x2 DSM pixels, changes it (measured), so equality below means something
        assert len(np.unique(probs)) > 10

        def same(name: str, *args: Any) -> str:
            c, p, output = self._maps(ck, tmp_path / name / "map.tif", *args)
            np.testing.assert_array_equal(c, classes)
            np.testing.assert_array_equal(p, probs)
            return output

        sar = f"sar={region.merged / 'sar.tif'}"
        output = same(
            "mosaic",
            "--modality",
            f"rgb={region.root}/tiles/rgb/*.tif",
            "--modality",
            f"dsm={region.dsm_dir}",
            "--modality",
            sar,
        )
        assert "rgb: " in output and "tiles/rgb/*.tif (9 files)" in output
        assert "(3 files)" in output
        urls = tmp_path / "rgb_urls.txt"
        urls.write_text("\n".join(range_server.url(p) for p in region.rgb_tiles))
        range_server.reset()
        same(
            "http",
            "--modality",
            f"rgb={urls}",
            "--modality",
            f"dsm={range_server.url(region.merged / 'dsm.tif')}",
            "--modality",
            f"sar={range_server.url(region.merged / 'sar.tif')}",
        )
        assert range_server.ranged > 0 and range_server.sent["rgb_r0c0.tif"] > 0
        # STAC over http (its relative hrefs read over http too), then from the file
        items = write_stac_items(region.root / "items.json", region.rgb_tiles)
        output = same("stac", "--stac", range_server.url(items), "--asset", "rgb=visual",
                      "--modality", f"dsm={region.dsm_dir}", "--modality", sar)  # fmt: skip
        assert "stac: 9 item(s)" in output and "rgb_r2c2" in output
        assert "2024-06-09T10:30:00+00:00" in output
        same("stac_local", "--stac", items, "--asset", "rgb=visual",
             "--modality", f"dsm={region.dsm_dir}", "--modality", sar)  # fmt: skip


class TestSourceErrors:
    """Bad sources: one line naming the source, exit != 0, nothing written."""

    _fails = TestBadInput._fails

    @pytest.fixture
    def out(self, tmp_path: Path) -> Path:
        (tmp_path / "o").mkdir()
        return tmp_path / "o" / "map.tif"

    def test_url_not_found(
        self, tiled_region: Any, range_server: Any, tiny_checkpoint: Path, out: Path
    ) -> None:
        url = range_server.url("tiles/rgb/missing.tif")
        result = _run(tiled_region.merged, "-c", tiny_checkpoint, "-o", out, "--device", "cpu",
                      "--modality", f"rgb={url}")  # fmt: skip
        self._fails(result, out, url, "HTTP 404")

    def test_url_that_stalls(
        self, tiled_region: Any, tiny_checkpoint: Path, out: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from tests.tiled_region import serve

        monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
        monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
        with serve(tiled_region.root, stall=4) as server:
            url = server.url(tiled_region.merged / "dsm.tif")
            result = _run(tiled_region.merged, "-c", tiny_checkpoint, "-o", out, "--device",
                          "cpu", "--modality", f"dsm={url}")  # fmt: skip
        self._fails(result, out, url, "timed out")

    def test_stac_item_without_the_asset(
        self, tiled_region: Any, tiny_checkpoint: Path, out: Path
    ) -> None:
        from tests.tiled_region import write_stac_items

        items = write_stac_items(
            tiled_region.root / "items.json", tiled_region.rgb_tiles, drop={"rgb_r0c2": "visual"}
        )
        result = _run(tiled_region.merged, "-c", tiny_checkpoint, "-o", out, "--stac", items,
                      "--asset", "rgb=visual")  # fmt: skip
        self._fails(result, out, str(items), "'rgb_r0c2'", "'visual'", "thumbnail")

    def test_tiles_with_different_band_counts(
        self, tiled_region: Any, tiny_checkpoint: Path, out: Path
    ) -> None:
        with rasterio.open(tiled_region.rgb_tiles[4]) as src:
            profile, data = src.profile, src.read()
        tiled_region.rgb_tiles[4].unlink()
        profile.update(count=4)
        with rasterio.open(tiled_region.rgb_tiles[4], "w", **profile) as dst:
            dst.write(np.concatenate([data, data[:1]]))
        result = _run(tiled_region.merged, "-c", tiny_checkpoint, "-o", out, "--modality",
                      f"rgb={tiled_region.rgb_dir}")  # fmt: skip
        self._fails(result, out, "rgb_r1c1.tif", "rgb_r0c0.tif", "has 4 band(s) but")

    def test_asset_without_stac(self, tiled_region: Any, tiny_checkpoint: Path, out: Path) -> None:
        result = _run(tiled_region.merged, "-c", tiny_checkpoint, "-o", out, "--asset", "rgb=x")
        self._fails(result, out, "--stac", code=2)


@pytest.mark.slow  # starts worker processes (~10 s on 2 cores)
def test_worker_processes_read_remote_mosaics_themselves(tmp_path: Path) -> None:
    """--nproc 2 over a list of URLs: each worker opens the mosaic (its VRT travels as text)."""
    from tests.tiled_region import make_textured_checkpoint, make_tiled_region, serve

    region = make_tiled_region(tmp_path / "region", size=96)
    ck = make_textured_checkpoint(tmp_path / "textured.pt")
    maps = []
    with serve(region.root) as server:
        urls = tmp_path / "rgb_urls.txt"
        urls.write_text("\n".join(server.url(p) for p in region.rgb_tiles))
        for nproc in ("1", "2"):
            out = tmp_path / f"map{nproc}.tif"
            result = _run("-c", ck, "--device", "cpu", "--nproc", nproc, "--window", "64", "-o",
                          out, "--modality", f"rgb={urls}", "--modality",
                          f"dsm={region.dsm_dir}")  # fmt: skip
            assert result.exit_code == 0, result.output
            with rasterio.open(out) as src:
                maps.append(src.read())
    np.testing.assert_array_equal(maps[0], maps[1])
