"""Sliding-window prediction of a whole scene in bounded memory: the core of ``sgma predict``.

Windows (:mod:`sgma_cli.data.window_grid`) are read on the reference grid by a background
thread (:mod:`sgma_cli.data.scene`), normalised with the checkpoint's statistics and
batched, while the model computes the previous batch (GDAL reads and torch kernels both
release the GIL). Class probabilities of overlapping windows are blended with a smooth
window weight; rows are finalised as soon as no pending window touches them and handed on
as :class:`PredictionBlock` s, so only the windows in flight and one band of output rows
are ever in memory. :func:`local_results` computes batches in this process and
:func:`assemble` blends them into blocks; :func:`sgma_cli.engine.predict.job.predict_scene`
puts the two together, ``sgma predict`` writes the blocks and ``sgma evaluate`` scores them.

What computes a batch is a :class:`Runner`: :class:`TorchRunner` (the PyTorch model, via
:func:`compute_batch`) or a graph exported by ``sgma export``
(:mod:`sgma_cli.engine.predict.runners`: ONNX Runtime or an ExportedProgram). Reading,
blending and writing do not depend on which.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.data.normalize import normalize
from sgma_cli.data.scene import Scene
from sgma_cli.data.window_grid import RowAccumulator, WindowSpec, blend_weights
from sgma_cli.engine.device import autocast
from sgma_cli.model.sgma import SGMA

__all__ = [
    "GDAL_CACHE_MB",
    "Progress",
    "ProgressFn",
    "PredictionBlock",
    "WindowBatch",
    "Runner",
    "TorchRunner",
    "batches_of",
    "read_batches",
    "compute_batch",
    "local_results",
    "assemble",
]

_DONE = object()
#: GDAL block cache for a prediction (MiB). GDAL's default, 5 % of the machine's RAM, lets
#: the cache of warped reads grow with the scene; a fixed size keeps memory flat.
GDAL_CACHE_MB = 64


@dataclass(frozen=True)
class Progress:
    """Where a prediction stands: windows and megapixels of the scene."""

    windows_done: int
    windows_total: int
    megapixels_done: float
    megapixels_total: float


ProgressFn = Callable[[Progress], None]


@dataclass
class PredictionBlock:
    """Finished full-width rows ``[row, row + h)`` of the scene.

    Attributes:
        row: first row on the reference grid.
        classes: uint8 ``(h, W)`` class indices, ``nodata`` where not ``valid``.
        valid: bool ``(h, W)``: some chosen sensor saw the pixel.
        probabilities: float32 ``(K, h, W)`` blended class probabilities, or ``None``.
        robustness: float32 ``(M_used, h, W)`` blended RP weights of the used sensors
            (finest scale, upsampled), or ``None``.
    """

    row: int
    classes: np.ndarray
    valid: np.ndarray
    probabilities: np.ndarray | None = None
    robustness: np.ndarray | None = None


@dataclass
class WindowBatch:
    """Normalised inputs of a batch of windows.

    Attributes:
        windows: the windows, ``B`` of them.
        images: ``{name: float32 (B, C, S, S)}`` of the chosen sensors.
        mask: bool ``(B, M, S, S)`` over all checkpoint modalities.
    """

    windows: list[WindowSpec]
    images: dict[str, np.ndarray]
    mask: np.ndarray


class Runner(Protocol):
    """Computes one batch of windows: what :func:`local_results` calls per batch."""

    def __call__(
        self, batch: WindowBatch, robustness_of: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values float32 ``(B, K + len(robustness_of), S, S)`` and valid bool ``(B, S, S)``.

        ``values`` holds the softmax probabilities, then the robustness maps of the model
        modalities ``robustness_of`` (indices into ``meta.modality_names``), as
        :func:`compute_batch` returns them.
        """
        ...


@dataclass
class TorchRunner:
    """The PyTorch model as a :class:`Runner` (:func:`compute_batch`).

    Attributes:
        model: the model, in eval mode on ``device``.
        device: where to compute.
        precision: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``fp32``.
    """

    model: SGMA
    device: torch.device
    precision: str = "auto"

    def __call__(
        self, batch: WindowBatch, robustness_of: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on one batch (see :class:`Runner`)."""
        return compute_batch(
            self.model, batch, self.device, precision=self.precision, robustness_of=robustness_of
        )


def batches_of(windows: Sequence[WindowSpec], batch_size: int) -> list[list[WindowSpec]]:
    """Consecutive (row-major) windows in batches of ``batch_size``."""
    return [list(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]


def read_batches(
    scene: Scene, meta: CheckpointMeta, batches: Sequence[Sequence[WindowSpec]]
) -> Iterator[WindowBatch]:
    """Read and normalise each batch of windows (call from one thread).

    Every window is normalised straight into its slot of the batch arrays
    (:func:`~sgma_cli.data.normalize.normalize` with ``out``): the same values as a
    normalised copy, without the copies.
    """
    norms = {m.name: m for m in meta.modalities}
    names = meta.modality_names
    with scene.reader() as reader:
        for batch in batches:
            size = batch[0].size
            images = {
                n: np.empty((len(batch), norms[n].bands, size, size), np.float32)
                for n in scene.names
            }
            mask = np.zeros((len(batch), len(names), size, size), bool)
            for b, w in enumerate(batch):
                arrays, valid = reader.read(w.row, w.col, size, size)
                for n in scene.names:  # straight into the batch: no temporaries
                    normalize(arrays[n], norms[n].mean, norms[n].std, valid[n], out=images[n][b])
                    mask[b, names.index(n)] = valid[n]
            yield WindowBatch(list(batch), images, mask)


def compute_batch(
    model: SGMA,
    batch: WindowBatch,
    device: torch.device,
    *,
    precision: str = "auto",
    robustness_of: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on one batch.

    Args:
        model: the model, in eval mode on ``device``.
        batch: normalised inputs.
        device: where to compute.
        precision: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``fp32``.
        robustness_of: model indices of the sensors whose RP weights to return.

    Returns:
        ``values`` float32 ``(B, K + len(robustness_of), S, S)`` (softmax probabilities, then
        robustness upsampled from the finest scale) and ``valid`` bool ``(B, S, S)``.
    """
    pin = device.type == "cuda"
    images = {}
    for n, a in batch.images.items():
        t = torch.from_numpy(a)
        images[n] = (t.pin_memory() if pin else t).to(device, non_blocking=pin)
    mask = torch.from_numpy(batch.mask).to(device)
    with torch.inference_mode(), autocast(device, precision):
        out = model(images, mask)
        values = out.logits.float().softmax(1)
        if robustness_of:
            size = values.shape[-2:]
            r = out.robustness[0][:, list(robustness_of)].float()
            values = torch.cat(
                [values, F.interpolate(r, size=size, mode="bilinear", align_corners=False)], 1
            )
    return values.cpu().numpy(), out.valid.cpu().numpy()


def _prefetch(
    source: Iterator[WindowBatch], depth: int, stop: threading.Event
) -> Iterator[WindowBatch]:
    """Run ``source`` in a background thread, ``depth`` batches ahead."""
    slots: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            slots.put(err)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # release the files in the thread that opened them

    thread = threading.Thread(target=produce, name="sgma-read", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


def local_results(
    runner: Runner,
    meta: CheckpointMeta,
    scene: Scene,
    batches: Sequence[Sequence[WindowSpec]],
    *,
    robustness: bool = False,
    prefetch: int = 2,
) -> Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]]:
    """``(windows, values, valid)`` per batch computed in this process by ``runner``.

    Windows no chosen sensor saw never reach the runner (their values are ``None``, or
    zeros within a batch).
    """
    names = meta.modality_names
    robust_idx = [names.index(n) for n in scene.names] if robustness else []
    stop = threading.Event()
    for batch in _prefetch(read_batches(scene, meta, batches), prefetch, stop):
        seen = batch.mask.any(axis=(1, 2, 3))
        if not seen.any():
            yield batch.windows, None, None
            continue
        if not seen.all():  # compute only windows some sensor saw
            keep = np.flatnonzero(seen)
            sub = WindowBatch(
                [batch.windows[i] for i in keep],
                {n: a[keep] for n, a in batch.images.items()},
                batch.mask[keep],
            )
            values, valid = runner(sub, robust_idx)
            full_v = np.zeros((len(batch.windows), *values.shape[1:]), np.float32)
            full_ok = np.zeros((len(batch.windows), *valid.shape[1:]), bool)
            full_v[keep], full_ok[keep] = values, valid
            yield batch.windows, full_v, full_ok
        else:
            yield (batch.windows, *runner(batch, robust_idx))


def assemble(
    results: Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]],
    scene: Scene,
    windows: list[WindowSpec],
    num_classes: int,
    channels: int,
    *,
    want_probabilities: bool = False,
    nodata: int = 255,
    progress: ProgressFn | None = None,
) -> Iterator[PredictionBlock]:
    """Blend window results into finished rows, in order."""
    grid = scene.grid
    mpix = grid.width * grid.height / 1e6
    acc = RowAccumulator(grid.height, grid.width, channels, windows)
    weight = blend_weights(windows[0].size)
    zeros = np.zeros((channels, windows[0].size, windows[0].size), np.float32)
    done, total = 0, len(windows)
    for batch, values, valid in results:
        for b, w in enumerate(batch):
            if values is None or valid is None:
                acc.add(w, zeros, np.zeros_like(weight))
            else:
                acc.add(w, values[b], weight * valid[b])
        done += len(batch)
        if progress is not None:
            progress(Progress(done, total, mpix * done / total, mpix))
        while (finished := acc.pop_finished()) is not None:
            yield _finalize(*finished, num_classes, want_probabilities, nodata)
    if done != total:
        raise RuntimeError(f"only {done} of {total} windows came back")


def _finalize(
    row: int, sums: np.ndarray, weights: np.ndarray, K: int, want_probs: bool, nodata: int
) -> PredictionBlock:
    valid = weights > 0
    values = sums  # a copy owned by this block: normalise in place
    values /= np.where(valid, weights, np.float32(1.0))[None]
    classes = values[:K].argmax(0).astype(np.uint8)
    classes[~valid] = nodata
    probs = values[:K] if want_probs else None
    robust = values[K:] if values.shape[0] > K else None
    return PredictionBlock(row, classes, valid, probs, robust)
