"""Read the tiles ``sgma prepare`` wrote: a PyTorch dataset over one split.

Each sample keeps its georeference beside the pixels, TorchGeo style::

    {"image": {name: float32 (C_m, H, W) normalised},   # modalities asked for
     "mask": bool (M, H, W),                            # availability, in that order
     "label": int64 (H, W),                             # ignore_index where unlabelled
     "tile_id": str, "crs": str, "transform": (a, b, c, d, e, f)}

The layout is described in :mod:`sgma_cli.config.dataset`. An optional ``transform``
callable sees the raw float32 arrays (before normalisation), so photometric
augmentations act on sensor values, and returns the same dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioIOError
from torch.utils.data import Dataset

from sgma_cli.config.dataset import DatasetManifest, load_manifest
from sgma_cli.data.normalize import normalize
from sgma_cli.errors import DatasetError, RasterError

__all__ = ["TileDataset", "RawSample", "list_tiles"]

#: A sample before normalisation: numpy arrays, see the module docstring.
RawSample = dict[str, Any]


def list_tiles(data_dir: Path, split: str) -> list[Path]:
    """Sorted tile folders of ``split`` (only complete ones: each is renamed into place)."""
    root = Path(data_dir) / "tiles" / split
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read(
    path: Path, size: int | None = None, bands: int | None = None
) -> tuple[np.ndarray, Any, tuple[float, ...], float | None]:
    """One tile file's pixels and georeference; ``size`` and ``bands``: the side and band
    count it must have (checked from the header, before any array is allocated)."""
    try:
        with rasterio.open(path) as src:
            wrong_size = size is not None and (src.height, src.width) != (size, size)
            if wrong_size or (bands is not None and src.count != bands):
                raise RasterError(
                    f"tile raster is {src.count} x {src.height} x {src.width}, not the "
                    f"dataset's {bands or '?'} x {size or '?'} x {size or '?'}: damaged, or "
                    "not from this dataset",
                    path,
                )
            return src.read(), src.crs, tuple(src.transform)[:6], src.nodata
    except RasterioIOError as err:
        reason = " ".join(str(err).split())[:160]
        raise RasterError(f"cannot read tile raster ({reason})", path) from None


class TileDataset(Dataset):
    """One split of a prepared dataset.

    Args:
        data_dir: the folder ``sgma prepare`` wrote.
        split: ``"train"``, ``"val"`` or ``"test"``.
        modalities: which modalities to load and their order (default: the manifest's).
        stats: ``{name: (mean, std)}`` per band for normalisation (default: the manifest's;
            evaluate passes the checkpoint's).
        transform: optional augmentation on the raw sample (numpy arrays).
        manifest: an already loaded manifest (default: read ``dataset.toml``).
    """

    def __init__(
        self,
        data_dir: Path,
        split: str,
        modalities: Sequence[str] | None = None,
        stats: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
        transform: Callable[[RawSample], RawSample] | None = None,
        manifest: DatasetManifest | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.manifest = manifest if manifest is not None else load_manifest(self.data_dir)
        self.split = split
        names = self.manifest.modality_names
        self.modalities = list(modalities) if modalities is not None else list(names)
        unknown = [m for m in self.modalities if m not in names]
        if unknown:
            raise DatasetError(
                f"modalities {unknown} are not in the dataset (it has {names})", self.data_dir
            )
        self._band_of = [names.index(m) for m in self.modalities]
        if stats is None:
            stats = {}
            for name in self.modalities:
                entry = self.manifest.modality(name)
                if entry.stats is None:
                    raise DatasetError(
                        f"modality {name} has no statistics in dataset.toml", self.data_dir
                    )
                stats[name] = (entry.stats.mean, entry.stats.std)
        self.stats = dict(stats)
        self.transform = transform
        self.tiles = list_tiles(self.data_dir, split)

    def __len__(self) -> int:
        return len(self.tiles)

    def read_raw(self, index: int) -> RawSample:
        """The sample at ``index`` before normalisation (numpy arrays)."""
        folder = self.tiles[index]
        size = self.manifest.tile_size
        images: dict[str, np.ndarray] = {}
        crs, transform = None, None
        for name in self.modalities:
            bands = self.manifest.modality(name).bands
            images[name], crs, transform, _ = _read(folder / f"{name}.tif", size, bands)
            images[name] = images[name].astype(np.float32, copy=False)
        mask_all, _, _, _ = _read(folder / "mask.tif", size, len(self.manifest.modalities))
        mask = mask_all[self._band_of].astype(bool)
        label_path = folder / "label.tif"
        height, width = mask.shape[-2:]
        if label_path.exists():
            label = _read(label_path, size)[0][0].astype(np.int64)
        else:
            label = np.full((height, width), self.manifest.ignore_index, dtype=np.int64)
        return {
            "image": images,
            "mask": mask,
            "label": label,
            "tile_id": folder.name,
            "crs": crs.to_string() if crs is not None else "",
            "transform": transform,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.read_raw(index)
        if self.transform is not None:
            sample = self.transform(sample)
        mask = sample["mask"]
        images = {}
        for j, name in enumerate(self.modalities):
            mean, std = self.stats[name]
            images[name] = torch.from_numpy(normalize(sample["image"][name], mean, std, mask[j]))
        return {
            "image": images,
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "label": torch.from_numpy(np.ascontiguousarray(sample["label"])),
            "tile_id": sample["tile_id"],
            "crs": sample["crs"],
            "transform": torch.tensor(sample["transform"], dtype=torch.float64),
        }
