"""Writing and reading the two file formats of ``sgma export``.

* **ONNX** (``.onnx``): converted from the ``torch.export`` program by torch's ONNX
  exporter (which needs ``onnx`` and ``onnxscript``), weights inside the one file, the
  metadata JSON under ``metadata_props["sgma"]``; run by ONNX Runtime.
* **ExportedProgram** (``.pt2``): ``torch.export.save`` with the JSON as the extra file
  ``sgma.json``; run by ``torch.export.load(...).module()``, no sgma model code needed.

Both are written under a temporary name in the output folder and renamed at the end, so
a failed export never leaves a finished-looking file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from sgma_cli.engine.export.metadata import EXTRA_FILE, METADATA_KEY, ExportMeta, parse_export_meta
from sgma_cli.errors import CheckpointError, SgmaError

__all__ = [
    "ONNX_PACKAGES",
    "require_packages",
    "write_onnx",
    "write_exported_program",
    "read_onnx_meta",
    "onnx_session",
    "load_exported_program",
]

#: What ``sgma export --format onnx`` imports (the ``onnx`` extra).
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
_EXTRA = "pip install 'sgma-cli[onnx]'"


def require_packages(names: Sequence[str], purpose: str) -> None:
    """Import ``names`` or raise one :class:`SgmaError` line naming the missing ones and the fix."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise SgmaError(
            f"{purpose} needs the optional package(s) {', '.join(missing)}, not installed; "
            f"install the onnx extra: {_EXTRA}"
        )


#: Loggers of the exporters whose warnings say nothing a user can act on.
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the exporters' progress prints and warnings (they would interleave with the CLI)."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


def write_onnx(program: torch.export.ExportedProgram, path: Path, meta: ExportMeta) -> Path:
    """Convert ``program`` to one self-contained ONNX file at ``path`` with ``meta`` in it.

    Raises:
        CheckpointError: the exporter cannot translate an operator of the graph.
    """
    tmp = _temporary(path)
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program,
                (),
                dynamo=True,
                input_names=meta.inputs,
                output_names=meta.outputs,
                external_data=False,
            )
        if onnx_program is None:  # pragma: no cover - only the legacy exporter returns None
            raise RuntimeError("the ONNX exporter returned no program")
        onnx_program.model.metadata_props[METADATA_KEY] = meta.to_json()
        with _quiet():
            onnx_program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        raise CheckpointError(
            f"the model cannot be expressed in ONNX ({_first_line(err)})", meta.checkpoint
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_exported_program(
    program: torch.export.ExportedProgram, path: Path, meta: ExportMeta
) -> Path:
    """Save ``program`` as a ``.pt2`` archive with ``meta`` as its extra file ``sgma.json``."""
    tmp = _temporary(path)
    try:
        with _quiet():
            torch.export.save(program, tmp, extra_files={EXTRA_FILE: meta.to_json()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_onnx_meta(path: Path) -> ExportMeta:
    """The sgma metadata of an ONNX file (reads the graph, not the weights' values)."""
    require_packages(("onnx",), "reading an ONNX file")
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"not a readable ONNX file ({_first_line(err)})", path) from None
    props = {p.key: p.value for p in proto.metadata_props}
    return parse_export_meta(props.get(METADATA_KEY), path)


def onnx_session(
    path: Path, providers: Sequence[str | tuple[str, dict[str, Any]]], threads: int | None = None
) -> tuple[Any, ExportMeta]:
    """An ONNX Runtime session on ``path`` and the file's :class:`ExportMeta`.

    Args:
        path: the ``.onnx`` file.
        providers: ONNX Runtime execution providers, in order of preference.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).

    Returns:
        ``(session, meta)``.

    Raises:
        SgmaError: onnxruntime is not installed.
        CheckpointError: unreadable file or no sgma metadata in it.
    """
    require_packages(("onnxruntime",), "running an ONNX model")
    import onnxruntime as ort

    if not Path(path).is_file():
        raise CheckpointError("model file not found", path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no provider-fallback chatter on stderr
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as err:
        # onnxruntime's own errors (InvalidProtobuf, Fail, ...) derive from Exception only
        if not isinstance(err, (RuntimeError, ValueError, OSError)) and not _from_onnxruntime(err):
            raise
        raise CheckpointError(f"not a readable ONNX model ({_first_line(err)})", path) from None
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return session, parse_export_meta(text, path)


def load_exported_program(path: Path) -> tuple[torch.export.ExportedProgram, ExportMeta]:
    """Load a ``.pt2`` written by ``sgma export`` and its :class:`ExportMeta`."""
    if not Path(path).is_file():
        raise CheckpointError("model file not found", path)
    extra = {EXTRA_FILE: ""}
    try:
        with _quiet():
            program = torch.export.load(path, extra_files=extra)
    except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"not a readable ExportedProgram archive ({_first_line(err)})", path
        ) from None
    return program, parse_export_meta(extra[EXTRA_FILE], path)


def _from_onnxruntime(err: BaseException) -> bool:
    return type(err).__module__.startswith("onnxruntime")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]
