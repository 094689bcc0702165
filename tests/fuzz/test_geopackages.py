"""Fuzzing vector labels: GeoPackages without geometry, with null, empty, invalid or
non-polygon geometries, without a CRS, without the class field, with any class values.

The chain is prepare's for vector labels: discover the scene, inspect it (the plan row of
the GeoPackage), scan the class values and settle the classes, then rasterise them on the
reference grid (:class:`~sgma_cli.data.labels.LabelReader`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, Polygon, box

from sgma_cli.data.palettes import POTSDAM
from tests.fuzz.conftest import Fuzz, works_or_sgma_error
from tests.fuzz.test_label_rasters import TRANSFORM, _write, label_chain

CRS = "EPSG:32633"
X0, Y0 = TRANSFORM.c, TRANSFORM.f  # the scene: 8 x 8 px of 0.5 m from here


def _geometry(kind: str, i: int) -> Any:
    x, y = X0 + i, Y0 - 4 + i / 2
    return {
        "null": None,
        "empty": Polygon(),
        "point": Point(x, y),
        "line": LineString([(x, y), (x + 2, y - 2)]),
        "polygon": box(x, y - 2, x + 2, y),
        "bowtie": Polygon([(x, y), (x + 2, y - 2), (x + 2, y), (x, y - 2)]),
        "far": box(0, 0, 1, 1),
    }[kind]


class_values = (
    st.integers(-3, 8)
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([n for n, _ in POTSDAM] + ["Tree", " tree ", "", "123", "x" * 40])
    | st.text(max_size=6)
    | st.none()
)


@st.composite
def geopackages(draw: st.DrawFn) -> dict[str, Any]:
    geometry = draw(
        st.sampled_from(["none", "null", "empty", "point", "line", "polygon", "bowtie", "far"])
        | st.just("mixed")
    )
    rows = draw(st.integers(0, 5))
    kinds = ["null", "empty", "point", "line", "polygon", "bowtie", "far"]
    per_row = [
        draw(st.sampled_from(kinds)) if geometry == "mixed" else geometry for _ in range(rows)
    ]
    # one column type per field (as a GeoPackage stores it), or a mix as text
    values = draw(st.lists(class_values, min_size=rows, max_size=rows))
    return {
        "geometry": per_row if geometry != "none" else None,
        "field": draw(st.sampled_from(["class", "class", "label"])),
        "values": values,
        "crs": draw(st.sampled_from([CRS, CRS, None, "EPSG:4326", "EPSG:3857"])),
    }


def write_geopackage(path: Path, spec: dict[str, Any]) -> bool:
    """Write ``spec`` as a GeoPackage; False when the driver refuses such a table."""
    column = pd.Series(spec["values"], dtype=object)
    kinds = {type(v) for v in spec["values"] if v is not None}
    if len(kinds) > 1:  # one type per column in a GeoPackage
        column = column.map(lambda v: None if v is None else str(v))
    frame = pd.DataFrame({spec["field"]: column})
    geometry = None
    if spec["geometry"] is not None:
        geoms = [_geometry(k, i) for i, k in enumerate(spec["geometry"])]
        geometry = np.array([None if g is None else g.wkb for g in geoms], dtype=object)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if geometry is None:  # an attribute table: no geometry column at all
                pyogrio.write_dataframe(frame, path, driver="GPKG")
            else:
                pyogrio.raw.write(
                    path,
                    geometry,
                    [column.to_numpy()],
                    [spec["field"]],
                    driver="GPKG",
                    geometry_type="Unknown",
                    crs=spec["crs"],
                )
    except (ValueError, TypeError, OverflowError, pyogrio.errors.DataSourceError):
        return False  # the driver refuses such a table: no such file can exist
    return path.exists()


def test_geopackages(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(geopackages(), st.booleans())
    @fuzz
    def check(spec: dict[str, Any], with_palette: bool) -> None:
        with scratch() as folder:
            _write(folder / "rgb.tif", np.full((3, 8, 8), 100, np.uint8), None)
            if not write_geopackage(folder / "labels.gpkg", spec):
                return
            palette = POTSDAM if with_palette else None
            works_or_sgma_error(label_chain, folder, palette, labels="labels.gpkg")

    check()
