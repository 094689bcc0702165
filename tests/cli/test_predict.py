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
        self._fails(_run(tiny_scene, "-c", tiny_checkpoint, "-o", out.parent), out, "is a folder")
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
