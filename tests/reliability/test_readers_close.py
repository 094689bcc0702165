"""Readers opened before a constructor or a later open fails are closed, not leaked.

``AlignedReader`` opens its raster, then builds a ``WarpedVRT``; ``prepare`` opens one
reader per sensor and a label reader per scene; ``SceneReader`` opens its sensors lazily.
A failure in any later step must close what was already open (a long ``predict`` or a
``prepare`` over hundreds of scenes would otherwise run out of file handles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasterio.errors import WarpedVRTError

import sgma_cli.data.align as align
import sgma_cli.engine.prepare as prepare_mod
from sgma_cli.data.align import AlignedReader, reference_grid
from sgma_cli.data.raster import inspect_raster
from sgma_cli.data.scene import Scene, SceneReader, SceneSensor
from sgma_cli.engine.prepare import prepare
from tests.reliability.conftest import Prepared


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every dataset ``AlignedReader`` opens, in order."""
    seen: list[Any] = []
    real = align.open_raster

    def recording(path: Path) -> Any:
        seen.append(real(path))
        return seen[-1]

    monkeypatch.setattr(align, "open_raster", recording)
    return seen


def _vrt_failing_for(name: str) -> Any:
    """A ``WarpedVRT`` that fails for the raster called ``name`` (others are warped)."""
    real = align.WarpedVRT

    def vrt(src: Any, *args: object, **kwargs: object) -> Any:
        if Path(src.name).name == name:
            raise WarpedVRTError("cannot build the warped view")
        return real(src, *args, **kwargs)

    return vrt


class TestAlignedReader:
    def test_closes_its_file_when_the_warp_fails(
        self, prepared: Prepared, opened: list[Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        grid = reference_grid(inspect_raster(prepared.src / "rgb.tif"))
        sar = inspect_raster(prepared.src / "sar.tif")  # EPSG:3857: read through a WarpedVRT
        monkeypatch.setattr(align, "WarpedVRT", _vrt_failing_for("sar.tif"))
        with pytest.raises(WarpedVRTError):
            AlignedReader(sar, grid)
        assert len(opened) == 1 and opened[0].closed


class TestPrepareReaders:
    def test_a_failing_sensor_closes_the_sensors_opened_before(
        self, prepared: Prepared, opened: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setattr(align, "WarpedVRT", _vrt_failing_for("sar.tif"))  # the third sensor
        with pytest.raises(WarpedVRTError):
            prepare(prepared.options(tmp_path / "data"))
        assert [Path(d.name).name for d in opened] == ["rgb.tif", "dsm.tif", "sar.tif"]
        assert all(d.closed for d in opened)

    def test_a_failing_label_reader_closes_the_sensors(
        self, prepared: Prepared, opened: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        def broken(*args: object, **kwargs: object) -> None:
            raise OSError("labels vanished")

        monkeypatch.setattr(prepare_mod, "LabelReader", broken)
        with pytest.raises(OSError, match="labels vanished"):
            prepare(prepared.options(tmp_path / "data"))
        assert len(opened) == 3 and all(d.closed for d in opened)
        assert not (tmp_path / "data").exists()


class TestSceneReader:
    def test_a_failing_sensor_leaves_nothing_open(
        self, prepared: Prepared, opened: list[Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        infos = {n: inspect_raster(prepared.src / f"{n}.tif") for n in ("rgb", "dsm", "sar")}
        scene = Scene(
            [SceneSensor(n, i.path, i) for n, i in infos.items()],
            reference_grid(infos["rgb"]),
            "rgb",
        )
        monkeypatch.setattr(align, "WarpedVRT", _vrt_failing_for("sar.tif"))
        with pytest.raises(WarpedVRTError), SceneReader(scene) as reader:
            reader.read(0, 0, 16, 16)
        assert [Path(d.name).name for d in opened] == ["rgb.tif", "dsm.tif", "sar.tif"]
        assert all(d.closed for d in opened)
