"""Shared fixtures: a tiny prepared dataset in sgma's on-disk layout and a tiny checkpoint.

Everything is written into ``tmp_path`` from a fixed seed: small GeoTIFF tiles with a CRS,
an affine transform and NaN nodata, where the label is visible partly in RGB and partly in
the DSM, and the SAR swath ends mid-tile in some tiles (partial availability).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import HealthCheck, settings
from rasterio.transform import from_origin

from sgma_cli.config.checkpoint import Checkpoint, CheckpointMeta, ModalityNorm, save_checkpoint
from sgma_cli.config.dataset import (
    BandStats,
    ClassSpec,
    DatasetManifest,
    ModalityEntry,
    save_manifest,
    tile_dir,
)
from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.engine.weights import build_model
from tests.tiled_region import RangeServer, TiledRegion, make_tiled_region, serve

torch.set_num_threads(min(2, torch.get_num_threads()))

# Fuzzing profiles (tests/fuzz): "quick" runs in `make test` (fixed examples, so the suite is
# repeatable), "slow" under `-m slow` (>= 1,000 fresh examples per target).
_FUZZ = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("quick", max_examples=25, derandomize=True, **_FUZZ)
settings.register_profile("slow", max_examples=1000, **_FUZZ)
settings.load_profile("quick")

TINY_CLASSES = [("ground", (255, 255, 255)), ("building", (0, 0, 255)), ("tree", (0, 255, 0))]
TINY_MODALITIES = [("rgb", 3, True), ("dsm", 1, False), ("sar", 1, False)]
TINY_CRS = "EPSG:32633"


def _write(
    path: Path, array: np.ndarray, transform: object, nodata: float | None, dtype: str
) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=array.shape[-1],
        height=array.shape[-2],
        count=array.shape[0],
        dtype=dtype,
        crs=TINY_CRS,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(array.astype(dtype))


def make_tiny_dataset(
    root: Path, tile: int = 64, tiles: dict[str, int] | None = None, seed: int = 0
) -> Path:
    """Write a prepared dataset with 3 classes and rgb/dsm/sar tiles; return its folder."""
    tiles = tiles or {"train": 4, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in tiles.items():
        for t in range(count):
            label = np.zeros((tile, tile), dtype=np.uint8)
            for _ in range(4):
                cls = rng.integers(1, 3)
                y, x = rng.integers(0, tile - 16, size=2)
                h, w = rng.integers(8, 24, size=2)
                label[y : y + h, x : x + w] = cls
            label[:2, :2] = 255  # a few unlabelled pixels
            rgb = np.stack(
                [
                    np.where(label == 2, 60, 160),
                    np.where(label == 2, 140, 150),
                    np.full_like(label, 120),
                ]
            )
            rgb = rgb + rng.normal(0, 10, rgb.shape)
            dsm = np.where(label == 1, 12.0, np.where(label == 2, 8.0, 0.5))[None] + rng.normal(
                0, 0.5, (1, tile, tile)
            )
            sar = np.where(label == 1, -2.0, -15.0)[None] + rng.normal(0, 1.0, (1, tile, tile))
            mask = np.ones((3, tile, tile), dtype=np.uint8)
            if t % 2 == 1:  # the SAR swath ends mid-tile
                sar[:, :, tile // 2 :] = np.nan
                mask[2, :, tile // 2 :] = 0
            folder = tile_dir(root, split, f"{split}_{t:03d}")
            folder.mkdir(parents=True, exist_ok=True)
            transform = from_origin(500000 + 1000 * t, 5800000, 0.5, 0.5)
            _write(folder / "rgb.tif", rgb, transform, float("nan"), "float32")
            _write(folder / "dsm.tif", dsm, transform, float("nan"), "float32")
            _write(folder / "sar.tif", sar, transform, float("nan"), "float32")
            _write(folder / "mask.tif", mask, transform, None, "uint8")
            _write(folder / "label.tif", label[None], transform, 255, "uint8")
    stats = {
        "rgb": BandStats(
            mean=[120.0, 145.0, 120.0],
            std=[45.0, 10.0, 10.0],
            p2=[50.0, 130.0, 100.0],
            p98=[180.0, 160.0, 140.0],
        ),
        "dsm": BandStats(mean=[4.0], std=[5.0], p2=[0.0], p98=[12.0]),
        "sar": BandStats(mean=[-12.0], std=[5.0], p2=[-18.0], p98=[0.0]),
    }
    manifest = DatasetManifest(
        name="tiny",
        crs=TINY_CRS,
        resolution=(0.5, 0.5),
        tile_size=tile,
        stride=tile,
        classes=[ClassSpec(name=n, color=c) for n, c in TINY_CLASSES],
        modalities=[
            ModalityEntry(name=n, bands=b, optical=o, stats=stats[n]) for n, b, o in TINY_MODALITIES
        ],
        splits=dict(tiles),
    )
    save_manifest(manifest, root)
    return root


def make_tiny_checkpoint(
    path: Path, backbone: str = "test_convnext", fusion: str = "sgf", seed: int = 0
) -> Path:
    """Save an (untrained, seeded) model for the tiny dataset as an sgma checkpoint."""
    torch.manual_seed(seed)
    config = SGMAConfig(
        modalities=tuple(ModalitySpec(n, b) for n, b, _ in TINY_MODALITIES),
        num_classes=len(TINY_CLASSES),
        backbone=backbone,
        fusion=fusion,  # type: ignore[arg-type]
        head_dim=32,
    )
    model = build_model(config)
    stats = {
        "rgb": ([120.0, 145.0, 120.0], [45.0, 10.0, 10.0]),
        "dsm": ([4.0], [5.0]),
        "sar": ([-12.0], [5.0]),
    }
    meta = CheckpointMeta(
        model=config.to_dict(),
        classes=[ClassSpec(name=n, color=c) for n, c in TINY_CLASSES],
        modalities=[
            ModalityNorm(name=n, bands=b, mean=stats[n][0], std=stats[n][1], optical=o)
            for n, b, o in TINY_MODALITIES
        ],
        crs=TINY_CRS,
        resolution=(0.5, 0.5),
        tile_size=64,
    )
    return save_checkpoint(path, Checkpoint(meta=meta, model=model.state_dict()))


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A prepared dataset folder (3 classes; rgb, dsm, sar; 64 px tiles; 4/2/2 tiles)."""
    return make_tiny_dataset(tmp_path / "data")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained test_convnext SGMA checkpoint matching ``tiny_dataset``."""
    return make_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture
def dataset_factory(tmp_path: Path) -> Callable[..., Path]:
    """Call with ``(name, **kwargs)`` to write another tiny dataset under tmp_path."""

    def factory(name: str = "data2", **kwargs: object) -> Path:
        return make_tiny_dataset(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return factory


# --------------------------------------------------------------------- scenes (predict)
TINY_SCENE_ORIGIN = (500000.0, 5800000.0)


def make_tiny_scene(root: Path, size: int = 160, seed: int = 0, dsm_hole: bool = True) -> Path:
    """Write a scene folder for ``sgma predict``: rgb, dsm, sar and labels GeoTIFFs.

    RGB uint8 at 0.5 m and DSM float32 at 1 m (nodata -9999, with a hole in the bottom
    right quarter, outside the SAR swath, when ``dsm_hole``) in EPSG:32633; SAR float32 dB
    in EPSG:3857 at ~1.5 m whose swath (NaN outside) ends at the middle column of the scene.
    ``size`` is the
    RGB side in pixels (even). ``labels.tif``: uint8 classes (``TINY_CLASSES``) on the RGB grid.
    """
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(max(4, size // 12)):
        cls = rng.integers(1, 3)
        y, x = rng.integers(0, size - 16, size=2)
        h, w = rng.integers(8, 30, size=2)
        label[y : y + h, x : x + w] = cls
    x0, y0 = TINY_SCENE_ORIGIN
    rgb_t = from_origin(x0, y0, 0.5, 0.5)
    rgb = np.stack(
        [np.where(label == 2, 60, 160), np.where(label == 2, 140, 150), np.full_like(label, 120)]
    )
    rgb = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
    with rasterio.open(
        root / "rgb.tif",
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=TINY_CRS,
        transform=rgb_t,
    ) as dst:
        dst.write(rgb)
    with rasterio.open(
        root / "labels.tif",
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype="uint8",
        crs=TINY_CRS,
        transform=rgb_t,
        nodata=255,
    ) as dst:
        dst.write(label[None])
    half = label[::2, ::2]
    dsm = (
        np.where(half == 1, 12.0, np.where(half == 2, 8.0, 0.5)) + rng.normal(0, 0.5, half.shape)
    ).astype(np.float32)
    if dsm_hole:
        dsm[size // 4 :, size // 4 :] = -9999.0
    with rasterio.open(
        root / "dsm.tif",
        "w",
        driver="GTiff",
        width=size // 2,
        height=size // 2,
        count=1,
        dtype="float32",
        crs=TINY_CRS,
        transform=from_origin(x0, y0, 1.0, 1.0),
        nodata=-9999.0,
    ) as dst:
        dst.write(dsm[None])
    sar_src = (np.where(label == 1, -2.0, -15.0) + rng.normal(0, 1.0, label.shape)).astype(
        np.float32
    )
    sar_src[:, size // 2 :] = np.nan  # the swath ends mid-scene
    left, top = x0, y0
    right, bottom = x0 + size * 0.5, y0 - size * 0.5
    transform, width, height = calculate_default_transform(
        TINY_CRS, "EPSG:3857", size, size, left, bottom, right, top, resolution=1.5 * 1.55
    )
    sar = np.full((1, height, width), np.nan, np.float32)
    reproject(
        sar_src[None],
        sar,
        src_transform=rgb_t,
        src_crs=TINY_CRS,
        src_nodata=np.nan,
        dst_transform=transform,
        dst_crs="EPSG:3857",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    with rasterio.open(
        root / "sar.tif",
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs="EPSG:3857",
        transform=transform,
        nodata=float("nan"),
    ) as dst:
        dst.write(sar)
    return root


@pytest.fixture
def tiny_scene(tmp_path: Path) -> Path:
    """A 160 px scene: rgb 0.5 m, dsm 1 m with a hole, sar in EPSG:3857 ending mid-scene."""
    return make_tiny_scene(tmp_path / "scene")


# ------------------------------------------------ sensor sources: tiled region, HTTP ranges
@pytest.fixture
def tiled_region(tmp_path: Path) -> TiledRegion:
    """The tiny scene as single files (``merged/``) and as tilings: 3x3 RGB COGs, a 2x2
    DSM tiling in EPSG:3857 with a gap (see ``tests/tiled_region.py``)."""
    return make_tiled_region(tmp_path / "region")


@pytest.fixture
def range_server(tiled_region: TiledRegion) -> Iterator[RangeServer]:
    """``tiled_region.root`` served on 127.0.0.1 with HTTP range requests (bytes counted)."""
    with serve(tiled_region.root) as server:
        yield server
