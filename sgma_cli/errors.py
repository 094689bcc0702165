"""Typed errors raised by sgma's engine and data layers.

The command line catches :class:`SgmaError` at its edge and prints one red line with
the message, then exits with :attr:`SgmaError.exit_code`. Everything else is a bug and
keeps its traceback. Subclasses mix in the builtin they refine, so library users can
catch either ``RasterError`` or ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SgmaError",
    "UsageError",
    "ConfigError",
    "RecipeError",
    "DatasetError",
    "RasterError",
    "CheckpointError",
    "DeviceError",
    "OutputError",
]


class SgmaError(Exception):
    """Base class of every error the user can fix; carries the process exit code.

    Args:
        message: One line saying what is wrong and, where possible, how to fix it.
        path: The file or folder at fault; prefixed to the message when given.
    """

    exit_code: int = 1

    def __init__(self, message: str, path: str | Path | object | None = None) -> None:
        # a URL ("https://...") or a raster source keeps its own text: Path() would fold "//"
        self.path: Path | str | object | None = (
            Path(path)
            if isinstance(path, Path) or (isinstance(path, str) and "://" not in path)
            else path
        )
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class UsageError(SgmaError, ValueError):
    """A command-line option or argument that cannot be honoured (exit code 2)."""

    exit_code = 2


class ConfigError(SgmaError, ValueError):
    """A model or run configuration that is inconsistent."""


class RecipeError(ConfigError):
    """A recipe TOML file that does not validate against the recipe schema."""


class DatasetError(SgmaError, ValueError):
    """A prepared dataset (``dataset.toml`` + tiles) that is missing or inconsistent."""


class RasterError(SgmaError, OSError):
    """A raster or vector input that cannot be read or does not fit the others."""


class CheckpointError(SgmaError, ValueError):
    """A checkpoint that is unreadable, not an sgma checkpoint, or does not fit."""


class DeviceError(SgmaError, RuntimeError):
    """A device request that this machine cannot satisfy (e.g. more GPUs than exist)."""


class OutputError(SgmaError, OSError):
    """An output that could not be written (disk full, an I/O error, a read-only folder).

    Raised after the partial output was removed: nothing that looks finished is left, and
    running the command again (``--resume`` for ``train``) completes the job.
    """
