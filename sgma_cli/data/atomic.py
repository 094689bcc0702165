"""Atomic outputs: temporary names, renames into place, and write errors as one line.

Every file sgma writes goes first to a hidden temporary name in its destination folder
(:func:`temp_path`) and is renamed onto its final name once complete; a rename within one
folder is atomic, so a name that looks finished always holds a whole file. Outputs that
belong together (a prediction's rasters and polygons, a report's files) are renamed by
:func:`publish` in a fixed order, all or none. A killed run leaves only hidden temporaries,
which the next run removes (:func:`remove_stale_temps`: those of processes that are gone).

Write errors reach sgma as ``OSError`` (disk full, I/O error, read-only folder) or as a
library's own exception (GDAL, pyogrio, ``torch.save``); :func:`write_errors` turns them
into one :class:`~sgma_cli.errors.OutputError` line that names the output, the reason and
what to do next.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from sgma_cli.errors import OutputError, SgmaError

__all__ = [
    "temp_path",
    "remove_stale_temps",
    "remove_quietly",
    "write_errors",
    "write_failure",
    "publish",
]

#: Below this many free bytes a library's vague write error is reported as a full disk.
NEARLY_FULL = 1 << 20

_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def temp_path(path: Path, tag: str = "tmp") -> Path:
    """``.<name>.<pid>.<tag><suffix>`` beside ``path`` (same folder, so renaming is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_quietly(path: Path) -> None:
    """Delete a file or folder if it is there; errors are ignored (best-effort cleanup)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by processes that no longer run.

    Temporaries are ``.<name>.<pid>.*`` beside ``path`` (:func:`temp_path`, plus what
    SQLite adds to them, e.g. ``-journal``); those of this process and of live processes
    are kept. Returns what was removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return removed
    for candidate in parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid = candidate.name[len(prefix) :].split(".", 1)[0].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        remove_quietly(candidate)
        removed.append(candidate)
    return removed


def _nearly_full(path: Path) -> bool:
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return False
    try:
        return shutil.disk_usage(existing).free < NEARLY_FULL
    except OSError:
        return False


def _message(err: BaseException) -> str:
    """The most specific message of ``err``'s chain (a library's 'see previous exception'
    wrapper points at the cause), first line only, without C++ assertion prefixes."""
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text:
            chain.append(text.splitlines()[0])
        current = current.__cause__ or current.__context__
    text = chain[-1] if chain else type(err).__name__
    if text.startswith("[enforce fail"):  # torch.save's C++ check: not a reason
        text = "write failed"
    return text[:120]


def write_failure(err: BaseException, path: Path) -> str:
    """Why writing ``path`` failed, in a few words: the OS reason (``No space left on
    device``), a full disk where a library gives none, else the library's message."""
    code = getattr(err, "errno", None)
    if isinstance(err, OSError) and isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code)
    text = _message(err)
    full = ("disk is full", "no space left")  # SQLite's and the OS's words, as libraries pass them
    if _nearly_full(Path(path)) or any(f in text.lower() for f in full):
        return os.strerror(errno.ENOSPC)
    return text


def _line(err: BaseException, path: Path, again: str) -> str:
    """``cannot write (<reason>); <what to do>`` for a write of ``path`` that raised ``err``."""
    reason = write_failure(err, path)
    code = getattr(err, "errno", None)
    if code in _SPACE or reason == os.strerror(errno.ENOSPC):
        step = f"free some space, then {again}"
    elif code in _READ_ONLY:
        step = f"make the folder writable, then {again}"
    else:
        step = again
    return f"cannot write ({reason}); {step}"


@contextlib.contextmanager
def write_errors(
    path: Path,
    *,
    kinds: Sequence[type[BaseException]] = (),
    again: str = "run the command again",
) -> Iterator[None]:
    """Turn a write error inside the block into :class:`OutputError` naming ``path``.

    Args:
        path: the output the user knows (its final name, not the temporary one).
        kinds: library exceptions that also mean a failed write (``OSError`` always does),
            e.g. pyogrio's ``RuntimeError`` subclasses or ``torch.save``'s ``RuntimeError``.
        again: what completes the job afterwards (``run the command again``).

    :class:`~sgma_cli.errors.SgmaError` passes through unchanged. The caller removes its
    partial output (typically in a ``finally`` or an outer handler).
    """
    try:
        yield
    except SgmaError:
        raise
    except (OSError, *kinds) as err:
        raise OutputError(_line(err, Path(path), again), path) from None


def publish(pairs: Sequence[tuple[Path, Path]], again: str = "run the command again") -> None:
    """Rename each finished temporary onto its output, in the given order: all or none.

    Put the output that marks a finished job last (a prediction's GeoPackage, a report's
    ``metrics.json``). If a rename fails, every output of ``pairs`` (those just renamed and
    any older ones at the later paths) and every temporary is removed, so no mix of new and
    old outputs is left, then :class:`OutputError` names the output that failed.
    """
    for i, (tmp, final) in enumerate(pairs):
        try:
            os.replace(tmp, final)
        except OSError as err:
            for t, f in pairs[i:]:
                remove_quietly(t)
                remove_quietly(f)
            for _, f in pairs[:i]:
                remove_quietly(f)
            raise OutputError(_line(err, Path(final), again), final) from None
