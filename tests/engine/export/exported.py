"""Files exported from the tiny checkpoint, each made once per test session.

Tracing and converting even a tiny model takes seconds, so the export tests, the predict
``--model`` tests and the CLI tests share these files (``functools.cache`` in one temporary
folder) instead of exporting in every test.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.data.scene import find_sensor_files, open_scene
from sgma_cli.data.window_grid import window_grid
from sgma_cli.engine.export import ExportJob, ExportResult, run_export
from sgma_cli.engine.predict.inference import batches_of, read_batches
from sgma_cli.engine.weights import load_model
from tests.conftest import make_tiny_checkpoint, make_tiny_scene

__all__ = ["BACKBONE", "SCENE_SIZE", "tiny_scene", "tiny_checkpoint", "exported"]

#: The tiny timm backbone of the shared checkpoint (the fastest to trace).
BACKBONE = "test_resnet"
SCENE_SIZE = 128
_ROOT = Path(tempfile.mkdtemp(prefix="sgma-export-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


@functools.cache
def tiny_scene() -> Path:
    """A 128 px scene folder (see ``tests.conftest.make_tiny_scene``)."""
    return make_tiny_scene(_ROOT / "scene", size=SCENE_SIZE)


#: Training steps of :func:`tiny_checkpoint`.
STEPS = 30


@functools.cache
def tiny_checkpoint() -> Path:
    """The tiny checkpoint (rgb 3, dsm 1, sar 1 bands; 3 classes; 64 px tiles), trained
    :data:`STEPS` full-scene steps on :func:`tiny_scene` so that its maps are not one
    class, with every sensor and with DSM + SAR alone."""
    path = make_tiny_checkpoint(_ROOT / "untrained.pt", backbone=BACKBONE)
    torch.manual_seed(0)
    model, meta = load_model(path)
    scene = open_scene(
        find_sensor_files(tiny_scene(), meta.modality_names),
        {m.name: m.bands for m in meta.modalities},
    )
    windows = window_grid(SCENE_SIZE, SCENE_SIZE, SCENE_SIZE, 0.0)
    batch = next(read_batches(scene, meta, batches_of(windows, 1)))
    images = {k: torch.from_numpy(v) for k, v in batch.images.items()}
    mask = torch.from_numpy(batch.mask)
    with rasterio.open(tiny_scene() / "labels.tif") as src:
        label = torch.from_numpy(src.read(1).astype(np.int64))[None]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3)
    for step in range(STEPS):  # every sensor, then DSM + SAR alone, in turn
        given = images if step % 2 == 0 else {k: images[k] for k in ("dsm", "sar")}
        loss = F.cross_entropy(model(given, mask).logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = _ROOT / "tiny.pt"
    return save_checkpoint(out, Checkpoint(load_checkpoint(path).meta, model.state_dict()))


@functools.cache
def exported(
    fmt: str = "onnx",
    *,
    dynamic: bool = True,
    robustness: bool = True,
    modalities: tuple[str, ...] | None = None,
    size: int = 64,
) -> ExportResult:
    """The tiny checkpoint exported once with these options."""
    name = f"{fmt}-{dynamic}-{robustness}-{'-'.join(modalities or ('all',))}-{size}"
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    job = ExportJob(
        tiny_checkpoint(),
        _ROOT / f"{name}{suffix}",
        format=fmt,  # type: ignore[arg-type]
        modalities=list(modalities) if modalities else None,
        size=size,
        dynamic=dynamic,
        robustness=robustness,
    )
    return run_export(job)
