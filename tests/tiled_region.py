"""Test data for sensor sources: a region given as tiles, and an HTTP server with ranges.

:func:`make_tiled_region` writes one region twice: once as single files (``merged/``,
the layout ``sgma predict SCENE_DIR`` reads) and once as tilings (``tiles/``):

* ``tiles/rgb/rgb_r{i}c{j}.tif``: 3 x 3 COG tiles of the RGB (EPSG:32633, 0.5 m, uint8,
  tiles of 54/53/53 px: their own tiling, not a multiple of anything);
* ``tiles/dsm/dsm_r{i}c{j}.tif``: a 2 x 2 tiling of the DSM in another CRS (EPSG:3857,
  float32, nodata -9999) with the top-right tile missing: a gap. ``merged/dsm.tif`` is
  the same DSM in one file, nodata where the gap is;
* ``merged/sar.tif`` and ``merged/labels.tif`` as :func:`tests.conftest.make_tiny_scene`
  writes them (SAR in EPSG:3857 ending mid-scene).

:class:`RangeServer` serves a folder on ``127.0.0.1`` with HTTP ``Range`` support (what
GDAL's ``/vsicurl/`` needs; ``http.server`` alone answers every GET with the whole
file), counts the bytes it sent per file, and can answer slowly (``stall`` seconds) to
test timeouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

__all__ = [
    "TiledRegion",
    "make_tiled_region",
    "make_textured_checkpoint",
    "write_tiles",
    "write_stac_items",
    "RangeServer",
    "serve",
]

DSM_CRS = "EPSG:3857"
DSM_NODATA = -9999.0


@dataclass(frozen=True)
class TiledRegion:
    """Where :func:`make_tiled_region` wrote things.

    Attributes:
        root: the folder holding everything.
        merged: scene folder of single files: ``rgb.tif``, ``dsm.tif`` (EPSG:3857, with
            the gap as nodata), ``sar.tif``, ``labels.tif``.
        rgb_tiles: the 9 RGB tile files.
        dsm_tiles: the 3 DSM tile files (the 4th is the gap).
    """

    root: Path
    merged: Path
    rgb_tiles: tuple[Path, ...]
    dsm_tiles: tuple[Path, ...]

    @property
    def rgb_dir(self) -> Path:
        """Folder of the RGB tiles."""
        return self.rgb_tiles[0].parent

    @property
    def dsm_dir(self) -> Path:
        """Folder of the DSM tiles."""
        return self.dsm_tiles[0].parent


def _cuts(n: int, parts: int) -> list[int]:
    """``parts`` + 1 cut positions over ``n``, the first piece the largest (160/3: 54, 53, 53)."""
    base, extra = divmod(n, parts)
    cuts = [0]
    for i in range(parts):
        cuts.append(cuts[-1] + base + (1 if i < extra else 0))
    return cuts


def write_tiles(
    src_path: Path, out_dir: Path, stem: str, parts: int, skip: set[tuple[int, int]], **cog: object
) -> list[Path]:
    """Cut ``src_path`` into ``parts`` x ``parts`` COG tiles ``<stem>_rIcJ.tif`` but ``skip``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with rasterio.open(src_path) as src:
        rows, cols = _cuts(src.height, parts), _cuts(src.width, parts)
        for i in range(parts):
            for j in range(parts):
                if (i, j) in skip:
                    continue
                win = Window(cols[j], rows[i], cols[j + 1] - cols[j], rows[i + 1] - rows[i])
                data = src.read(window=win)
                path = out_dir / f"{stem}_r{i}c{j}.tif"
                profile = {
                    "driver": "COG",
                    "width": data.shape[-1],
                    "height": data.shape[-2],
                    "count": src.count,
                    "dtype": src.dtypes[0],
                    "crs": src.crs,
                    "transform": src.window_transform(win),
                    "nodata": src.nodata,
                    "blocksize": 32,
                    **cog,
                }
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
                written.append(path)
    return written


def make_tiled_region(root: Path, size: int = 160, seed: int = 0) -> TiledRegion:
    """Write the region as single files and as tilings (see the module docstring)."""
    from tests.conftest import make_tiny_scene

    merged = make_tiny_scene(root / "merged", size=size, seed=seed)
    # the DSM in another CRS than the RGB: EPSG:3857, one file
    with rasterio.open(merged / "dsm.tif") as src:
        transform, width, height = calculate_default_transform(
            src.crs, DSM_CRS, src.width, src.height, *src.bounds
        )
        dsm = np.full((1, height, width), DSM_NODATA, np.float32)
        reproject(
            src.read(),
            dsm,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=src.nodata,
            dst_transform=transform,
            dst_crs=DSM_CRS,
            dst_nodata=DSM_NODATA,
            resampling=Resampling.bilinear,
        )
    # the gap: the top-right quarter of the DSM tiling has no tile (nodata in the merged file)
    rows, cols = _cuts(height, 2), _cuts(width, 2)
    dsm[:, rows[0] : rows[1], cols[1] : cols[2]] = DSM_NODATA
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": DSM_CRS,
        "transform": transform,
        "nodata": DSM_NODATA,
    }
    with rasterio.open(merged / "dsm.tif", "w", **profile) as dst:
        dst.write(dsm)
    rgb_tiles = write_tiles(merged / "rgb.tif", root / "tiles" / "rgb", "rgb", 3, set())
    dsm_tiles = write_tiles(merged / "dsm.tif", root / "tiles" / "dsm", "dsm", 2, {(0, 1)})
    return TiledRegion(root, merged, tuple(rgb_tiles), tuple(dsm_tiles))


def make_textured_checkpoint(path: Path, gain: float = 30.0) -> Path:
    """The tiny checkpoint (``tests.conftest.make_tiny_checkpoint``), classifier scaled by ``gain``.

    Untrained, the tiny model's class probabilities hardly vary over a scene (a handful of
    percent values): two maps being equal would prove little. Scaled logits make every input
    difference show in the probabilities and classes.
    """
    from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from tests.conftest import make_tiny_checkpoint

    checkpoint = load_checkpoint(make_tiny_checkpoint(path))
    state = dict(checkpoint.model)
    state["head.classifier.weight"] = state["head.classifier.weight"] * gain
    return save_checkpoint(path, Checkpoint(meta=checkpoint.meta, model=state))


def write_stac_items(
    path: Path,
    tiles: tuple[Path, ...],
    key: str = "visual",
    href_base: str | None = None,
    drop: dict[str, str] | None = None,
) -> Path:
    """Write an ItemCollection (pystac) with one item per tile, the tile as asset ``key``.

    Hrefs are relative to ``path``'s folder, or ``href_base`` + that relative path (e.g. an
    ``http://`` URL). ``drop`` = ``{item id: asset key}`` leaves that asset out of that item.
    Item ids are the tiles' stems; datetimes 2024-06-0N; bboxes in WGS 84.
    """
    import datetime as dt

    import pystac
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    items = []
    for n, tile in enumerate(tiles):
        with rasterio.open(tile) as src:
            west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        rel = Path(os.path.relpath(tile.resolve(), path.parent.resolve())).as_posix()
        item = pystac.Item(
            id=tile.stem,
            geometry=mapping(box(west, south, east, north)),
            bbox=[west, south, east, north],
            datetime=dt.datetime(2024, 6, 1 + n, 10, 30, tzinfo=dt.timezone.utc),
            properties={},
        )
        if (drop or {}).get(tile.stem) != key:
            href = f"{href_base.rstrip('/')}/{rel}" if href_base else rel
            item.add_asset(key, pystac.Asset(href, media_type=pystac.MediaType.COG))
        item.add_asset("thumbnail", pystac.Asset(f"{tile.stem}.png"))
        items.append(item)
    collection = pystac.ItemCollection(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collection.to_dict(transform_hrefs=False)))
    return path


# ------------------------------------------------------------------------ HTTP with ranges
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _RangeHandler(SimpleHTTPRequestHandler):
    """GET/HEAD of files under ``directory``, honouring one ``Range: bytes=a-b``."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # keep test output clean

    def _stall(self) -> None:
        if self.server.stall:
            time.sleep(self.server.stall)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._stall()
        super().do_HEAD()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._stall()
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        size = path.stat().st_size
        match = _RANGE.fullmatch(self.headers.get("Range", "").split(",")[0].strip())
        start, end = 0, size - 1
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # the last N bytes
                start = max(size - int(match.group(2)), 0)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.server.ranged += 1
        else:
            self.send_response(200)
        length = end - start + 1
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            body = f.read(length)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)
        with self.server.lock:
            self.server.sent[path.name] += len(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stall: float = 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.ranged = 0


@dataclass
class RangeServer:
    """A running server: :meth:`url` of a file, bytes :attr:`sent` per file name."""

    root: Path
    server: _Server

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: Path | str) -> str:
        """URL of ``path`` (a file under :attr:`root`, or a path relative to it)."""
        rel = (
            Path(path).resolve().relative_to(self.root.resolve())
            if Path(path).is_absolute()
            else Path(path)
        )
        return f"{self.base}/{rel.as_posix()}"

    @property
    def sent(self) -> Counter[str]:
        """Bytes sent so far, by file name."""
        return self.server.sent

    @property
    def ranged(self) -> int:
        """Requests answered with 206 Partial Content."""
        return self.server.ranged

    def reset(self) -> None:
        """Forget the counts."""
        with self.server.lock:
            self.server.sent.clear()
            self.server.ranged = 0


@contextlib.contextmanager
def serve(root: Path, stall: float = 0.0) -> Iterator[RangeServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) with range requests, until the block ends."""
    handler = partial(_RangeHandler, directory=os.fspath(root))
    server = _Server(("127.0.0.1", 0), handler)
    server.stall = stall
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield RangeServer(Path(root), server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
