"""The ``sgma evaluate`` tile job: a checkpoint on every modality subset of a prepared split.

It checks that the dataset fits the checkpoint (classes, sensors, bands), picks the
modality subsets (:func:`~sgma_cli.engine.subsets.select_subsets`) and scores them with
:func:`~sgma_cli.engine.evaluate.scoring.evaluate_subsets`. The options and the result
type are shared with the scene job (:mod:`sgma_cli.engine.evaluate.scene`);
:mod:`sgma_cli.engine.evaluate.compare` runs either job for ``sgma evaluate`` and
:mod:`sgma_cli.engine.evaluate.report` renders the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.config.dataset import DatasetManifest, load_manifest
from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.engine.device import resolve_device
from sgma_cli.engine.evaluate.scoring import Progress, SubsetEvaluation, evaluate_subsets
from sgma_cli.engine.speed import CompileChoice, CompiledModel, speed_up
from sgma_cli.engine.subsets import select_subsets
from sgma_cli.engine.weights import load_model
from sgma_cli.errors import CheckpointError, DatasetError, UsageError
from sgma_cli.model.sgma import SGMA

__all__ = [
    "EvaluateOptions",
    "CheckpointEvaluation",
    "recipe_data_dir",
    "check_compatible",
    "check_comparable",
    "load_for_evaluation",
    "evaluate_checkpoint",
]


@dataclass(frozen=True)
class EvaluateOptions:
    """How an evaluation runs; shared by the tile and the scene job.

    Attributes:
        subsets: ``"all"``, ``"rgb,dsm;rgb"`` or name tuples
            (:func:`~sgma_cli.engine.subsets.select_subsets`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.
        batch_size: tiles or windows per batch.
        workers: DataLoader worker processes for tiles (default: 0 on CPU, up to 4 on
            CUDA); a scene is read by one background thread whatever this says.
        precision: ``auto`` (bf16 on CUDA), ``bf16`` or ``fp32``.
        compile: compile the model (``None``: on CUDA only; see :mod:`sgma_cli.engine.speed`).

    Raises:
        UsageError: ``batch_size`` below 1 or negative ``workers``.
    """

    subsets: str | Sequence[Sequence[str]] = "all"
    device: str | torch.device = "auto"
    batch_size: int = 8
    workers: int | None = None
    precision: str = "auto"
    compile: CompileChoice = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: give 1 or more")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers {self.workers}: give 0 or more")

    def torch_device(self) -> torch.device:
        """The device to run on (raises DeviceError for one this machine lacks)."""
        return self.device if isinstance(self.device, torch.device) else resolve_device(self.device)


@dataclass(frozen=True)
class CheckpointEvaluation:
    """One checkpoint evaluated on one split or scene: what ``sgma evaluate`` reports.

    Attributes:
        checkpoint: the checkpoint file.
        meta: its metadata (class names, modalities, recipe).
        data_dir: the prepared dataset or the scene folder used.
        split: the split evaluated, or ``"scene"``.
        tiles: number of tiles (or windows of a scene).
        result: confusion matrices, metrics and robustness per subset.
        skipped: model modalities the data lacks (subsets using them were left out).
        seconds: wall time of the evaluation loop.
        compiled: what was compiled and the first batch's time, when compiled.
    """

    checkpoint: Path
    meta: CheckpointMeta
    data_dir: Path
    split: str
    tiles: int
    result: SubsetEvaluation
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    compiled: CompiledModel | None = None


def recipe_data_dir(meta: CheckpointMeta, checkpoint: Path) -> Path | None:
    """The dataset the checkpoint was trained on (``recipe["data"]["dir"]``) if it still exists.

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
            f"classes {manifest.class_names} do not match the checkpoint's {meta.class_names} "
            f"({checkpoint}); evaluate on a dataset prepared with the same classes in the "
            "same order",
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


def check_comparable(meta: CheckpointMeta, like: CheckpointEvaluation, checkpoint: Path) -> None:
    """Check that ``checkpoint`` can be scored like ``like``: same classes, its subsets' sensors.

    Raises:
        CheckpointError: other classes, or a modality of ``like``'s subsets this model lacks.
    """
    if meta.class_names != like.meta.class_names:
        raise CheckpointError(
            f"classes {meta.class_names} differ from {like.checkpoint.name}'s "
            f"{like.meta.class_names}; only models of the same classes can be compared",
            checkpoint,
        )
    try:
        select_subsets(like.result.subsets, meta.modality_names)
    except UsageError as err:
        raise CheckpointError(
            f"{err.message}; so it cannot be compared with {like.checkpoint.name}", checkpoint
        ) from None


def load_for_evaluation(
    checkpoint: Path, options: EvaluateOptions, like: CheckpointEvaluation | None = None
) -> tuple[SGMA, CheckpointMeta, torch.device, CompiledModel | None]:
    """The model in eval mode on the options' device, its metadata, that device, and
    what was compiled (``None``: nothing).

    The model encodes the faster way for the device and is compiled when
    ``options.compile`` asks for it (:mod:`sgma_cli.engine.speed`). With ``like``, the
    checkpoint must be comparable with it (:func:`check_comparable`).
    """
    device = options.torch_device()
    model, meta = load_model(checkpoint, device)
    if like is not None:
        check_comparable(meta, like, checkpoint)
    compiled = speed_up(model, device, options.compile)
    return model, meta, device, compiled


def _workers(workers: int | None, device: torch.device) -> int:
    if workers is not None:
        return workers
    return 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    data_dir: Path | None = None,
    split: str = "test",
    options: EvaluateOptions | None = None,
    progress: Progress | None = None,
    like: CheckpointEvaluation | None = None,
) -> CheckpointEvaluation:
    """Evaluate a checkpoint on every requested modality subset of a prepared split.

    Args:
        checkpoint: an sgma checkpoint.
        data_dir: the prepared dataset (default: the one in the checkpoint's recipe).
        split: ``train``, ``val`` or ``test``.
        options: subsets, device, batch size, workers, precision (default: all subsets,
            ``auto`` device, 8 tiles per batch).
        progress: ``progress(done_batches, total_batches)``.
        like: an evaluation to compare with: its dataset and subsets are used instead of
            ``data_dir`` and ``options.subsets``, and the classes must match.

    Raises:
        CheckpointError: unreadable or foreign checkpoint, or not comparable with ``like``.
        DatasetError: no/invalid dataset, classes or modalities not matching, empty split.
        UsageError: no ``data_dir`` and none recorded in the checkpoint, bad options.
    """
    checkpoint, options = Path(checkpoint), options or EvaluateOptions()
    model, meta, dev, compiled = load_for_evaluation(checkpoint, options, like)
    if compiled is not None:
        progress = compiled.watch(progress)
    if like is not None:
        data_dir = like.data_dir
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
    requested = options.subsets if like is None else like.result.subsets
    chosen = select_subsets(requested, meta.modality_names, missing, data_dir)
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
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=_workers(options.workers, dev),
        pin_memory=dev.type == "cuda",
    )
    start = time.perf_counter()
    result = evaluate_subsets(
        model,
        loader,
        chosen,
        device=dev,
        ignore_index=manifest.ignore_index,
        precision=options.precision,
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
        compiled=compiled,
    )
