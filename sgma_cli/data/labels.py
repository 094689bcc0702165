"""Labels on the reference grid: colour rasters, class-index rasters, polygons, MS-COCO.

* colour raster (3+ bands, e.g. Potsdam ``5_Labels_all``): each RGB colour of the palette
  is a class;
* class-index raster (1 band): the value is the class (or goes through a preset's
  ``value_map``, e.g. DELIVER stores class + 1);
* vector polygons (GeoPackage, GeoJSON, Shapefile) with a class attribute holding a class
  name or index, rasterised per tile window;
* MS-COCO JSON (DFC2023): polygons in pixel coordinates of the reference image.

Values that are not in the palette are an error naming them, unless listed in
``--ignore``; those, the raster's nodata and out-of-extent pixels become ``ignore_index``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rasterio.features import rasterize
from rasterio.windows import Window

from sgma_cli.data.align import AlignedReader, Grid
from sgma_cli.data.palettes import Palette
from sgma_cli.data.raster import RasterInfo, inspect_raster, open_raster
from sgma_cli.errors import RasterError, UsageError

__all__ = [
    "LabelSource",
    "label_source_for",
    "read_coco_json",
    "scan_values",
    "resolve_classes",
    "LabelReader",
]

VECTOR_EXT = {".gpkg", ".geojson", ".shp", ".json", ".fgb"}
LabelKind = Literal["raster", "index", "vector", "coco"]


@dataclass(frozen=True)
class LabelSource:
    """Where the labels of a scene come from.

    Attributes:
        paths: the file (several JSON files for COCO).
        kind: ``raster`` (colour if 3+ bands, else index), ``index``, ``vector`` or ``coco``.
        field: class attribute of vector labels.
        value_map: raw value -> class index pairs (index rasters of a preset).
    """

    paths: tuple[Path, ...]
    kind: LabelKind
    field: str = "class"
    value_map: tuple[tuple[int, int], ...] | None = None

    @property
    def path(self) -> Path:
        """The (first) file."""
        return self.paths[0]


def label_source_for(
    path: Path, field: str = "class", palette: Palette | None = None
) -> LabelSource:
    """Guess the label kind of ``path`` from its extension (COCO: JSON with ``annotations``)."""
    path = Path(path)
    if path.suffix.lower() in VECTOR_EXT:
        if path.suffix.lower() == ".json":
            try:
                head = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise RasterError(f"cannot read labels JSON ({err})", path) from None
            if isinstance(head, dict) and "annotations" in head and "images" in head:
                return LabelSource((path,), "coco", field)
        return LabelSource((path,), "vector", field)
    return LabelSource((path,), "raster", field)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """``(3, ...)`` colours -> int codes ``r << 16 | g << 8 | b``."""
    r, g, b = (rgb[i].astype(np.int64) for i in range(3))
    r <<= 16
    r |= g << 8
    r |= b
    return r


def _fmt(value: Any, colour: bool = False) -> str:
    if colour:
        return f"#{int(value):06x}"
    return repr(value) if isinstance(value, str) else str(value)


def _norm_name(text: str) -> str:
    return re.sub(r"[\s_\-]+", "_", text.strip().lower())


def parse_ignore(specs: list[str], colour: bool) -> set[Any]:
    """``--ignore`` values for a colour raster (``#rrggbb``/``r,g,b`` -> packed int) or others."""
    out: set[Any] = set()
    for spec in specs:
        s = spec.strip()
        if colour:
            try:
                if s.startswith("#") and len(s) == 7:
                    out.add(int(s[1:], 16))
                    continue
                if s.count(",") == 2:
                    r, g, b = (int(x) for x in s.split(","))
                    if all(0 <= c <= 255 for c in (r, g, b)):
                        out.add((r << 16) | (g << 8) | b)
                        continue
            except ValueError:
                pass
            raise UsageError(f"--ignore {spec!r}: colour labels need #rrggbb or r,g,b (0-255)")
        else:
            out.add(int(s) if re.fullmatch(r"-?\d+", s) else _norm_name(s))
    return out


def _raster_kind(source: LabelSource, info: RasterInfo) -> str:
    if source.kind == "raster":
        return "colour" if info.count >= 3 else "index"
    return source.kind


def scan_values(source: LabelSource) -> tuple[str, set[Any], RasterInfo | None]:
    """All distinct raw label values of a source, read block by block.

    Returns:
        ``(kind, values, info)``: kind ``colour`` (values = packed RGB ints), ``index``
        (ints), ``vector`` (names or ints, normalised) or ``coco`` (category names).
    """
    if source.kind == "coco":
        names = set()
        for p in source.paths:
            data = read_coco_json(p)
            names |= {
                _norm_name(str(c.get("name", c.get("id")))) for c in data.get("categories", [])
            }
        return "coco", names, None
    if source.kind == "vector":
        frame = _read_vector(source)
        return "vector", {_vector_value(v) for v in frame[source.field].dropna().unique()}, None
    info = inspect_raster(source.path)
    kind = _raster_kind(source, info)
    if np.dtype(info.dtype).kind == "c":
        raise RasterError(
            f"labels hold complex numbers ({info.dtype}); give class indices or RGB colours",
            source.path,
        )
    values: set[Any] = set()
    with open_raster(source.path) as src:
        step = max(1, (1 << 20) // max(1, src.width))  # ~1 MPix per read: flat memory
        for row in range(0, src.height, step):
            window = Window(0, row, src.width, min(step, src.height - row))
            if kind == "colour":
                block = src.read((1, 2, 3), window=window)
                _whole_numbers(np.unique(block), source.path, colour=True)
                codes = np.unique(_pack(block))
            else:
                codes = np.unique(src.read(1, window=window))
                if info.nodata is not None:  # nodata pixels are unlabelled, NaN included
                    codes = codes[~(codes == info.nodata) & ~_is_nan(codes, info.nodata)]
                codes = _whole_numbers(codes, source.path, colour=False)
            values |= {int(v) for v in codes}
    return kind, values, info


def _is_nan(values: np.ndarray, nodata: float) -> np.ndarray:
    """Where ``values`` are NaN while ``nodata`` is NaN too (NaN never equals itself)."""
    if values.dtype.kind != "f" or not np.isnan(nodata):
        return np.zeros(values.shape, bool)
    return np.isnan(values)


def _whole_numbers(values: np.ndarray, path: Path, colour: bool) -> np.ndarray:
    """Distinct label values, checked: whole numbers (0-255 for colour bands).

    NaN in a class-index raster is unlabelled (dropped); infinities, fractions and, for
    colours, NaN or values outside 0-255 (they would run into the next band when packed)
    raise :class:`RasterError`.
    """
    if values.dtype.kind == "f":
        if not colour:
            values = values[~np.isnan(values)]
        bad = values[~np.isfinite(values) | (values != np.trunc(values))]
        if bad.size:
            raise RasterError(
                f"label value {bad[0]:g} is not a whole number; labels are class indices "
                "or RGB colours",
                path,
            )
    if colour and values.size and (values.min() < 0 or values.max() > 255):
        bad_value = values.min() if values.min() < 0 else values.max()
        raise RasterError(f"colour labels need 8-bit bands (0-255), found {bad_value}", path)
    return values


def _vector_value(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    s = str(v)
    return int(s) if re.fullmatch(r"\d+", s) else _norm_name(s)


def resolve_classes(
    kind: str, values: set[Any], palette: Palette | None, ignore: set[Any], where: Path
) -> dict[Any, int]:
    """Map every raw value to a class index (255 for ignored ones).

    Raises:
        RasterError: values neither in the palette nor in ``--ignore``, named.
    """
    mapping: dict[Any, int] = {}
    unknown = []
    for v in sorted(
        values, key=lambda x: (isinstance(x, str), x if isinstance(x, int) else 0, str(x))
    ):
        if v in ignore:
            mapping[v] = 255
            continue
        idx = None
        if kind == "colour" and palette is not None:
            codes = [(c[0] << 16) | (c[1] << 8) | c[2] for _, c in palette]
            idx = codes.index(v) if v in codes else None
        elif isinstance(v, int):
            idx = v if v >= 0 and (palette is None or v < len(palette)) else None
        elif palette is not None:
            names = [_norm_name(n) for n, _ in palette]
            idx = names.index(v) if v in names else None
        if idx is None:
            unknown.append(v)
        else:
            mapping[v] = idx
    if unknown:
        what = "colours" if kind == "colour" else "values"
        shown = ", ".join(_fmt(u, kind == "colour") for u in unknown[:8]) + (
            f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""
        )
        allowed = ", ".join(n for n, _ in palette) if palette else "an integer class index"
        raise RasterError(
            f"label {what} not in the palette: {shown} (classes: {allowed}); "
            f"map them with --ignore or give --palette",
            where,
        )
    return mapping


def read_coco_json(path: Path) -> dict[str, Any]:
    """An MS-COCO annotation file as a dict.

    Raises:
        RasterError: the file is unreadable or not MS-COCO JSON.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RasterError(f"cannot read COCO JSON ({err})", path) from None
    if not isinstance(data, dict):
        raise RasterError("not an MS-COCO file (top level is not an object)", path)
    return data


def _read_vector(source: LabelSource) -> Any:
    import geopandas as gpd
    from pyogrio.errors import DataSourceError

    try:
        frame = gpd.read_file(source.path)
    except (DataSourceError, OSError, ValueError) as err:
        raise RasterError(
            f"not a readable vector file ({str(err).splitlines()[0][:120]})", source.path
        ) from None
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        raise RasterError(
            "has no geometry column: vector labels need polygons with a class field", source.path
        )
    if source.field not in frame.columns:
        cols = [c for c in frame.columns if c != "geometry"]
        raise RasterError(
            f"no class field {source.field!r} (columns: {', '.join(cols) or 'none'}); "
            "pick one with --label-field",
            source.path,
        )
    return frame


class LabelReader:
    """Read the label of any window of a scene's reference grid as class indices.

    Args:
        source: the label source.
        grid: the scene's reference grid.
        mapping: raw value -> class index, from :func:`resolve_classes`.
        kind: from :func:`scan_values`.
        scene: scene name (picks the COCO image).
        background: class of pixels no polygon covers (COCO), else ``ignore_index``.
        ignore_index: the ignore value.
    """

    def __init__(
        self,
        source: LabelSource,
        grid: Grid,
        mapping: dict[Any, int],
        kind: str,
        scene: str = "",
        background: int | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.source, self.grid, self.kind = source, grid, kind
        self.ignore_index = ignore_index
        self.fill = ignore_index if background is None else background
        self._reader: AlignedReader | None = None
        self._shapes: list[tuple[Any, int]] = []
        self._tree: Any = None
        if kind in ("colour", "index"):
            info = inspect_raster(source.path)
            if source.value_map is not None:
                mapping = {**mapping, **dict(source.value_map)}
            self.lut = mapping
            bands = (1, 2, 3) if kind == "colour" else (1,)
            same = info.crs is None
            self._reader = AlignedReader(
                info, grid, "nearest", bands=bands, same_grid=same, raw=True
            )
        elif kind == "vector":
            frame = _read_vector(source)
            if frame.crs is not None and grid.crs is not None and frame.crs != grid.crs:
                frame = frame.to_crs(grid.crs)
            for geom, value in zip(frame.geometry, frame[source.field]):
                if geom is None or geom.is_empty or pd.isna(value):
                    continue
                self._shapes.append((geom, mapping[_vector_value(value)]))
        else:
            self._shapes = self._coco_shapes(scene, mapping)
        if self._shapes:
            from shapely import STRtree

            self._tree = STRtree([g for g, _ in self._shapes])

    def _coco_shapes(self, scene: str, mapping: dict[Any, int]) -> list[tuple[Any, int]]:
        from shapely.geometry import Polygon

        out = []
        for path in self.source.paths:
            data = read_coco_json(path)
            cats = {
                c["id"]: _norm_name(str(c.get("name", c["id"]))) for c in data.get("categories", [])
            }
            images = {
                im["id"]: Path(str(im.get("file_name", ""))).stem.lower()
                for im in data.get("images", [])
            }
            ids = {i for i, stem in images.items() if stem == scene.lower()}
            t = self.grid.transform
            for ann in data.get("annotations", []):
                if ann.get("image_id") not in ids:
                    continue
                seg = ann.get("segmentation")
                if not isinstance(seg, list):
                    raise RasterError(
                        f"annotation {ann.get('id')}: RLE masks are not supported, only polygons",
                        path,
                    )
                cls = mapping[cats[ann["category_id"]]]
                for ring in seg:
                    xy = [
                        t @ (float(ring[i]), float(ring[i + 1])) for i in range(0, len(ring) - 1, 2)
                    ]
                    if len(xy) >= 3:
                        out.append((Polygon(xy).buffer(0), cls))
        return out

    def close(self) -> None:
        """Release the raster handle."""
        if self._reader is not None:
            self._reader.close()

    def read(self, window: Window) -> np.ndarray:
        """Class indices ``(h, w)`` uint8 of ``window``; unlabelled -> ``ignore_index``."""
        h, w = int(window.height), int(window.width)
        if self._reader is not None:
            data, valid = self._reader.read(window)
            if not self.lut:  # nothing labelled (every value nodata or ignored)
                return np.full((h, w), self.ignore_index, np.uint8)
            if data.dtype.kind == "f":  # NaN/inf: unlabelled, and no cast of them to int
                valid = valid & np.isfinite(data).all(axis=0)
                data = np.where(np.isfinite(data), data, -1)
            codes = _pack(data) if self.kind == "colour" else data[0].astype(np.int64)
            keys = np.array(sorted(self.lut), np.int64)
            classes = np.array([self.lut[int(k)] for k in keys], np.uint8)
            pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
            out = np.where(
                (keys[pos] == codes) & valid, classes[pos], np.uint8(self.ignore_index)
            ).astype(np.uint8)
            return out
        out = np.full((h, w), self.fill, np.uint8)
        if self._tree is None:
            return out
        from shapely.geometry import box

        hits = sorted(self._tree.query(box(*self.grid.window_bounds(window))))
        if hits:
            rasterize(
                [self._shapes[i] for i in hits],
                out_shape=(h, w),
                transform=self.grid.window_transform(window),
                out=out,
                dtype=np.uint8,
            )
        return out
