"""``sgma_cli.data.atomic``: temporary names, all-or-none publishing, write-error lines."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sgma_cli.data.atomic as atomic
from sgma_cli.data.atomic import publish, remove_stale_temps, temp_path, write_errors
from sgma_cli.errors import OutputError, RasterError
from tests.reliability.conftest import Faults, oserror


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    code = "import os; print(os.getpid())"
    proc = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, check=True)
    return int(proc.stdout)


class TestTemporaries:
    def test_temp_name_is_hidden_beside_the_output(self, tmp_path: Path) -> None:
        tmp = temp_path(tmp_path / "map.tif", "cog")
        assert tmp == tmp_path / f".map.tif.{os.getpid()}.cog.tif"

    def test_only_temporaries_of_gone_processes_are_removed(self, tmp_path: Path) -> None:
        out = tmp_path / "map.gpkg"
        dead, parent = _dead_pid(), os.getppid()
        stale = [
            tmp_path / f".map.gpkg.{dead}.part.gpkg",
            tmp_path / f".map.gpkg.{dead}.part.gpkg-journal",
        ]
        kept = [
            tmp_path / f".map.gpkg.{os.getpid()}.part.gpkg",  # this process's
            tmp_path / f".map.gpkg.{parent}.part.gpkg",  # a live process's
            tmp_path / ".map.gpkg.sgma-lock",  # not a temporary
            tmp_path / ".map.gpkg2.1.part.gpkg",  # another output's
            out,
        ]
        for p in stale + kept:
            p.write_text("x")
        (tmp_path / f".map.gpkg.{dead}.tmp").mkdir()  # a temporary folder too
        removed = remove_stale_temps(out)
        assert sorted(removed) == sorted([*stale, tmp_path / f".map.gpkg.{dead}.tmp"])
        assert sorted(tmp_path.iterdir()) == sorted(kept)


class TestWriteErrors:
    @pytest.mark.parametrize(
        ("code", "line"),
        [
            (errno.ENOSPC, "No space left on device); free some space, then run it again"),
            (errno.EROFS, "Read-only file system); make the folder writable, then run it again"),
            (errno.EIO, "Input/output error); run it again"),
        ],
    )
    def test_oserror_becomes_one_line(self, tmp_path: Path, code: int, line: str) -> None:
        with pytest.raises(OutputError) as caught:
            with write_errors(tmp_path / "a.tif", again="run it again"):
                raise oserror(code)
        assert str(caught.value) == f"{tmp_path / 'a.tif'}: cannot write ({line}"
        assert isinstance(caught.value, OSError)

    def test_library_errors_only_when_named(self, tmp_path: Path) -> None:
        sqlite = RuntimeError("failed to execute insert : database or disk is full")
        with pytest.raises(OutputError, match=r"\(No space left on device\); free some space"):
            with write_errors(tmp_path / "v.gpkg", kinds=(RuntimeError,)):
                raise sqlite
        with pytest.raises(RuntimeError), write_errors(tmp_path / "v.gpkg"):
            raise RuntimeError("a bug, not a write error")
        with pytest.raises(RasterError), write_errors(tmp_path / "v.gpkg"):
            raise RasterError("already one line", tmp_path)  # an SgmaError passes through

    def test_cause_and_full_disk(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def wrapped() -> None:
            try:
                raise ValueError("TIFFAppendToStrip:Write error at scanline 160")
            except ValueError as cause:
                raise OSError("Write failed. See previous exception for details.") from cause

        with pytest.raises(
            OutputError, match=r"\(TIFFAppendToStrip:Write error at scanline 160\); run"
        ):
            with write_errors(tmp_path / "a.tif"):
                wrapped()
        monkeypatch.setattr(atomic, "NEARLY_FULL", 1 << 62)  # every disk looks full
        with pytest.raises(OutputError, match=r"\(No space left on device\); free some space"):
            with write_errors(tmp_path / "a.pt", kinds=(RuntimeError,)):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")


class TestPublish:
    def _pairs(self, folder: Path, names: list[str]) -> list[tuple[Path, Path]]:
        pairs = []
        for name in names:
            tmp = temp_path(folder / name)
            tmp.write_text(f"new {name}")
            pairs.append((tmp, folder / name))
        return pairs

    def test_all_in_order(self, tmp_path: Path) -> None:
        publish(self._pairs(tmp_path, ["a.tif", "b.tif", "c.gpkg"]))
        assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
            n: f"new {n}" for n in ("a.tif", "b.tif", "c.gpkg")
        }

    def test_a_failed_rename_leaves_none_old_or_new(self, tmp_path: Path, faults: Faults) -> None:
        for name in ("a.tif", "b.tif", "c.gpkg"):
            (tmp_path / name).write_text(f"old {name}")
        (tmp_path / "mine.txt").write_text("not an output")
        pairs = self._pairs(tmp_path, ["a.tif", "b.tif", "c.gpkg"])
        faults.fail(os, "replace", at=2, code=errno.EIO)
        with pytest.raises(OutputError, match=r"b.tif: cannot write \(Input/output error\)"):
            publish(pairs)
        assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
