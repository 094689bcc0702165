"""One writer per output: a lock file beside each output that a job writes.

``prepare`` (its DATA_DIR), ``train`` (its run folder) and ``predict`` (each output file)
hold a lock while they write, so a second job pointed at the same output refuses with one
line instead of mixing its files with the first one's (or deleting them with
``--overwrite``). The lock is a small JSON file beside the output::

    <parent>/.<name>.sgma-lock    {"pid": 4242, "host": "node1", "started": "...",
                                   "command": "sgma prepare", "proc_start": "123456"}

It is created atomically with its content (written under a temporary name, then hard-linked
onto the lock name, which fails if a lock is there), and removed when the job ends, however
it ends short of a kill. A lock left by a killed job is *stale*: its host is this machine
and its process is gone (or the pid now belongs to another process, told apart by the
process start time on Linux). A stale lock is taken over; a lock held by a live process, or
by another machine (whose processes this one cannot see), is refused with the owner's pid
and host and how to remove the lock if that job is known to be gone.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sgma_cli.errors import UsageError

__all__ = ["LOCK_SUFFIX", "lock_path", "lock_owner", "refuse_if_locked", "output_lock"]

LOCK_SUFFIX = ".sgma-lock"

#: Locks this process holds (resolved lock paths): a lock naming this pid but absent here
#: was left by an earlier process that had the same pid (containers reuse low pids).
_HELD: set[Path] = set()


def lock_path(output: Path) -> Path:
    """The lock file of ``output`` (a file or a folder): ``.<name>.sgma-lock`` beside it.

    The folder is resolved (symbolic links, ``..``), so two spellings of one output share
    one lock.
    """
    output = Path(output).expanduser().absolute()
    return output.parent.resolve() / f".{output.name}{LOCK_SUFFIX}"


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (command)"
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _read(lock: Path) -> dict[str, Any] | None:
    """The lock's owner record; ``None`` when the file is gone or not a lock record."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: judged by _stale
    return owner if isinstance(owner, dict) else {}


def _stale(owner: dict[str, Any], lock: Path) -> bool:
    """Whether the job that wrote ``owner`` is known to be gone."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int) or not isinstance(host, str):
        # no owner record: a job killed while creating its lock. The link makes a complete
        # record appear at once, so only a file older than a few seconds is judged stale.
        with contextlib.suppress(OSError):
            return time.time() - lock.stat().st_mtime > 10
        return True
    if host != socket.gethostname():
        return False  # another machine's process: cannot tell, so never taken over
    if pid == os.getpid():
        return lock.resolve() not in _HELD
    if not _alive(pid):
        return True
    started, now = owner.get("proc_start"), _proc_start(pid)
    return started is not None and now is not None and str(started) != now


def lock_owner(output: Path) -> dict[str, Any] | None:
    """The record of the live job holding ``output``, or ``None`` (no lock, or a stale one)."""
    lock = lock_path(output)
    owner = _read(lock)
    if owner is None or _stale(owner, lock):
        return None
    return owner


def _refusal(output: Path, owner: dict[str, Any], lock: Path) -> UsageError:
    who = owner.get("command") or "another sgma job"
    since = f" since {owner['started']}" if owner.get("started") else ""
    where = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    return UsageError(
        f"{who} ({where}{since}) is writing here; wait for it to finish or choose another "
        f"output (if that job is gone, delete {lock})",
        output,
    )


def refuse_if_locked(output: Path) -> None:
    """Raise :class:`UsageError` if a live job holds ``output`` (a check, not a lock).

    Jobs call this before their slow checks, so a second run is refused at once; the
    lock itself is taken by :func:`output_lock` when writing starts.
    """
    owner = lock_owner(output)
    if owner is not None:
        raise _refusal(Path(output), owner, lock_path(output))


def _record(command: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "proc_start": _proc_start(os.getpid()),
    }


def _remove_dead_temps(lock: Path) -> None:
    """Delete ``<lock>.<pid>.tmp`` / ``.stale`` files of processes that are gone: a job
    killed between writing its record and linking it (or during a take-over) leaves one."""
    for tmp in lock.parent.glob(f"{glob.escape(lock.name)}.*"):
        pid = tmp.name[len(lock.name) + 1 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _create(lock: Path, record: dict[str, Any]) -> bool:
    """Create ``lock`` holding ``record`` unless it exists; True when created."""
    _remove_dead_temps(lock)
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    try:
        os.link(tmp, lock)  # atomic, fails if the lock exists, and the lock is never empty
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record))
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(lock: Path, seen: dict[str, Any]) -> None:
    """Move a stale ``lock`` away, unless another job replaced it since it was judged."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another job took it over first
    if _read(aside) != seen:  # a fresh lock was put there meanwhile: give it back
        with contextlib.suppress(OSError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


def _acquire(output: Path, command: str) -> Path:
    lock = lock_path(output)
    record = _record(command)
    for _ in range(5):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            created = _create(lock, record)
        except OSError as err:
            raise UsageError(
                f"cannot create the lock file {lock.name} beside the output "
                f"({err.strerror or err}); sgma needs to write in {lock.parent}",
                output,
            ) from None
        if created:
            _HELD.add(lock.resolve())
            return lock
        owner = _read(lock)
        if owner is None:
            continue  # released meanwhile
        if not _stale(owner, lock):
            raise _refusal(Path(output), owner, lock)
        _take_over(lock, owner)
    raise UsageError(f"could not take the lock {lock}; another job keeps replacing it", output)


def _release(lock: Path) -> None:
    _HELD.discard(lock.resolve())
    owner = _read(lock)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(outputs: Path | Iterable[Path], command: str) -> Iterator[list[Path]]:
    """Hold the locks of ``outputs`` (files or folders) while the block runs.

    Args:
        outputs: what the job writes; one lock file each, taken in sorted order.
        command: who holds it, shown to a refused job (e.g. ``"sgma prepare"``).

    Yields:
        The lock files.

    Raises:
        UsageError: a live job (or a job on another machine) holds one of them; locks
            already taken by this call are released.
    """
    paths = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    ordered = sorted({lock_path(p): Path(p) for p in paths}.items())
    held: list[Path] = []
    try:
        for _, output in ordered:
            held.append(_acquire(output, command))
        yield held
    finally:
        for lock in reversed(held):
            with contextlib.suppress(OSError):
                _release(lock)
