"""Where a sensor's pixels come from: one file, a mosaic of tiles, a URL or object storage.

A :class:`RasterSource` is what every reader of sensor rasters opens (``predict``,
``prepare``, ``evaluate --scene``). :func:`resolve_source` turns what a user typed into
one:

* a local raster file;
* a glob pattern (``ortho/*.tif``), a folder (its rasters) or a text file listing paths
  or URLs one per line (relative to the list's folder, ``#`` starts a comment): the
  tiles of one sensor, read as ONE raster;
* a GDAL ``.vrt`` (GDAL resolves its own sources);
* a URL: ``https://`` / ``http://`` read by GDAL's ``/vsicurl/`` with HTTP range
  requests, ``s3://bucket/key`` by ``/vsis3/`` and ``gs://bucket/key`` by ``/vsigs/``,
  credentials from the environment GDAL reads itself (``AWS_*``, ``GS_*``,
  ``GOOGLE_APPLICATION_CREDENTIALS``).

Several files become one raster without copying a pixel: their headers are read and a
GDAL VRT document is written in memory (:func:`mosaic_vrt`), one ``ComplexSource`` per
tile with its footprint (``DstRect``) and size (``SourceProperties``), so GDAL opens a
tile only when a read window intersects it. The VRT's XML travels inside the dataclass,
so worker processes (``predict --gpus N``, Ray) open the very same mosaic; ``/vsimem/``
files would be private to the process that wrote them.

Tiles of one sensor may have their own tiling and resolution (the mosaic takes the
finest one) but must share CRS and band count. Where no tile has a valid pixel the
mosaic reads as nodata: each tile's own nodata is honoured (``NODATA`` per source), and
the mosaic's band has a nodata value of its own (the tiles' common one, else NaN, in
float32 when the tiles are integers without nodata), so gaps read as unseen.

Remote reads run inside :func:`source_env`: GDAL options for object storage (no
directory listing on open, an HTTP timeout and retries, a read cache); a value already
set in the environment wins. A 404, a timeout or an unknown host becomes one
:class:`~sgma_cli.errors.RasterError` line naming the URL (:func:`remote_error`).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from sgma_cli.errors import RasterError

__all__ = [
    "RasterSource",
    "REMOTE_OPTIONS",
    "RASTER_SUFFIXES",
    "LIST_SUFFIXES",
    "resolve_source",
    "source_from_members",
    "source_env",
    "gdal_path_of",
    "is_url",
    "mosaic_vrt",
    "remote_error",
    "as_source",
]

#: File suffixes taken as rasters when a folder is given (case-insensitive).
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")

#: Suffixes of text files that list rasters, one path or URL per line.
LIST_SUFFIXES = (".txt", ".list", ".lst")

#: GDAL's virtual file systems for the URL schemes sgma reads.
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}

#: GDAL configuration for remote reads; a variable already set in the environment wins.
REMOTE_OPTIONS = {
    # a COG URL has no sidecar files: do not list its "folder" on open
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_TIMEOUT": "30",  # seconds per request
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_MAX_RETRY": "3",  # on 429 / 5xx answers
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",  # blocks read once stay in memory (per file handle)
    "VSI_CACHE_SIZE": str(64 << 20),
}


def is_url(text: str) -> bool:
    """``True`` for ``http(s)://``, ``s3://`` and ``gs://`` addresses."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.lower() in _VSI


def gdal_path_of(member: str) -> str:
    """What GDAL opens for one file or URL: ``s3://b/k`` -> ``/vsis3/b/k``, paths as they are."""
    if not is_url(member):
        return member
    scheme, _, rest = member.partition("://")
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        return f"/vsicurl/{member}"
    return f"{_VSI[scheme]}{rest}"


@dataclass(frozen=True)
class RasterSource:
    """One sensor's raster: a file, a URL or a mosaic of several, opened as one.

    Attributes:
        label: how errors and plans name it: the path, the URL, or e.g.
            ``ortho/*.tif (9 files)``.
        gdal_path: what ``rasterio.open`` receives: a path, a ``/vsicurl/``-style path or
            a VRT document (XML text) for a mosaic.
        members: the files/URLs behind it, as given (absolute paths for local files).
        footprints: ``(left, bottom, right, top)`` of each member in the source's CRS
            (mosaics only; empty otherwise).
        remote: some member is read over the network (reads run in :func:`source_env`).
    """

    label: str
    gdal_path: str = field(repr=False)
    members: tuple[str, ...]
    footprints: tuple[tuple[float, float, float, float], ...] = field(default=(), repr=False)
    remote: bool = False

    @property
    def name(self) -> str:
        """A short name for messages (as ``Path.name`` for a file): the label."""
        return self.label

    @property
    def is_mosaic(self) -> bool:
        """More than one member, read through a VRT built here."""
        return len(self.members) > 1

    def __str__(self) -> str:
        return self.label


@contextlib.contextmanager
def source_env(source: object) -> Iterator[None]:
    """GDAL options for reading ``source`` (:data:`REMOTE_OPTIONS` when it is remote)."""
    if not getattr(source, "remote", False):
        yield
        return
    options = {k: os.environ.get(k, v) for k, v in REMOTE_OPTIONS.items()}
    with rasterio.Env(**options):
        yield


_DENIED = "access denied (HTTP {}); check the credentials in the environment"
_HTTP_CODE = re.compile(r"(?:response|error) code:?\s*(\d{3})")
_REMOTE_REASONS = (
    ("access denied", _DENIED.format(403)),
    ("timed out", "timed out (GDAL_HTTP_TIMEOUT)"),
    ("timeout", "timed out (GDAL_HTTP_TIMEOUT)"),
    ("could not resolve", "unknown host (DNS)"),
    ("couldn't resolve", "unknown host (DNS)"),
    ("connection refused", "connection refused"),
    ("failed to connect", "connection refused"),
    (
        "aws_secret_access_key",
        "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "or AWS_NO_SIGN_REQUEST=YES for a public bucket",
    ),
    (
        "gs_secret_access_key",
        "no credentials: set GOOGLE_APPLICATION_CREDENTIALS, or "
        "GS_NO_SIGN_REQUEST=YES for a public bucket",
    ),
)


def remote_error(err: BaseException, where: str, action: str = "cannot open") -> RasterError:
    """One line for a failed remote read: ``URL: cannot open (not found (HTTP 404))``."""
    text = " ".join(str(err).split())
    low = text.lower()
    code = _HTTP_CODE.search(low)  # GDAL: "HTTP response code: 404" (not digits in a name)
    status = code.group(1) if code else ""
    if status == "404":
        reason = "not found (HTTP 404)"
    elif status in ("401", "403"):
        reason = _DENIED.format(status)
    else:
        found = next((r for key, r in _REMOTE_REASONS if key in low), None)
        reason = found or text[:160] or type(err).__name__
    return RasterError(f"{action} ({reason})", where)


def _open(gdal_path: str, where: str, remote: bool) -> rasterio.DatasetReader:
    """``rasterio.open`` whose failures become one :class:`RasterError` naming ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(gdal_path)
    except (RasterioError, CPLE_BaseError) as err:
        if remote:
            raise remote_error(err, where) from None
        reason = str(err).split(":")[-1].strip() or "unreadable"
        raise RasterError(f"not a readable raster ({reason})", where) from None


@dataclass(frozen=True)
class _Header:
    member: str
    gdal_path: str
    crs: CRS | None
    transform: rasterio.Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]


def _header(member: str, remote: bool) -> _Header:
    gdal_path = gdal_path_of(member)
    with _open(gdal_path, member, remote) as src:
        t = src.transform
        if t.b != 0 or t.d != 0:
            raise RasterError("is rotated; the tiles of a mosaic must be north-up", member)
        if src.width == 0 or src.height == 0 or src.count == 0 or t.a == 0 or t.e == 0:
            raise RasterError("raster has no pixels", member)
        by, bx = src.block_shapes[0]
        return _Header(
            member,
            gdal_path,
            src.crs if src.crs else None,
            t,
            src.width,
            src.height,
            src.count,
            src.dtypes[0],
            src.nodata,
            (int(bx), int(by)),
        )


_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _snap(value: float) -> float:
    """Pixel offsets a hair off a whole number (float noise in the transforms) -> whole."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 1e-6 else value


def _check_alike(headers: Sequence[_Header]) -> None:
    """Tiles of one sensor must share CRS and band count: else one line naming two files."""
    first = headers[0]
    for h in headers[1:]:
        if h.count != first.count:
            raise RasterError(
                f"has {h.count} band(s) but {first.member} has {first.count}; the tiles of "
                "one sensor must share their band count",
                h.member,
            )
        if (h.crs is None) != (first.crs is None) or (h.crs is not None and h.crs != first.crs):
            raise RasterError(
                f"is in {h.crs.to_string() if h.crs else 'no CRS'} but {first.member} in "
                f"{first.crs.to_string() if first.crs else 'no CRS'}; the tiles of one sensor "
                "must share their CRS (reproject them, or give them as separate sensors)",
                h.member,
            )


def mosaic_vrt(headers: Sequence[_Header]) -> tuple[str, list[tuple[float, float, float, float]]]:
    """A GDAL VRT document mosaicking ``headers`` at the finest pixel size, and footprints.

    Later tiles are drawn over earlier ones where they overlap, except where they hold
    nodata.
    """
    _check_alike(headers)
    resx = min(abs(h.transform.a) for h in headers)
    resy = min(abs(h.transform.e) for h in headers)
    boxes = []
    for h in headers:
        x0, y0 = h.transform.c, h.transform.f
        x1, y1 = x0 + h.width * h.transform.a, y0 + h.height * h.transform.e
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    left = min(b[0] for b in boxes)
    top = max(b[3] for b in boxes)
    width = max(1, round((max(b[2] for b in boxes) - left) / resx))
    height = max(1, round((top - min(b[1] for b in boxes)) / resy))
    dtypes = {h.dtype for h in headers}
    nodatas = {
        ("nan" if h.nodata is not None and math.isnan(h.nodata) else h.nodata) for h in headers
    }
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    if len(nodatas) == 1 and None not in nodatas:
        value = nodatas.pop()
        nodata = float("nan") if value == "nan" else float(value)  # type: ignore[arg-type]
    else:
        nodata = float("nan")
    if math.isnan(nodata) and not np.issubdtype(np.dtype(dtype), np.floating):
        dtype = "float32"  # integers without a common nodata: NaN marks the gaps
    gdal_type = _GDAL_TYPES.get(dtype)
    if gdal_type is None:
        raise RasterError(f"data type {dtype} cannot be mosaicked", headers[0].member)
    crs = headers[0].crs
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        parts.append(f"<SRS>{escape(crs.to_wkt())}</SRS>")
    parts.append(f"<GeoTransform>{left!r}, {resx!r}, 0, {top!r}, 0, {-resy!r}</GeoTransform>")
    for band in range(1, headers[0].count + 1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{band}">')
        parts.append(f"<NoDataValue>{_number(nodata)}</NoDataValue>")
        for h, box in zip(headers, boxes, strict=True):
            src_type = _GDAL_TYPES.get(h.dtype, "Float32")
            dx, dy = _snap((box[0] - left) / resx), _snap((top - box[3]) / resy)
            dw, dh = _snap((box[2] - box[0]) / resx), _snap((box[3] - box[1]) / resy)
            parts.append("<ComplexSource>")
            parts.append(
                f'<SourceFilename relativeToVRT="0">{escape(h.gdal_path)}</SourceFilename>'
            )
            parts.append(f"<SourceBand>{band}</SourceBand>")
            parts.append(
                f'<SourceProperties RasterXSize="{h.width}" RasterYSize="{h.height}" '
                f'DataType="{src_type}" BlockXSize="{h.block[0]}" BlockYSize="{h.block[1]}"/>'
            )
            parts.append(f'<SrcRect xOff="0" yOff="0" xSize="{h.width}" ySize="{h.height}"/>')
            parts.append(f'<DstRect xOff="{dx!r}" yOff="{dy!r}" xSize="{dw!r}" ySize="{dh!r}"/>')
            if h.nodata is not None:
                parts.append(f"<NODATA>{_number(h.nodata)}</NODATA>")
            parts.append("</ComplexSource>")
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts), boxes


def _headers(members: Sequence[str]) -> list[_Header]:
    """Every member's header; remote ones 8 at a time (each costs a round trip or two)."""

    def one(member: str) -> _Header:
        remote = is_url(member)
        with source_env(RasterSource(member, "", (member,), remote=remote)):
            return _header(member, remote)

    if sum(is_url(m) for m in members) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
            return list(pool.map(one, members))  # the first failing member's error, in order
    return [one(m) for m in members]


def source_from_members(members: Sequence[str], label: str) -> RasterSource:
    """A :class:`RasterSource` over ``members`` (local paths or URLs): one, or a mosaic.

    Raises:
        RasterError: an unreadable member, or members that differ in CRS or band count.
    """
    members = tuple(str(m) for m in members)
    if not members:
        raise RasterError("no raster to read", label)
    remote = any(is_url(m) for m in members)
    if len(members) == 1:
        return RasterSource(label, gdal_path_of(members[0]), members, remote=remote)
    headers = _headers(members)
    xml, boxes = mosaic_vrt(headers)
    return RasterSource(label, xml, members, tuple(boxes), remote=remote)


def _list_file(path: Path) -> list[str]:
    """Paths or URLs of a list file, one per line; relative paths from the list's folder."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RasterError(f"cannot read the list of rasters ({err})", path) from None
    members = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip() if not is_url(raw.strip()) else raw.strip()
        if not line:
            continue
        if is_url(line):
            members.append(line)
            continue
        member = Path(line) if Path(line).is_absolute() else path.parent / line
        if not member.is_file():
            raise RasterError(f"line {number}: {line} not found", path)
        members.append(str(member.resolve()))
    if not members:
        raise RasterError("the list names no raster", path)
    return members


def _plural(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def resolve_source(spec: str | Path | RasterSource, base_dir: Path | None = None) -> RasterSource:
    """What a user typed for one sensor -> a :class:`RasterSource` (see the module docstring).

    Args:
        spec: a file, glob, folder, list file (``.txt``/``.list``), ``.vrt`` or URL; a
            :class:`RasterSource` is returned as is.
        base_dir: folder relative paths and globs are taken from (default: the current
            folder).

    Raises:
        RasterError: nothing there, an unreadable tile, tiles that do not fit together.
    """
    if isinstance(spec, RasterSource):
        return spec
    text = str(spec).strip()
    if is_url(text):
        return source_from_members([text], text)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    path = Path(text).expanduser()
    full = path if path.is_absolute() else base / path
    if glob.has_magic(text):
        hits = sorted(p for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not hits:
            raise RasterError("no file matches this pattern", text)
        label = text if len(hits) == 1 else f"{text} ({_plural(len(hits))})"
        return source_from_members([str(Path(p).resolve()) for p in hits], label)
    if full.is_dir():
        hits = sorted(
            p for p in full.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
        )
        if not hits:
            raise RasterError(f"folder holds no raster ({', '.join(RASTER_SUFFIXES)})", text)
        label = f"{text.rstrip('/')}/ ({_plural(len(hits))})"
        return source_from_members([str(p.resolve()) for p in hits], label)
    if not full.is_file():
        raise RasterError("file not found", text)
    if full.suffix.lower() in LIST_SUFFIXES:
        members = _list_file(full)
        return source_from_members(members, f"{text} ({_plural(len(members))})")
    return source_from_members([str(full)], text)


def as_source(spec: str | Path | RasterSource) -> RasterSource:
    """Anything that names a raster -> a source, without checking it exists (used by readers)."""
    if isinstance(spec, RasterSource):
        return spec
    text = str(spec)
    return RasterSource(text, gdal_path_of(text), (text,), remote=is_url(text))
