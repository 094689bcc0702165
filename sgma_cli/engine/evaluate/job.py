"""The ``sgma evaluate`` jobs: a checkpoint on a prepared split, or on a whole scene.

Both check that the data fits the checkpoint (classes, sensors, bands), pick the
modality subsets, and score every subset with
:func:`~sgma_cli.engine.evaluate.scoring.evaluate_subsets` (tiles) or through
``sgma predict``'s sliding windows (scenes). :mod:`sgma_cli.engine.evaluate.report` renders the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.config.dataset import DatasetManifest, load_manifest
from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.engine.device import autocast, resolve_device
from sgma_cli.engine.evaluate.scoring import (
    Progress,
    SubsetEvaluation,
    accumulate_robustness,
    evaluate_subsets,
)
from sgma_cli.engine.metrics import confusion_matrix
from sgma_cli.engine.subsets import all_subsets, parse_subsets
from sgma_cli.engine.weights import load_model
from sgma_cli.errors import CheckpointError, DatasetError, UsageError

__all__ = [
    "CheckpointEvaluation",
    "recipe_data_dir",
    "check_compatible",
    "evaluate_checkpoint",
    "evaluate_scene",
]


@dataclass(frozen=True)
class CheckpointEvaluation:
    """One checkpoint evaluated on one split: what ``sgma evaluate`` reports.

    Attributes:
        checkpoint: the checkpoint file.
        meta: its metadata (class names, modalities, recipe).
        data_dir: the prepared dataset used.
        split: the split evaluated.
        tiles: number of tiles.
        result: confusion matrices, metrics and robustness per subset.
        skipped: model modalities the dataset lacks (subsets using them were left out).
        seconds: wall time of the evaluation loop.
    """

    checkpoint: Path
    meta: CheckpointMeta
    data_dir: Path
    split: str
    tiles: int
    result: SubsetEvaluation
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0


def recipe_data_dir(meta: CheckpointMeta, checkpoint: Path) -> Path | None:
    """The dataset the checkpoint was trained on (``meta.recipe["data"]["dir"]``) if it still exists.

    Relative paths are tried from the current folder, then from the checkpoint's folder.
    """
    data = meta.recipe.get("data") if isinstance(meta.recipe, dict) else None
    value = data.get("dir") if isinstance(data, dict) else data if isinstance(data, str) else None
    if not value:
        return None
    path = Path(str(value)).expanduser()
    candidates = (
        [path]
        if path.is_absolute()
        else [Path.cwd() / path, Path(checkpoint).resolve().parent / path]
    )
    return next((c for c in candidates if c.is_dir()), None)


def check_compatible(
    manifest: DatasetManifest, meta: CheckpointMeta, data_dir: Path, checkpoint: Path
) -> list[str]:
    """Check a dataset against a checkpoint; return the model modalities the dataset lacks.

    Raises:
        DatasetError: different classes (by name and order), a modality with another band
            count, or none of the model's modalities in the dataset.
    """
    if manifest.class_names != meta.class_names:
        raise DatasetError(
            f"classes {manifest.class_names} do not match the checkpoint's {meta.class_names} ({checkpoint}); "
            "evaluate on a dataset prepared with the same classes in the same order",
            data_dir,
        )
    present = set(manifest.modality_names)
    for m in meta.modalities:
        if m.name in present and manifest.modality(m.name).bands != m.bands:
            raise DatasetError(
                f"modality {m.name} has {manifest.modality(m.name).bands} band(s) here but "
                f"{m.bands} in the checkpoint ({checkpoint})",
                data_dir,
            )
    missing = [n for n in meta.modality_names if n not in present]
    if len(missing) == len(meta.modalities):
        raise DatasetError(
            f"none of the checkpoint's modalities {meta.modality_names} is in this dataset "
            f"(it has {manifest.modality_names})",
            data_dir,
        )
    return missing


def _select_subsets(
    text: str, meta: CheckpointMeta, missing: Sequence[str], data_dir: Path
) -> list[tuple[str, ...]]:
    """Parse ``--subsets`` against the model; ``all`` leaves out subsets the dataset cannot feed."""
    names = meta.modality_names
    if text.strip().lower() == "all":
        return all_subsets([n for n in names if n not in missing])
    subsets = parse_subsets(text, names)
    for s in subsets:
        lacking = [n for n in s if n in missing]
        if lacking:
            raise DatasetError(
                f"subset {'+'.join(s)} needs {lacking}, which this dataset does not have", data_dir
            )
    return subsets


def _workers(workers: int | None, device: torch.device) -> int:
    if workers is not None:
        if workers < 0:
            raise UsageError(f"--workers {workers}: give 0 or more")
        return workers
    return 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    data_dir: Path | None = None,
    split: str = "test",
    subsets: str | Sequence[tuple[str, ...]] = "all",
    device: str | torch.device = "auto",
    batch_size: int = 8,
    workers: int | None = None,
    precision: str = "auto",
    progress: Progress | None = None,
) -> CheckpointEvaluation:
    """Evaluate a checkpoint on every requested modality subset of a prepared split.

    Args:
        checkpoint: an sgma checkpoint.
        data_dir: the prepared dataset (default: the one in the checkpoint's recipe).
        split: ``train``, ``val`` or ``test``.
        subsets: ``"all"``, ``"rgb,dsm;rgb"`` or a list of name tuples.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.
        batch_size: tiles per batch.
        workers: DataLoader worker processes (default: 0 on CPU, up to 4 on CUDA).
        precision: ``auto`` (bf16 on CUDA), ``bf16`` or ``fp32``.
        progress: ``progress(done_batches, total_batches)``.

    Raises:
        CheckpointError: unreadable or foreign checkpoint.
        DatasetError: no/invalid dataset, classes or modalities not matching, empty split.
        UsageError: no ``--data`` and none recorded in the checkpoint, bad options.
    """
    checkpoint = Path(checkpoint)
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: give 1 or more")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    if data_dir is None:
        data_dir = recipe_data_dir(meta, checkpoint)
        if data_dir is None:
            raise UsageError(
                f"{checkpoint}: the checkpoint does not name a dataset that exists here; "
                "pass the prepared dataset with --data DATA_DIR"
            )
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    missing = check_compatible(manifest, meta, data_dir, checkpoint)
    if isinstance(subsets, str):
        chosen = _select_subsets(subsets, meta, missing, data_dir)
    else:
        chosen = [tuple(s) for s in subsets]
        for s in chosen:
            if any(n not in meta.modality_names for n in s):
                raise CheckpointError(
                    f"subset {'+'.join(s)} uses modalities this model does not know ({meta.modality_names})",
                    checkpoint,
                )
            if any(n in missing for n in s):
                raise DatasetError(
                    f"subset {'+'.join(s)} needs {[n for n in s if n in missing]}, which this dataset does not have",
                    data_dir,
                )
    loaded = [n for n in meta.modality_names if n not in missing]
    stats = {m.name: (m.mean, m.std) for m in meta.modalities if m.name in loaded}
    dataset = TileDataset(data_dir, split, modalities=loaded, stats=stats, manifest=manifest)
    if len(dataset) == 0:
        have = ", ".join(f"{k} ({v})" for k, v in manifest.splits.items() if v) or "none"
        raise DatasetError(
            f"split {split!r} has no tiles (splits with tiles: {have}); choose one with --split",
            data_dir,
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=_workers(workers, dev),
        pin_memory=dev.type == "cuda",
    )
    start = time.perf_counter()
    result = evaluate_subsets(
        model,
        loader,
        chosen,
        device=dev,
        ignore_index=manifest.ignore_index,
        precision=precision,
        progress=progress,
    )
    return CheckpointEvaluation(
        checkpoint=checkpoint,
        meta=meta,
        data_dir=data_dir,
        split=split,
        tiles=len(dataset),
        result=result,
        skipped=tuple(missing),
        seconds=time.perf_counter() - start,
    )


# ------------------------------------------------------------------ whole scenes (predict's path)
def _label_reader(
    labels: Path, meta: CheckpointMeta, grid: Any, scene_name: str, label_field: str
) -> Any:
    """A :class:`~sgma_cli.data.labels.LabelReader` mapping ``labels`` onto the checkpoint's classes."""
    from sgma_cli.data.labels import LabelReader, label_source_for, resolve_classes, scan_values

    palette = [(c.name, tuple(c.color)) for c in meta.classes]
    source = label_source_for(Path(labels), label_field, palette)  # type: ignore[arg-type]
    kind, values, _ = scan_values(source)
    mapping = resolve_classes(
        kind, values, palette, {meta.ignore_index} if kind == "index" else set(), Path(labels)
    )  # type: ignore[arg-type]
    return LabelReader(
        source, grid, mapping, kind, scene=scene_name, ignore_index=meta.ignore_index
    )


def evaluate_scene(
    checkpoint: Path,
    scene_dir: Path,
    labels: Path,
    *,
    subsets: str | Sequence[tuple[str, ...]] = "all",
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    precision: str = "auto",
    label_field: str = "class",
    progress: Progress | None = None,
) -> CheckpointEvaluation:
    """Evaluate every subset on a whole scene through ``predict``'s sliding-window path.

    The scene is read window by window on the reference grid exactly as ``sgma predict``
    reads it (:func:`sgma_cli.engine.predict.inference.read_batches`, same windows, normalisation
    and blend weights). Each batch of windows is encoded once; per subset the class
    probabilities are blended over overlapping windows (pixels that no sensor of the
    subset saw get no weight), and every finished band of rows is compared with the
    labels read on the same grid. Memory: one band of rows of ``K`` floats per subset.

    Args:
        checkpoint: an sgma checkpoint.
        scene_dir: folder of ``<modality>.tif`` files (``sgma sample`` layout).
        labels: colour or class-index raster, or polygons (``label_field``) of the scene.
        subsets: ``"all"`` (subsets of the sensors found), ``"rgb,dsm;rgb"`` or tuples.
        window: window side (default: the checkpoint's tile size, as ``predict``).
        overlap: window overlap fraction.
        batch_size: windows per batch.
        device: ``auto``, ``cpu``, ``cuda`` ...
        precision: ``auto``, ``bf16`` or ``fp32``.
        label_field: class attribute of vector labels.
        progress: ``progress(done_batches, total_batches)``.
    """
    from rasterio.windows import Window

    from sgma_cli.data.scene import find_sensor_files, open_scene
    from sgma_cli.data.window_grid import RowAccumulator, blend_weights, window_grid
    from sgma_cli.engine.predict.inference import batches_of, read_batches
    from sgma_cli.engine.predict.job import default_window

    checkpoint, scene_dir = Path(checkpoint), Path(scene_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    names = meta.modality_names
    files = find_sensor_files(scene_dir, names)
    scene = open_scene(
        files,
        {m.name: m.bands for m in meta.modalities},
        resolution=meta.resolution[0] if meta.resolution else None,
        resolution_crs=meta.crs,
    )
    missing = [n for n in names if n not in scene.names]
    if isinstance(subsets, str):
        chosen = _select_subsets(subsets, meta, missing, scene_dir)
    else:
        chosen = [tuple(s) for s in subsets]
        lacking = sorted({n for s in chosen for n in s if n in missing})
        if lacking:
            raise DatasetError(f"subsets need {lacking}, which this scene does not have", scene_dir)
    size = window or default_window(meta)
    try:
        windows = window_grid(scene.grid.height, scene.grid.width, size, overlap)
    except ValueError as err:
        raise UsageError(f"--window/--overlap: {err}") from None
    batches = batches_of(windows, batch_size)
    reader = _label_reader(labels, meta, scene.grid, scene_dir.name, label_field)
    K, S, M = model.num_classes, len(model.channels), len(names)
    H, W = scene.grid.height, scene.grid.width
    accs = [RowAccumulator(H, W, K, windows) for _ in chosen]
    weight = blend_weights(size)
    confusion = [torch.zeros(K, K, dtype=torch.int64) for _ in chosen]
    rsum = torch.zeros(S, M, dtype=torch.float64, device=dev)
    rcount = torch.zeros(S, M, dtype=torch.float64, device=dev)
    full = tuple(n for n in names if n in scene.names)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for step, batch in enumerate(read_batches(scene, meta, batches), start=1):
                images = {n: torch.from_numpy(a).to(dev) for n, a in batch.images.items()}
                mask = torch.from_numpy(batch.mask).to(dev)
                with autocast(dev, precision):
                    enc = model.encode(images, mask)
                    if full not in chosen:
                        accumulate_robustness(model.fuse(enc, list(full)), enc, rsum, rcount)
                for acc, subset in zip(accs, chosen):
                    with autocast(dev, precision):
                        fused = model.fuse(enc, list(subset))
                        (logits,) = model.decode([fused], enc.image_size)
                    if subset == full:
                        accumulate_robustness(fused, enc, rsum, rcount)
                    probs = logits.float().softmax(1).cpu().numpy()
                    valid = fused.valid.cpu().numpy()
                    for b, w in enumerate(batch.windows):
                        acc.add(w, probs[b], weight * valid[b])
                while True:
                    done = [acc.pop_finished() for acc in accs]
                    if done[0] is None:
                        break
                    row, _, weights0 = done[0]  # type: ignore[misc]
                    reference = torch.from_numpy(
                        reader.read(Window(0, row, W, weights0.shape[0])).astype("int64")
                    )
                    for j, (_, sums, weights) in enumerate(done):  # type: ignore[misc]
                        pred = torch.from_numpy(sums.argmax(0))
                        confusion[j] += confusion_matrix(
                            pred, reference, K, meta.ignore_index, torch.from_numpy(weights > 0)
                        )
                if progress is not None:
                    progress(step, len(batches))
    finally:
        reader.close()
    result = SubsetEvaluation.from_counts(chosen, names, confusion, rsum, rcount)
    return CheckpointEvaluation(
        checkpoint=checkpoint,
        meta=meta,
        data_dir=scene_dir,
        split="scene",
        tiles=len(windows),
        result=result,
        skipped=tuple(missing),
        seconds=time.perf_counter() - start,
    )
