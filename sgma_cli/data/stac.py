"""Sensor sources from STAC: items' assets as one mosaic per modality (pystac).

``--stac ITEMS`` names an ItemCollection (a GeoJSON ``FeatureCollection`` of items, what
a STAC API search returns), a single item, a catalog or a collection (every item under
it, recursively), as a local file or an ``http(s)`` URL. ``--asset rgb=visual --asset
dsm=dsm`` maps asset keys to modalities: each modality becomes a
:class:`~sgma_cli.data.sources.RasterSource` over those assets' hrefs, one mosaic
across the items (relative hrefs are taken from the item's own location, else from the
file that holds it). :func:`read_stac` also returns each item's id, footprint and
datetime, for the plan a command prints.

Errors are one line each: an unreadable or missing catalog, a file that is not STAC, an
item without the named asset (naming the item, the key and the keys it has).
"""

from __future__ import annotations

import json
import os
import posixpath
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pystac
from pystac.stac_io import DefaultStacIO

from sgma_cli.data.sources import REMOTE_OPTIONS, RasterSource, source_from_members
from sgma_cli.errors import RasterError, UsageError

__all__ = ["StacItemInfo", "StacSources", "parse_asset_option", "read_stac"]


@dataclass(frozen=True)
class StacItemInfo:
    """What a plan shows of one item.

    Attributes:
        id: the item id.
        bbox: ``(west, south, east, north)`` in WGS 84 (the item's ``bbox``, else the
            bounds of its geometry), or ``None``.
        datetime: ISO 8601 text (``datetime``, else ``start_datetime/end_datetime``), or ``""``.
    """

    id: str
    bbox: tuple[float, float, float, float] | None
    datetime: str

    def describe(self) -> str:
        """One line: ``id  bbox W,S,E,N  datetime``."""
        box = ", ".join(f"{v:.5f}" for v in self.bbox) if self.bbox else "no bbox"
        return f"{self.id}  [{box}]  {self.datetime or 'no datetime'}"


@dataclass(frozen=True)
class StacSources:
    """The modalities read from STAC items, and the items.

    Attributes:
        href: the STAC file or URL given.
        sources: ``{modality: RasterSource}`` in ``--asset`` order.
        items: the items, in the file's order.
    """

    href: str
    sources: dict[str, RasterSource]
    items: tuple[StacItemInfo, ...]


def parse_asset_option(pairs: Sequence[str]) -> dict[str, str]:
    """``["rgb=visual", "dsm=dsm"]`` -> ``{"rgb": "visual", "dsm": "dsm"}``."""
    from sgma_cli.data.plan import NAME_RE

    mapping: dict[str, str] = {}
    for text in pairs:
        name, sep, key = (p.strip() for p in text.partition("="))
        if not sep or not name or not key:
            raise UsageError(f"--asset {text!r}: expected MODALITY=ASSET_KEY, e.g. rgb=visual")
        if not NAME_RE.match(name):
            raise UsageError(f"--asset {text!r}: name {name!r} may hold only letters, digits, _")
        if name in mapping:
            raise UsageError(f"--asset {name!r} given twice")
        mapping[name] = key
    return mapping


def _is_http(href: str) -> bool:
    return urlparse(href).scheme in ("http", "https")


class _TimedStacIO(DefaultStacIO):
    """pystac's reader with a timeout on http (the default one can wait for ever)."""

    def read_text_from_href(self, href: str) -> str:
        if not _is_http(href):
            return super().read_text_from_href(href)
        timeout = float(os.environ.get("GDAL_HTTP_TIMEOUT", REMOTE_OPTIONS["GDAL_HTTP_TIMEOUT"]))
        request = urllib.request.Request(href, headers={"User-Agent": "sgma", **self.headers})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return str(response.read().decode("utf-8"))


def _reason(err: BaseException) -> str:
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return f"HTTP {cause.code}" + (" not found" if cause.code == 404 else "")
    if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
        return "timed out (GDAL_HTTP_TIMEOUT)"
    if isinstance(cause, urllib.error.URLError):
        return f"cannot connect ({cause.reason})"
    if isinstance(cause, FileNotFoundError):
        return "file not found"
    if isinstance(cause, json.JSONDecodeError):
        return f"not JSON (line {cause.lineno})"
    return " ".join(str(cause).split())[:160] or type(cause).__name__


def _base_of(href: str) -> str:
    """The folder (or URL folder) a STAC file lives in, for relative hrefs."""
    if _is_http(href):
        return urljoin(href, ".")
    return str(Path(href).resolve().parent)


def _absolute(href: str, base: str) -> str:
    """An asset href made absolute from ``base`` (a folder path or URL folder)."""
    if "://" in href or Path(href).is_absolute():
        return href
    if _is_http(base):
        return urljoin(base, href)
    return posixpath.normpath(str(Path(base) / href))


def _items(href: str, stac_io: DefaultStacIO) -> tuple[list[pystac.Item], str]:
    """Every item of ``href`` and the folder its relative hrefs start from."""
    base = _base_of(href)
    text = stac_io.read_text(href)
    data: Any = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a STAC object (a JSON object was expected)")
    kind = data.get("type")
    if kind == "FeatureCollection":
        collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
        return list(collection.items), base
    if kind == "Feature":
        item = pystac.Item.from_dict(data)
        item.set_self_href(href if _is_http(href) else str(Path(href).resolve()))
        return [item], base
    if kind in ("Catalog", "Collection"):
        cat = pystac.read_file(href if _is_http(href) else str(Path(href).resolve()), stac_io)
        if not isinstance(cat, pystac.Catalog):
            raise ValueError(f"not a catalog ({type(cat).__name__})")
        return list(cat.get_items(recursive=True)), base
    raise ValueError(f"type {kind!r} is not a STAC ItemCollection, Item, Catalog or Collection")


def _info(item: pystac.Item) -> StacItemInfo:
    bbox: tuple[float, float, float, float] | None = None
    if item.bbox and len(item.bbox) >= 4:
        b = [float(v) for v in item.bbox]
        bbox = (b[0], b[1], b[-2], b[-1]) if len(b) == 6 else (b[0], b[1], b[2], b[3])
    elif item.geometry:
        from shapely.geometry import shape

        bbox = tuple(float(v) for v in shape(item.geometry).bounds)  # type: ignore[assignment]
    when = ""
    if item.datetime is not None:
        when = item.datetime.isoformat()
    else:
        start = item.properties.get("start_datetime")
        end = item.properties.get("end_datetime")
        when = f"{start}/{end}" if start or end else ""
    return StacItemInfo(item.id, bbox, when)


def read_stac(href: str | Path, assets: Mapping[str, str]) -> StacSources:
    """The modalities named in ``assets`` (``{modality: asset key}``) from STAC ``href``.

    Args:
        href: ItemCollection, Item, Catalog or Collection JSON: a path or an http(s) URL.
        assets: ``--asset`` pairs, ``{modality: asset key}``.

    Raises:
        UsageError: no ``--asset`` given.
        RasterError: unreadable or non-STAC file, no items, an item without a named
            asset, unreadable or ill-fitting asset rasters.
    """
    href = str(href)
    if not assets:
        raise UsageError("--stac needs at least one --asset MODALITY=KEY, e.g. --asset rgb=visual")
    stac_io = _TimedStacIO()
    try:
        items, base = _items(href, stac_io)
    except RasterError:
        raise
    except Exception as err:  # noqa: BLE001 - pystac, urllib and json raise many kinds
        raise RasterError(f"cannot read the STAC file ({_reason(err)})", href) from None
    if not items:
        raise RasterError("the STAC file holds no items", href)
    members: dict[str, list[str]] = {m: [] for m in assets}
    for item in items:
        item_base = _base_of(item.get_self_href()) if item.get_self_href() else base
        for modality, key in assets.items():
            asset = item.assets.get(key)
            if asset is None:
                have = ", ".join(sorted(item.assets)) or "none"
                raise RasterError(
                    f"item {item.id!r} has no asset {key!r} (for {modality}); its assets: {have}",
                    href,
                )
            members[modality].append(_absolute(asset.href, item_base))
    sources = {}
    for modality, hrefs in members.items():
        label = (
            f"{href} asset {assets[modality]!r} ({len(hrefs)} items)"
            if len(hrefs) > 1
            else hrefs[0]
        )
        sources[modality] = source_from_members(hrefs, label)
    return StacSources(href, sources, tuple(_info(i) for i in items))
