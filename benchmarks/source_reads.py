"""Windows read from a tiled mosaic: local files vs the same files over HTTP, one run.

A region of ``--size`` x ``--size`` RGB pixels (uint8) is written as ``--tiles`` x
``--tiles`` Cloud-Optimized GeoTIFF tiles (256 px blocks, uncompressed so that bytes read
are easy to compare with the pixels asked for). The tiles are read as one sensor source
(:func:`sgma_cli.data.sources.resolve_source`: an in-memory VRT over the tiles) two ways:

* **local**: the tile files on disk (a glob);
* **http**: a list file of their URLs, served by a range-capable HTTP server on
  127.0.0.1 (the one the tests use, ``tests/tiled_region.py``) and read through GDAL's
  ``/vsicurl/`` with sgma's remote options.

Each way reads the same ``--windows`` windows of ``--window`` px at seeded random places
through :class:`sgma_cli.data.align.AlignedReader` (what ``sgma predict`` does per sensor),
``--repeats`` rounds taking turns; each round opens the source afresh (a cold GDAL and
VSI cache). Printed: median seconds per round, MPix/s, and for http the bytes the server
sent per round against the bytes of the pixels asked for (the COG headers and whole
256 px blocks make it a little more; a whole-file download would be far more).

Usage: ``.venv/bin/python benchmarks/source_reads.py [--size 4096] [--tiles 4]
[--window 512] [--windows 24] [--repeats 3] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tiled_region.py

from sgma_cli.data.align import AlignedReader  # noqa: E402
from sgma_cli.data.raster import inspect_raster  # noqa: E402
from sgma_cli.data.sources import RasterSource, resolve_source  # noqa: E402
from tests.tiled_region import serve  # noqa: E402


def write_tiles(root: Path, size: int, tiles: int) -> list[Path]:
    """``tiles`` x ``tiles`` COGs covering ``size`` x ``size`` px of 3-band noise."""
    root.mkdir(parents=True, exist_ok=True)
    step = size // tiles
    rng = np.random.default_rng(0)
    paths = []
    for i in range(tiles):
        for j in range(tiles):
            path = root / f"ortho_r{i}c{j}.tif"
            with rasterio.open(
                path,
                "w",
                driver="COG",
                width=step,
                height=step,
                count=3,
                dtype="uint8",
                crs="EPSG:32633",
                transform=from_origin(500000 + j * step * 0.5, 5800000 - i * step * 0.5, 0.5, 0.5),
                blocksize=256,
                compress="NONE",
            ) as dst:
                dst.write(rng.integers(0, 255, (3, step, step), dtype=np.uint8))
            paths.append(path)
    return paths


def read_round(source: RasterSource, windows: list[Window]) -> float:
    """Seconds to open ``source`` and read every window through an AlignedReader."""
    start = time.perf_counter()
    info = inspect_raster(source)
    with AlignedReader(info, info.grid) as reader:
        for window in windows:
            data, valid = reader.read(window)
            assert valid.all() and data.shape[1:] == (int(window.height), int(window.width))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the tiles here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        paths = write_tiles(root / "ortho", args.size, args.tiles)
        on_disk = sum(p.stat().st_size for p in paths)
        print(
            f"mosaic: {len(paths)} COG tiles, {args.size} x {args.size} px x 3 bands "
            f"({on_disk / 2**20:.1f} MiB), written in {time.perf_counter() - start:.1f} s"
        )
        rng = np.random.default_rng(1)
        hi = args.size - args.window
        windows = [
            Window(int(c), int(r), args.window, args.window)
            for r, c in rng.integers(0, hi + 1, size=(args.windows, 2))
        ]
        mpix = args.windows * args.window**2 / 1e6
        asked = args.windows * args.window**2 * 3
        with serve(root) as server:
            listing = root / "ortho_urls.txt"
            listing.write_text("\n".join(server.url(p) for p in paths))
            local = resolve_source(str(root / "ortho" / "*.tif"))
            remote = resolve_source(listing)
            times: dict[str, list[float]] = {"local": [], "http": []}
            sent: list[int] = []
            for _ in range(args.repeats):
                times["local"].append(read_round(local, windows))
                server.reset()
                times["http"].append(read_round(remote, windows))
                sent.append(sum(server.sent.values()))
                requests = server.ranged
        print(
            f"{args.windows} windows of {args.window} px ({mpix:.1f} MPix, "
            f"{asked / 2**20:.1f} MiB of pixels) per round, {args.repeats} rounds, medians:"
        )
        header = ("source", "s/round", "MPix/s", "fetched/round", "fetched/asked")
        print(f"{header[0]:<8} {header[1]:>8} {header[2]:>8} {header[3]:>14} {header[4]:>14}")
        for name in ("local", "http"):
            sec = statistics.median(times[name])
            fetched = f"{statistics.median(sent) / 2**20:.1f} MiB" if name == "http" else "-"
            ratio = f"{statistics.median(sent) / asked:.2f}" if name == "http" else "-"
            print(f"{name:<8} {sec:>8.3f} {mpix / sec:>8.1f} {fetched:>14} {ratio:>14}")
        slower = statistics.median(times["http"]) / statistics.median(times["local"])
        print(
            f"http / local time: {slower:.2f}x; range requests per http round: {requests}; "
            f"whole mosaic on disk: {on_disk / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
