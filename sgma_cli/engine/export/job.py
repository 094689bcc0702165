"""The ``sgma export`` job: a checkpoint as one graph file that runs without sgma's model code.

:func:`run_export` checks the request, rebuilds the model on the CPU, wraps it in an
:class:`~sgma_cli.engine.export.graph.ExportGraph` for the chosen modalities, traces it
once with ``torch.export`` (batch always dynamic; ``H``/``W`` too with ``dynamic``),
writes ONNX or an ExportedProgram with the metadata predict needs
(:mod:`~sgma_cli.engine.export.metadata`), and runs the written file once on the trace
inputs against the PyTorch model, so a broken conversion is caught at export time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgma_cli.data.window_grid import SIZE_MULTIPLE
from sgma_cli.data.writers import check_writable
from sgma_cli.engine.export.formats import (
    ONNX_PACKAGES,
    load_exported_program,
    onnx_session,
    require_packages,
    write_exported_program,
    write_onnx,
)
from sgma_cli.engine.export.graph import LOGITS_OUTPUT, MASK_INPUT, ROBUSTNESS_OUTPUT, ExportGraph
from sgma_cli.engine.export.metadata import ExportMeta, GraphFormat, file_sha256
from sgma_cli.engine.weights import load_model
from sgma_cli.errors import CheckpointError, UsageError

__all__ = ["FORMATS", "ExportJob", "ExportResult", "run_export"]

#: The ``--format`` choices.
FORMATS: tuple[GraphFormat, ...] = ("onnx", "exported-program")
_RESERVED = (MASK_INPUT, LOGITS_OUTPUT, ROBUSTNESS_OUTPUT)


@dataclass
class ExportJob:
    """Everything ``sgma export`` was asked to do.

    Attributes:
        checkpoint: the checkpoint written by ``sgma train``.
        out: the file to write (``.onnx`` or ``.pt2`` by convention).
        format: ``onnx`` or ``exported-program``.
        modalities: the graph's sensors (``None``: all of the checkpoint's; absent ones
            are then fed as zeros with their mask ``False``).
        size: ``H = W`` of the graph (with ``dynamic``: of the trace only); ``None``: the
            checkpoint's tile size rounded up to a multiple of 32, else 512.
        dynamic: ``H`` and ``W`` dynamic (any multiple of 32) instead of fixed.
        robustness: the graph also returns the robustness maps.
    """

    checkpoint: Path
    out: Path
    format: GraphFormat = "onnx"
    modalities: list[str] | None = None
    size: int | None = None
    dynamic: bool = False
    robustness: bool = False


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        path: the written file.
        meta: the metadata stored in it.
        size_bytes: its size.
        max_abs_diff: largest difference of the file's logits from the PyTorch model's on
            the trace inputs.
        seconds: wall time.
    """

    path: Path
    meta: ExportMeta
    size_bytes: int
    max_abs_diff: float
    seconds: float


def _check(job: ExportJob) -> None:
    if job.format not in FORMATS:
        raise UsageError(f"--format {job.format!r}: use {' or '.join(FORMATS)}")
    if job.size is not None and (job.size <= 0 or job.size % SIZE_MULTIPLE):
        raise UsageError(
            f"--size {job.size} must be a positive multiple of {SIZE_MULTIPLE}, e.g. 256 or 512"
        )
    if job.modalities is not None and not job.modalities:
        raise UsageError("--modalities is empty; give sensor names such as rgb,sar")
    if Path(job.out).resolve() == Path(job.checkpoint).resolve():
        raise UsageError("--out would overwrite the checkpoint; choose another file")
    check_writable(Path(job.out))


def _graph_modalities(job: ExportJob, names: list[str]) -> list[str]:
    chosen = names if job.modalities is None else job.modalities
    unknown = [m for m in chosen if m not in names]
    if unknown:
        raise UsageError(
            f"--modalities {','.join(unknown)}: not in the checkpoint; it has {', '.join(names)}"
        )
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"--modalities names a sensor twice: {','.join(chosen)}")
    clash = [m for m in chosen if m in _RESERVED]
    if clash:
        raise CheckpointError(
            f"cannot be exported: modality {clash[0]!r} has the name of a graph "
            f"{'input' if clash[0] == MASK_INPUT else 'output'}",
            job.checkpoint,
        )
    return [m for m in names if m in chosen]


def _trace(
    graph: ExportGraph, inputs: tuple[torch.Tensor, ...], job: ExportJob, backbone: str
) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(
            graph, inputs, dynamic_shapes=graph.dynamic_shapes(job.dynamic), strict=False
        )
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        hint = "; export without --dynamic (fixed --size)" if job.dynamic else ""
        raise CheckpointError(
            f"the model (backbone {backbone}) cannot be expressed as a graph"
            f"{' with dynamic H and W' if job.dynamic else ''}: {first}{hint}",
            job.checkpoint,
        ) from err


def _run_file(path: Path, fmt: GraphFormat, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Logits of the written file on ``inputs``, read back as a user would."""
    if fmt == "onnx":
        session, meta = onnx_session(path, ["CPUExecutionProvider"])
        feed = {name: t.numpy() for name, t in zip(meta.inputs, inputs)}
        return session.run([LOGITS_OUTPUT], feed)[0]
    program, _ = load_exported_program(path)
    with torch.inference_mode():
        out = program.module()(*inputs)
    return (out[0] if isinstance(out, tuple) else out).numpy()


def run_export(job: ExportJob, on_step: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``job.checkpoint`` (all or nothing: the file appears only when complete).

    Args:
        job: the request.
        on_step: called with a short phase name (``tracing``, ``writing``, ``checking``).

    Raises:
        UsageError: bad option values.
        CheckpointError: an unreadable checkpoint, or one the graph cannot express.
        SgmaError: ONNX requested but the ``onnx`` extra is not installed.
    """
    start = time.perf_counter()
    step = on_step or (lambda _: None)
    _check(job)
    if job.format == "onnx":
        require_packages(ONNX_PACKAGES, "sgma export --format onnx")
    model, ckpt_meta = load_model(job.checkpoint, "cpu")
    names = _graph_modalities(job, ckpt_meta.modality_names)
    size = job.size or _default_size(ckpt_meta.tile_size)
    graph = ExportGraph(model, names, robustness=job.robustness).eval()
    inputs = graph.example_inputs(size)
    step("tracing")
    with torch.no_grad():
        program = _trace(graph, inputs, job, ckpt_meta.model.get("backbone", "?"))
        reference = graph(*inputs)
    reference = reference[0] if isinstance(reference, tuple) else reference
    meta = ExportMeta(
        graph_format=job.format,
        checkpoint=Path(job.checkpoint).name,
        checkpoint_sha256=file_sha256(Path(job.checkpoint)),
        modalities=names,
        inputs=[*names, MASK_INPUT],
        outputs=[LOGITS_OUTPUT, *([ROBUSTNESS_OUTPUT] if job.robustness else [])],
        size=None if job.dynamic else size,
        robustness=job.robustness,
        meta=ckpt_meta.model_copy(update={"recipe": {}}),
    )
    step("writing")
    out = Path(job.out)
    if job.format == "onnx":
        write_onnx(program, out, meta)
    else:
        write_exported_program(program, out, meta)
    step("checking")
    try:
        diff = float(np.abs(_run_file(out, job.format, inputs) - reference.numpy()).max())
    except BaseException:
        out.unlink(missing_ok=True)  # a file that cannot run is not a result
        raise
    return ExportResult(out, meta, out.stat().st_size, diff, time.perf_counter() - start)


def _default_size(tile_size: int | None, fallback: int = 512) -> int:
    """The training tile size rounded up to a multiple of 32 (as predict's window), else 512."""
    if tile_size:
        return int(-(-tile_size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return fallback
