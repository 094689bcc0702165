"""A GDAL VRT mosaic of chunk rasters on one grid, and its copy as a single COG.

A region prediction writes one COG per chunk; :func:`write_mosaic_vrt` writes the XML of a
VRT that places each chunk at its pixel offset on the region's grid (relative paths, so
the folder can be moved or synced), with the chunks' band names, nodata, colour table,
scale and metadata: QGIS and GDAL open it as one raster. Chunks not listed (failed, or
outside the AOI) read as nodata. :func:`merge_to_cog` streams the VRT into one COG with
GDAL's COG driver, block by block, in flat memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from rasterio.shutil import copy as rio_copy

from sgma_cli.data.atomic import remove_quietly, temp_path, write_errors
from sgma_cli.data.raster import Grid
from sgma_cli.data.writers import BLOCK, GDAL_WRITE_ERRORS

__all__ = ["MosaicPart", "write_mosaic_vrt", "merge_to_cog"]


@dataclass(frozen=True)
class MosaicPart:
    """One raster of the mosaic: its path and where it lies on the mosaic grid (pixels)."""

    path: Path
    row: int
    col: int
    width: int
    height: int


def _geotransform(grid: Grid) -> str:
    t = grid.transform
    return ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))


def write_mosaic_vrt(  # noqa: PLR0913 - one call describing one file
    path: Path,
    grid: Grid,
    parts: Sequence[MosaicPart],
    *,
    count: int,
    nodata: float,
    descriptions: Sequence[str] = (),
    colormap: Mapping[int, tuple[int, int, int]] | None = None,
    tags: Mapping[str, str] | None = None,
    scale: float | None = None,
) -> Path:
    """Write the VRT XML of uint8 ``parts`` placed on ``grid``, atomically.

    Args:
        path: the ``.vrt`` to write; part paths are written relative to its folder.
        grid: the mosaic's grid.
        parts: the chunk rasters (uint8, ``count`` bands, ``BLOCK`` px tiles).
        count: bands.
        nodata: nodata value of every band (also what uncovered pixels read as).
        descriptions: band names.
        colormap: ``{index: (r, g, b)}`` of a class map's band 1.
        tags: dataset metadata.
        scale: band scale (0.01 for percent bands).

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(path)
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs is not None:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(grid.crs.to_wkt())}</SRS>')
    lines.append(f"  <GeoTransform>{_geotransform(grid)}</GeoTransform>")
    if tags:
        lines.append("  <Metadata>")
        lines += [f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in tags.items()]
        lines.append("  </Metadata>")
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        if band <= len(descriptions):
            lines.append(f"    <Description>{escape(descriptions[band - 1])}</Description>")
        lines.append(f"    <NoDataValue>{nodata:g}</NoDataValue>")
        if colormap and band == 1:
            lines.append("    <ColorInterp>Palette</ColorInterp>")
            lines.append("    <ColorTable>")
            for i in range(max(colormap) + 1):
                r, g, b = colormap.get(i, (0, 0, 0))
                lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="255"/>')
            lines.append("    </ColorTable>")
        if scale is not None:
            lines.append(f"    <Offset>0</Offset>\n    <Scale>{scale!r}</Scale>")
        for part in parts:
            rel = os.path.relpath(part.path, path.parent).replace(os.sep, "/")
            size = f'xSize="{part.width}" ySize="{part.height}"'
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                f"      <SourceBand>{band}</SourceBand>",
                f'      <SourceProperties RasterXSize="{part.width}" '
                f'RasterYSize="{part.height}" DataType="Byte" '
                f'BlockXSize="{BLOCK}" BlockYSize="{BLOCK}"/>',
                f'      <SrcRect xOff="0" yOff="0" {size}/>',
                f'      <DstRect xOff="{part.col}" yOff="{part.row}" {size}/>',
                "    </SimpleSource>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    tmp = temp_path(path, "part")
    try:
        with write_errors(path):
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, path)
    finally:
        remove_quietly(tmp)
    return path


def merge_to_cog(vrt: Path, out: Path, *, overview_resampling: str = "NEAREST") -> Path:
    """Copy a mosaic VRT into one COG at ``out`` (temporary name, then rename).

    Raises:
        OutputError: the COG cannot be written (nothing is left at ``out``).
    """
    out = Path(out)
    tmp = temp_path(out, "part")
    try:
        with write_errors(out, kinds=GDAL_WRITE_ERRORS):
            rio_copy(
                str(vrt),
                str(tmp),
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=str(BLOCK),
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING=overview_resampling,
                BIGTIFF="IF_SAFER",
            )
            os.replace(tmp, out)
    finally:
        remove_quietly(tmp)
    return out
