"""The dataset manifest, ``DATA_DIR/dataset.toml``: the one schema for prepared datasets.

``sgma prepare`` writes it; ``train``, ``evaluate`` and ``predict`` read it (and the
checkpoint copies its classes and modality statistics). The on-disk layout it describes:

``DATA_DIR/dataset.toml``
    this manifest.
``DATA_DIR/index.gpkg``
    layer ``tiles``: one footprint polygon per tile (CRS of the dataset) with columns
    ``tile_id``, ``scene``, ``split``, ``path`` (tile folder relative to DATA_DIR),
    ``coverage_<modality>`` (fraction of pixels that modality saw) and
    ``pixels_<class name>`` (label histogram).
``DATA_DIR/tiles/<split>/<tile_id>/<modality>.tif``
    one GeoTIFF per modality, ``bands`` bands, float32, aligned on the reference grid,
    nodata = NaN (also written as the GeoTIFF nodata value).
``DATA_DIR/tiles/<split>/<tile_id>/mask.tif``
    uint8, M bands in manifest modality order: 1 where that modality saw the pixel.
``DATA_DIR/tiles/<split>/<tile_id>/label.tif``
    uint8 class indices, ``ignore_index`` where unlabelled (absent for unlabelled tiles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import Field, ValidationError, model_validator

from sgma_cli.config._base import (
    NamedClassesAndModalities,
    StrictModel,
    explain_validation_error,
    read_toml,
)
from sgma_cli.errors import DatasetError

__all__ = [
    "MANIFEST_NAME",
    "INDEX_NAME",
    "ClassSpec",
    "BandStats",
    "ModalityEntry",
    "DatasetManifest",
    "load_manifest",
    "save_manifest",
    "tile_dir",
]

MANIFEST_NAME = "dataset.toml"
INDEX_NAME = "index.gpkg"
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]


class ClassSpec(StrictModel):
    """One segmentation class: its name and display colour (RGB 0-255)."""

    name: str = Field(min_length=1)
    color: tuple[int, int, int] = (0, 0, 0)


class BandStats(StrictModel):
    """Per-band statistics of one modality over the training split."""

    mean: list[float]
    std: list[float]
    p2: list[float]
    p98: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> BandStats:
        if not (len(self.mean) == len(self.std) == len(self.p2) == len(self.p98)):
            raise ValueError("mean, std, p2 and p98 need one value per band")
        return self


class ModalityEntry(StrictModel):
    """A sensor of the dataset.

    ``optical`` marks bands where photometric augmentation makes sense (RGB, NIR), not
    physical quantities such as height or backscatter.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    bands: int = Field(gt=0)
    optical: bool = False
    stats: BandStats | None = None
    source: str = ""
    resampling: str = "bilinear"

    @model_validator(mode="after")
    def _stats_per_band(self) -> ModalityEntry:
        if self.stats is not None and len(self.stats.mean) != self.bands:
            raise ValueError(
                f"modality {self.name}: stats have {len(self.stats.mean)} bands, "
                f"expected {self.bands}"
            )
        return self


class DatasetManifest(NamedClassesAndModalities):
    """Everything about a prepared dataset that is not pixels."""

    format_version: int = 1
    name: str = "dataset"
    sgma_version: str = ""
    crs: str | None = None
    resolution: tuple[float, float] | None = None
    tile_size: int = Field(gt=0)
    stride: int = Field(gt=0)
    ignore_index: int = Field(default=255, ge=0, le=255)
    classes: list[ClassSpec] = Field(min_length=2)
    modalities: list[ModalityEntry] = Field(min_length=1)
    splits: dict[str, int] = Field(default_factory=dict)
    class_pixels: list[int] = Field(default_factory=list)
    provenance: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if self.class_pixels and len(self.class_pixels) != len(self.classes):
            raise ValueError("class_pixels needs one count per class")
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
        return self

    def modality(self, name: str) -> ModalityEntry:
        """The entry of modality ``name`` (``KeyError`` if absent)."""
        for entry in self.modalities:
            if entry.name == name:
                return entry
        raise KeyError(name)


def tile_dir(data_dir: Path, split: str, tile_id: str) -> Path:
    """Folder of one tile: ``DATA_DIR/tiles/<split>/<tile_id>``."""
    return Path(data_dir) / "tiles" / split / tile_id


def load_manifest(data_dir: Path) -> DatasetManifest:
    """Read and validate ``DATA_DIR/dataset.toml``; problems raise :class:`DatasetError`."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME if data_dir.is_dir() or not data_dir.suffix else data_dir
    if not path.exists():
        raise DatasetError(f"no {MANIFEST_NAME} here; run `sgma prepare` first", path.parent)
    raw = read_toml(path, DatasetError)
    try:
        return DatasetManifest.model_validate(raw)
    except ValidationError as err:
        raise DatasetError(explain_validation_error(err, DatasetManifest), path) from None


def save_manifest(manifest: DatasetManifest, data_dir: Path) -> Path:
    """Write ``DATA_DIR/dataset.toml`` atomically (temp name, then rename)."""
    path = Path(data_dir) / MANIFEST_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    payload = manifest.model_dump(mode="json", exclude_none=True)
    tmp.write_text(tomli_w.dumps(payload))
    tmp.replace(path)
    return path
