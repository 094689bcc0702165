"""Tests for sgma_cli.data.labels: colour/index rasters, polygons, COCO, unknown values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from sgma_cli.data.align import reference_grid
from sgma_cli.data.labels import (
    LabelReader,
    LabelSource,
    label_source_for,
    parse_ignore,
    resolve_classes,
    scan_values,
)
from sgma_cli.data.palettes import DFC2023, POTSDAM
from sgma_cli.data.raster import inspect_raster
from sgma_cli.errors import RasterError, UsageError

from .conftest import MERC, UTM, X0, Y0, Scene, write_polygons, write_raster


def _reader(
    path: Path, grid_from: Path, palette=POTSDAM, ignore=(), field: str = "class"
) -> LabelReader:  # noqa: ANN001
    source = label_source_for(path, field)
    kind, values, _ = scan_values(source)
    mapping = resolve_classes(
        kind, values, palette, parse_ignore(list(ignore), kind == "colour"), path
    )
    return LabelReader(source, reference_grid(inspect_raster(grid_from)), mapping, kind)


class TestRasterLabels:
    @pytest.mark.parametrize("name", ["labels_colour.tif", "labels_index.tif"])
    def test_roundtrip(self, scene: Scene, name: str) -> None:
        reader = _reader(scene.root / name, scene.root / "rgb.tif")
        np.testing.assert_array_equal(reader.read(Window(0, 0, 96, 96)), scene.classes)
        np.testing.assert_array_equal(
            reader.read(Window(10, 20, 32, 32)), scene.classes[20:52, 10:42]
        )
        reader.close()

    def test_unknown_colours_named(self, scene: Scene, tmp_path: Path) -> None:
        arr = np.zeros((3, 8, 8), np.uint8)
        arr[:, 0, 0] = (255, 0, 255)
        path = write_raster(tmp_path / "lab.tif", arr, UTM, scene_transform())
        with pytest.raises(
            RasterError, match=r"lab.tif: label colours not in the palette: #000000, #ff00ff"
        ):
            _reader(path, scene.root / "rgb.tif")

    def test_ignore_maps_to_255(self, scene: Scene, tmp_path: Path) -> None:
        arr = np.zeros((3, 8, 8), np.uint8)
        arr[:, :4] = 255
        path = write_raster(tmp_path / "lab.tif", arr, UTM, scene_transform())
        reader = _reader(path, scene.root / "rgb.tif", ignore=["#000000"])
        out = reader.read(Window(0, 0, 8, 8))
        assert (out[:4] == 0).all() and (out[4:] == 255).all()

    def test_unknown_index_values(self, scene: Scene, tmp_path: Path) -> None:
        path = write_raster(
            tmp_path / "idx.tif", np.array([[[0, 7], [9, 1]]], np.uint8), UTM, scene_transform()
        )
        with pytest.raises(RasterError, match=r"idx.tif: label values not in the palette: 7, 9"):
            _reader(path, scene.root / "rgb.tif")
        assert resolve_classes("index", {0, 1, 7, 9}, POTSDAM, {7, 9}, path) == {
            0: 0,
            1: 1,
            7: 255,
            9: 255,
        }

    def test_out_of_extent_is_ignore(self, scene: Scene, tmp_path: Path) -> None:
        path = write_raster(
            tmp_path / "idx.tif", np.ones((1, 8, 8), np.uint8), UTM, scene_transform()
        )
        out = _reader(path, scene.root / "rgb.tif").read(Window(0, 0, 16, 16))
        assert (out[:8, :8] == 1).all() and (out[8:] == 255).all() and (out[:, 8:] == 255).all()

    def test_parse_ignore(self) -> None:
        assert parse_ignore(["#ff0000", "0,0,255"], colour=True) == {0xFF0000, 0x0000FF}
        assert parse_ignore(["3", "Unknown Stuff"], colour=False) == {3, "unknown_stuff"}
        with pytest.raises(UsageError, match="--ignore"):
            parse_ignore(["red"], colour=True)


def scene_transform():  # noqa: ANN201
    from affine import Affine

    return Affine(1, 0, X0, 0, -1, Y0)


class TestVectorLabels:
    @pytest.mark.parametrize("crs", [UTM, MERC])
    def test_polygons_hit_expected_pixels(self, scene: Scene, tmp_path: Path, crs: object) -> None:
        path = write_polygons(tmp_path / "lab.gpkg", crs=crs)
        reader = _reader(path, scene.root / "rgb.tif")
        out = reader.read(Window(0, 0, 96, 96))
        # building box X0+10..30, Y0-30..-10 -> cols 10..29, rows 10..29 at 1 m
        assert (out[11:29, 11:29] == 1).all()
        assert (
            out[21:29, 41:49] == 3
        ).all()  # tree box X0+40..50, Y0-30..-20 -> cols 40..49, rows 20..29
        assert out[50, 50] == 255 and out[0, 0] == 255
        assert (out == 1).sum() == pytest.approx(400, abs=45)

    def test_window_matches_full(self, scene: Scene, tmp_path: Path) -> None:
        reader = _reader(write_polygons(tmp_path / "lab.geojson"), scene.root / "rgb.tif")
        full = reader.read(Window(0, 0, 96, 96))
        np.testing.assert_array_equal(reader.read(Window(5, 15, 40, 20)), full[15:35, 5:45])

    def test_missing_field(self, scene: Scene, tmp_path: Path) -> None:
        path = write_polygons(tmp_path / "lab.gpkg", field="kind")
        with pytest.raises(
            RasterError, match=r"lab.gpkg: no class field 'class' \(columns: kind\)"
        ):
            _reader(path, scene.root / "rgb.tif")

    def test_unknown_names(self, scene: Scene, tmp_path: Path) -> None:
        path = write_polygons(tmp_path / "lab.gpkg")
        with pytest.raises(
            RasterError,
            match=r"label values not in the palette: 'tree' \(classes: background, building\)",
        ):
            _reader(path, scene.root / "rgb.tif", palette=DFC2023)

    def test_coco(self, scene: Scene, tmp_path: Path) -> None:
        coco = {
            "images": [{"id": 1, "file_name": "rgb.tif"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 3,
                    "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]],
                }
            ],
            "categories": [{"id": 3, "name": "building"}],
        }
        path = tmp_path / "c.json"
        path.write_text(json.dumps(coco))
        source = label_source_for(path)
        assert source.kind == "coco"
        kind, values, _ = scan_values(source)
        mapping = resolve_classes(kind, values, DFC2023, set(), path)
        reader = LabelReader(
            source,
            reference_grid(inspect_raster(scene.root / "rgb.tif")),
            mapping,
            kind,
            "rgb",
            background=0,
        )
        out = reader.read(Window(0, 0, 40, 40))
        assert (
            (out[10:20, 10:30] == 1).all()
            and (out == 1).sum() == 200
            and (out[out != 1] == 0).all()
        )

    def test_unreadable_vector(self, tmp_path: Path) -> None:
        path = tmp_path / "x.gpkg"
        path.write_text("nope")
        with pytest.raises(RasterError, match="x.gpkg: not a readable vector file"):
            scan_values(LabelSource((path,), "vector"))
