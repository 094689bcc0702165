"""Runners for ``sgma predict``: the PyTorch checkpoint, or a graph written by ``sgma export``.

The sliding-window core (:mod:`sgma_cli.engine.predict.inference`) hands each batch of
normalised windows to a :class:`~sgma_cli.engine.predict.inference.Runner`. This module
adds :class:`GraphRunner`, which feeds the batch to an exported graph (ONNX Runtime, or a
``torch.export`` program), and :func:`load_runner`, which opens either kind of model file
on a device. The graph returns logits (and robustness maps); the runner applies the
softmax and picks the maps so that its output is the one :func:`compute_batch` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.engine.predict.inference import Runner, TorchRunner, WindowBatch
from sgma_cli.engine.speed import CompileChoice, CompiledModel, speed_up
from sgma_cli.engine.weights import load_model
from sgma_cli.errors import CheckpointError, DeviceError

__all__ = ["GRAPH_SUFFIXES", "GraphRunner", "LoadedRunner", "load_runner"]

#: Suffixes of the model files ``--model`` accepts, with what runs them.
GRAPH_SUFFIXES = {".onnx": "ONNX Runtime", ".pt2": "torch.export"}

#: A graph call: ``{input name: array}`` -> outputs in the file's output order.
GraphCall = Callable[[Mapping[str, np.ndarray]], Sequence[np.ndarray]]


class GraphRunner:
    """An exported graph as a :class:`~sgma_cli.engine.predict.inference.Runner`.

    Args:
        call: runs the graph on named inputs.
        meta: the checkpoint metadata stored in the file (modality order and bands).
        modalities: the graph's image inputs, in order.
        mask_input: name of the availability-mask input.
    """

    def __init__(
        self,
        call: GraphCall,
        meta: CheckpointMeta,
        modalities: Sequence[str],
        mask_input: str = "mask",
    ) -> None:
        self.call = call
        self.names = meta.modality_names
        self.bands = {m.name: m.bands for m in meta.modalities}
        self.modalities = list(modalities)
        self.mask_input = mask_input
        self._rows = [self.names.index(m) for m in self.modalities]

    def __call__(
        self, batch: WindowBatch, robustness_of: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feed the graph; sensors the scene lacks go in as zeros, their mask ``False``."""
        B, _, H, W = batch.mask.shape
        feed: dict[str, np.ndarray] = {}
        for m in self.modalities:
            image = batch.images.get(m)
            feed[m] = (
                np.zeros((B, self.bands[m], H, W), np.float32)
                if image is None
                else np.ascontiguousarray(image, np.float32)
            )
        mask = np.ascontiguousarray(batch.mask[:, self._rows])  # (B, M_g, H, W)
        feed[self.mask_input] = mask
        outputs = self.call(feed)
        logits = np.asarray(outputs[0], np.float32)  # (B, K, H, W)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        values = shifted / shifted.sum(axis=1, keepdims=True)
        if robustness_of:
            if len(outputs) < 2:
                raise ValueError("the graph returns no robustness maps")
            picks = [self.modalities.index(self.names[i]) for i in robustness_of]
            values = np.concatenate([values, np.asarray(outputs[1], np.float32)[:, picks]], 1)
        return values.astype(np.float32, copy=False), mask.any(axis=1)


@dataclass
class LoadedRunner:
    """A runner with what predict needs to know about it.

    Attributes:
        runner: computes batches (``None`` where only the metadata was read).
        meta: checkpoint metadata (classes, modalities, normalisation, grid).
        modalities: sensors the model can take (a graph may hold a subset).
        size: fixed window size of a graph, or ``None`` (any multiple of 32).
        robustness: whether robustness maps can be returned.
        compiled: what ``torch.compile`` compiled (a checkpoint's model), else ``None``.
    """

    runner: Runner | None
    meta: CheckpointMeta
    modalities: list[str]
    size: int | None = None
    robustness: bool = True
    compiled: CompiledModel | None = None


def _onnx_providers(device: torch.device, explicit: bool) -> list[Any]:
    import onnxruntime as ort

    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        if not explicit:
            return ["CPUExecutionProvider"]
        raise DeviceError(
            f"--device {device} asked for, but this onnxruntime has no CUDA execution provider; "
            "install onnxruntime-gpu or use --device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def load_runner(
    path: Path,
    device: torch.device,
    *,
    graph: bool = False,
    precision: str = "auto",
    explicit_device: bool = True,
    compile: CompileChoice = False,
) -> LoadedRunner:
    """Open a checkpoint (``graph=False``) or an exported ``.onnx``/``.pt2`` file on ``device``.

    Args:
        path: the model file.
        device: where to compute.
        graph: ``path`` is a file written by ``sgma export``.
        precision: ``auto``, ``bf16`` or ``fp32`` (graphs run in float32).
        explicit_device: the device was asked for by name; ``False`` (``auto``) lets an
            ONNX Runtime without CUDA fall back to the CPU.
        compile: compile a checkpoint's model (``None``: on CUDA only; see
            :mod:`sgma_cli.engine.speed`); an exported graph is already compiled.

    Raises:
        CheckpointError: unreadable file, or one without sgma metadata.
        DeviceError: CUDA asked for and the runtime cannot use it.
        SgmaError: ``.onnx`` without onnxruntime installed.
    """
    if not graph:
        model, meta = load_model(path, device)
        compiled = speed_up(model, device, compile)
        return LoadedRunner(
            TorchRunner(model, device, precision), meta, meta.modality_names, compiled=compiled
        )
    from sgma_cli.engine.export.formats import load_exported_program, onnx_session

    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        session, info = onnx_session(
            path, _onnx_providers(device, explicit_device), threads=torch.get_num_threads()
        )

        def call(feed: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
            return session.run(None, dict(feed))

    elif suffix == ".pt2":
        program, info = load_exported_program(path)
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()

        def call(feed: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
            inputs = [torch.from_numpy(feed[name]).to(device) for name in info.inputs]
            with torch.inference_mode():
                out = module(*inputs)
            return [t.float().cpu().numpy() for t in (out if isinstance(out, tuple) else (out,))]

    else:
        known = ", ".join(f"{s} ({what})" for s, what in GRAPH_SUFFIXES.items())
        raise CheckpointError(f"unknown model file type {suffix or '(none)'}; use {known}", path)
    runner = GraphRunner(call, info.meta, info.modalities, mask_input=info.inputs[-1])
    return LoadedRunner(runner, info.meta, list(info.modalities), info.size, info.robustness)
