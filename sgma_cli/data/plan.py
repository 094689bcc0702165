"""The result of discovery: scenes x modalities (+ labels), as :class:`Plan`.

Shared by :mod:`sgma_cli.data.discovery` (options, sample folder, scene folders) and
:mod:`sgma_cli.data.presets` (Potsdam, DFC2023, DELIVER layouts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sgma_cli.data.labels import LabelSource
from sgma_cli.data.palettes import Palette
from sgma_cli.data.sources import RasterSource

__all__ = ["ModalitySource", "Scene", "Plan", "scene_key", "RASTER_EXT", "OPTICAL", "NAME_RE"]

RASTER_EXT = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt"}
OPTICAL = {"rgb", "nir", "rgbir", "irrg", "img"}
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class ModalitySource:
    """One sensor raster of one scene.

    Attributes:
        name: modality name (``rgb``, ``dsm``...).
        path: the raster file, or a :class:`~sgma_cli.data.sources.RasterSource` (a mosaic
            of tiles, a URL, STAC assets).
        bands: 1-based bands to take, ``None`` for all.
        same_grid_as_reference: a raster without CRS known (by its preset) to share the
            reference's pixel grid, e.g. Potsdam's nDSM JPEGs.
    """

    name: str
    path: Path | RasterSource
    bands: tuple[int, ...] | None = None
    same_grid_as_reference: bool = False


@dataclass(frozen=True)
class Scene:
    """One area: its modalities, optional labels and optional official split."""

    name: str
    modalities: dict[str, ModalitySource]
    labels: LabelSource | None = None
    split: str | None = None


@dataclass
class Plan:
    """Scenes x modalities found in a source folder.

    Attributes:
        source: the source folder.
        layout: ``sample``, ``folders``, ``options`` or a preset name.
        scenes: scenes in a stable order.
        modalities: modality names in manifest order (first = default reference).
        optical: modality names whose bands are photometric.
        palette: class palette when the layout implies one.
        notes: human lines saying which folder was taken for what.
        tile: default (tile, stride) of the layout, or ``None``.
    """

    source: Path
    layout: str
    scenes: list[Scene]
    modalities: list[str]
    optical: set[str] = field(default_factory=set)
    palette: Palette | None = None
    notes: list[str] = field(default_factory=list)
    tile: tuple[int, int] | None = None


def scene_key(path: Path, token: str = "") -> str:
    """Scene key of a file: its stem, lower case, without the modality token."""
    stem = path.stem.lower()
    if token and len(stem) > len(token):
        stem = re.sub(rf"(^|[_\-.]){re.escape(token.lower())}($|[_\-.])", r"\1\2", stem)
    return re.sub(r"[_\-.]+", "_", stem).strip("_") or path.stem.lower()
