"""The ``sgma evaluate --scene`` job: every modality subset on a whole labelled scene.

The scene is read window by window on the reference grid exactly as ``sgma predict``
reads it (:func:`sgma_cli.engine.predict.inference.read_batches`: same windows,
normalisation and blend weights). Each batch of windows goes through the one evaluation
step (:class:`~sgma_cli.engine.evaluate.scoring.SubsetScorer`: one encode, every subset
fused and decoded); per subset the class probabilities are blended over overlapping
windows (pixels no sensor of the subset saw get no weight), and every finished band of
rows is scored against the labels read on the same grid. Memory: one band of rows of
``K`` floats per subset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.data.window_grid import RowAccumulator, WindowSpec, blend_weights
from sgma_cli.engine.evaluate.job import (
    CheckpointEvaluation,
    EvaluateOptions,
    load_for_evaluation,
)
from sgma_cli.engine.evaluate.scoring import Progress, SubsetOutput, SubsetScorer
from sgma_cli.engine.subsets import select_subsets
from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.data.labels import LabelReader
    from sgma_cli.data.raster import Grid
    from sgma_cli.data.sources import RasterSource

__all__ = ["SceneSource", "evaluate_scene"]


@dataclass(frozen=True)
class SceneSource:
    """A labelled scene and how to cut it into windows.

    Attributes:
        folder: folder of ``<modality>.tif`` files (``sgma sample`` layout), or ``None``
            when ``files`` names every sensor.
        labels: colour or class-index raster, or polygons (``label_field``) of the scene.
        label_field: class attribute of vector labels.
        window: window side (default: the checkpoint's tile size, as ``predict``).
        overlap: window overlap fraction.
        files: sensors given one by one (``--modality NAME=WHERE``, ``--stac``): a file,
            glob, folder or list of tiles, URL, or a ready ``RasterSource``; they win over
            the folder's.
    """

    folder: Path | None
    labels: Path
    label_field: str = "class"
    window: int | None = None
    overlap: float = 0.25
    files: Mapping[str, Path | str | RasterSource] = field(default_factory=dict)

    @property
    def where(self) -> Path:
        """The folder that names the scene: ``folder``, else the labels' folder."""
        return Path(self.folder) if self.folder is not None else Path(self.labels).parent


def _label_reader(scene: SceneSource, meta: CheckpointMeta, grid: Grid) -> LabelReader:
    """The scene's labels on ``grid``, mapped onto the checkpoint's classes."""
    from sgma_cli.data.labels import LabelReader, label_source_for, resolve_classes, scan_values

    labels = Path(scene.labels)
    palette = [(c.name, tuple(c.color)) for c in meta.classes]
    source = label_source_for(labels, scene.label_field, palette)  # type: ignore[arg-type]
    kind, values, _ = scan_values(source)
    ignore = {meta.ignore_index} if kind == "index" else set()
    mapping = resolve_classes(kind, values, palette, ignore, labels)  # type: ignore[arg-type]
    return LabelReader(
        source, grid, mapping, kind, scene=scene.where.name, ignore_index=meta.ignore_index
    )


class _Blend:
    """Per subset, class probabilities blended over overlapping windows, row band by band.

    Args:
        height: scene rows.
        width: scene columns.
        windows: the window grid (all windows have one size).
        scorer: the scorer whose subsets are blended and that counts finished rows.
    """

    def __init__(
        self, height: int, width: int, windows: list[WindowSpec], scorer: SubsetScorer
    ) -> None:
        self.width, self.scorer = width, scorer
        self.weight = blend_weights(windows[0].size)
        K = scorer.model.num_classes
        self.rows = [RowAccumulator(height, width, K, windows) for _ in scorer.subsets]

    def add(self, out: SubsetOutput, windows: Sequence[WindowSpec]) -> None:
        """Add one subset's outputs for a batch of windows (``B`` = ``len(windows)``)."""
        probs = out.logits.float().softmax(1).cpu().numpy()
        valid = out.valid.cpu().numpy()
        for b, w in enumerate(windows):
            self.rows[out.index].add(w, probs[b], self.weight * valid[b])

    def score_finished(self, reader: LabelReader) -> None:
        """Count the rows no pending window touches against the labels read there."""
        from rasterio.windows import Window

        while True:
            done = [acc.pop_finished() for acc in self.rows]
            if done[0] is None:
                return
            row, _, first = done[0]
            window = Window(0, row, self.width, first.shape[0])
            reference = torch.from_numpy(reader.read(window).astype("int64"))
            for j, (_, sums, weights) in enumerate(done):  # type: ignore[misc]
                pred = torch.from_numpy(sums.argmax(0))
                self.scorer.add(j, pred, reference, torch.from_numpy(weights > 0))


def evaluate_scene(
    checkpoint: Path,
    scene: SceneSource,
    options: EvaluateOptions | None = None,
    *,
    progress: Progress | None = None,
    like: CheckpointEvaluation | None = None,
) -> CheckpointEvaluation:
    """Evaluate every requested modality subset on a whole scene through predict's windows.

    Args:
        checkpoint: an sgma checkpoint.
        scene: the scene folder, its labels, window size and overlap.
        options: subsets (``"all"``: the subsets of the sensors found), device, batch size
            (windows), precision; ``workers`` is not used. Default: :class:`EvaluateOptions`.
        progress: ``progress(done_batches, total_batches)``.
        like: an evaluation to compare with: its subsets are used instead of
            ``options.subsets``, and the classes must match.

    Raises:
        CheckpointError: unreadable checkpoint, or not comparable with ``like``.
        RasterError: unreadable scene or labels, label values outside the palette.
        DatasetError: a named subset needs a sensor the scene lacks.
        UsageError: a window size or overlap that does not fit.
    """
    from sgma_cli.data.scene import find_sensor_files, open_scene
    from sgma_cli.data.window_grid import window_grid
    from sgma_cli.engine.predict.inference import batches_of, read_batches
    from sgma_cli.engine.predict.job import default_window

    checkpoint, folder = Path(checkpoint), scene.where
    options = options or EvaluateOptions()
    model, meta, dev, compiled = load_for_evaluation(checkpoint, options, like)
    if compiled is not None:
        progress = compiled.watch(progress)
    names = meta.modality_names
    opened = open_scene(
        find_sensor_files(scene.folder, names, scene.files),
        {m.name: m.bands for m in meta.modalities},
        resolution=meta.resolution[0] if meta.resolution else None,
        resolution_crs=meta.crs,
    )
    missing = [n for n in names if n not in opened.names]
    requested = options.subsets if like is None else like.result.subsets
    scorer = SubsetScorer(
        model,
        select_subsets(requested, names, missing, folder),
        device=dev,
        ignore_index=meta.ignore_index,
        precision=options.precision,
        max_decode_group=1,  # one subset per head call, as predict runs it
    )
    H, W = opened.grid.height, opened.grid.width
    try:
        windows = window_grid(H, W, scene.window or default_window(meta), scene.overlap)
    except ValueError as err:
        raise UsageError(f"--window/--overlap: {err}") from None
    batches = batches_of(windows, options.batch_size)
    blend = _Blend(H, W, windows, scorer)
    reader = _label_reader(scene, meta, opened.grid)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for step, batch in enumerate(read_batches(opened, meta, batches), start=1):
                images = {n: torch.from_numpy(a).to(dev) for n, a in batch.images.items()}
                for out in scorer.outputs(images, torch.from_numpy(batch.mask).to(dev)):
                    blend.add(out, batch.windows)
                blend.score_finished(reader)
                if progress is not None:
                    progress(step, len(batches))
    finally:
        reader.close()
    return CheckpointEvaluation(
        checkpoint=checkpoint,
        meta=meta,
        data_dir=folder,
        split="scene",
        tiles=len(windows),
        result=scorer.result(),
        skipped=tuple(missing),
        seconds=time.perf_counter() - start,
        compiled=compiled,
    )
