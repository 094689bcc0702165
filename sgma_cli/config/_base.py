"""Shared pieces of the schema modules: strict models, TOML reading, one-line errors."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "StrictModel",
    "NamedClassesAndModalities",
    "read_toml",
    "explain_validation_error",
    "path_inside",
    "tomllib",
]


class StrictModel(BaseModel):
    """Frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedClassesAndModalities(StrictModel):
    """A schema with ``classes`` and ``modalities`` lists of named entries (a dataset
    manifest, a checkpoint's metadata): their names, in stored order."""

    @property
    def class_names(self) -> list[str]:
        """Class names by index."""
        return [c.name for c in self.classes]  # type: ignore[attr-defined]

    @property
    def modality_names(self) -> list[str]:
        """Modality names in stored order: the model's input order, the mask's band order."""
        return [m.name for m in self.modalities]  # type: ignore[attr-defined]


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """Parse a TOML file; unreadable or malformed files raise ``error`` naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error("file not found", path) from None
    except OSError as err:
        raise error(f"cannot read: {err.strerror}", path) from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"not valid TOML: {err}", path) from None
    except UnicodeDecodeError as err:
        raise error(f"not valid TOML: not UTF-8 text (byte {err.start})", path) from None
    except RecursionError:
        raise error("not valid TOML: arrays or tables nested too deeply", path) from None


def path_inside(
    folder: Path, text: object, source: Path, error: type[Exception], what: str = "path"
) -> Path:
    """``folder / text`` for a path that a file names (e.g. ``sample.json``'s file names).

    Paths read from files stay inside their folder: an absolute path (``/x``, ``C:\\x``,
    ``\\\\server\\x``), a ``..`` part, an empty name or a NUL byte is refused, so a damaged
    or crafted file cannot make sgma read or write elsewhere. The check is on the text
    (symbolic links inside the folder are the user's own choice and are followed).

    Raises:
        error: ``error(message, source)``, one line naming the file that holds the path.
    """
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise error(f"{what} {str(text)[:80]!r} is not a file name", source)
    pure = PurePosixPath(text.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(text).drive or ".." in pure.parts:
        raise error(
            f"{what} {text[:80]!r} leads outside {folder}; only paths inside it are read",
            source,
        )
    return Path(folder) / pure


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that holds the last key of ``loc``."""
    current: Any = model
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        field = getattr(current, "model_fields", {}).get(key)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
            inner = getattr(candidate, "__args__", ())
            found = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if found:
                current = found[0]
                break
    return list(getattr(current, "model_fields", {}))


def _printable(text: str) -> str:
    """``text`` as is, or escaped when it holds line breaks or other control characters
    (a key from a file must not break the one-line error)."""
    return text if text.isprintable() else repr(text)[1:-1]


def explain_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of a pydantic error as one line: ``key.path: problem`` (+ did you mean)."""
    errors = err.errors()
    # A misspelt key also shows up as a missing one; the misspelling is the useful line.
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = tuple(first.get("loc", ()))
    key = ".".join(_printable(str(p)) for p in loc) or "(top level)"
    if first.get("type") == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc), n=1)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!s}?" if close else ""
        return f"unknown key {key}{hint}"
    value = first.get("input")
    text = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."
    shown = f" (got {text})" if value is not None and not isinstance(value, dict) else ""
    extra = f"; {err.error_count() - 1} more problem(s)" if err.error_count() > 1 else ""
    return f"{key}: {first.get('msg', 'invalid')}{shown}{extra}"
