"""One writer per output: lock files beside outputs, refused while held, taken over when stale."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgma_cli.engine.locks import lock_owner, lock_path, output_lock, refuse_if_locked
from sgma_cli.errors import UsageError

HOLDER = """
import sys, time
from pathlib import Path
from sgma_cli.engine.locks import output_lock
with output_lock(Path(sys.argv[1]), "sgma prepare"):
    print("held", flush=True)
    time.sleep(120)
"""


def _write_lock(output: Path, **record: object) -> Path:
    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(record))
    return lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock of ``tmp_path / "out"`` until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class TestOutputLock:
    def test_held_while_running_and_removed_after(self, tmp_path: Path) -> None:
        out = tmp_path / "data"
        with output_lock(out, "sgma prepare") as locks:
            assert locks == [tmp_path / ".data.sgma-lock"]
            record = json.loads(locks[0].read_text())
            assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
            assert record["command"] == "sgma prepare"
            assert lock_owner(out)["pid"] == os.getpid()
        assert not locks[0].exists() and lock_owner(out) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing else left behind

    def test_two_spellings_share_one_lock(self, tmp_path: Path) -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "a")
        with output_lock(tmp_path / "a" / "data", "sgma prepare"):
            for other in (tmp_path / "a" / ".." / "a" / "data", tmp_path / "link" / "data"):
                with pytest.raises(UsageError, match="is writing here"):
                    refuse_if_locked(other)

    def test_released_on_error(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError), output_lock(tmp_path / "x.tif", "sgma predict"):
            raise RuntimeError("boom")
        assert not lock_path(tmp_path / "x.tif").exists()

    def test_second_holder_in_this_process_is_refused(self, tmp_path: Path) -> None:
        with output_lock(tmp_path / "out", "sgma train"):
            with pytest.raises(UsageError, match=r"sgma train \(pid \d+ on .*\) is writing here"):
                refuse_if_locked(tmp_path / "out")
            with pytest.raises(UsageError, match="is writing here"):
                with output_lock(tmp_path / "out", "sgma train"):
                    pass
            assert lock_path(tmp_path / "out").exists()  # the refused one did not remove it

    def test_another_process_holds_it(self, tmp_path: Path, holder: subprocess.Popen) -> None:
        out = tmp_path / "out"
        with pytest.raises(UsageError) as err:
            with output_lock(out, "sgma prepare"):
                pass
        text = str(err.value)
        assert "\n" not in text
        assert text.startswith(f"{out}: sgma prepare (pid {holder.pid} on {socket.gethostname()}")
        assert text.endswith(f"(if that job is gone, delete {lock_path(out)})")
        with pytest.raises(UsageError, match=f"pid {holder.pid}"):
            refuse_if_locked(out)

    def test_killed_holder_leaves_a_stale_lock_that_is_taken_over(
        self, tmp_path: Path, holder: subprocess.Popen
    ) -> None:
        out = tmp_path / "out"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert json.loads(lock_path(out).read_text())["pid"] == holder.pid  # left behind
        refuse_if_locked(out)  # stale: no refusal
        with output_lock(out, "sgma prepare") as locks:
            assert json.loads(locks[0].read_text())["pid"] == os.getpid()
        assert not lock_path(out).exists()


class TestStaleOrNot:
    def test_dead_pid_is_taken_over(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        _write_lock(out, pid=_dead_pid(), host=socket.gethostname(), command="sgma train")
        assert lock_owner(out) is None
        with output_lock(out, "sgma train") as locks:
            assert json.loads(locks[0].read_text())["pid"] == os.getpid()

    def test_live_foreign_pid_is_refused(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        parent = os.getppid()  # alive for as long as this test runs
        _write_lock(out, pid=parent, host=socket.gethostname(), command="sgma train")
        with pytest.raises(UsageError, match=f"sgma train \\(pid {parent} on"):
            with output_lock(out, "sgma train"):
                pass
        assert json.loads(lock_path(out).read_text())["pid"] == parent  # untouched

    def test_reused_pid_is_taken_over(self, tmp_path: Path) -> None:
        """The pid runs, but it is a newer process than the one that wrote the lock."""
        out = tmp_path / "run"
        _write_lock(out, pid=os.getppid(), host=socket.gethostname(), proc_start="1")
        if lock_owner(out) is not None:
            pytest.skip("no /proc start times on this system")
        with output_lock(out, "sgma train"):
            pass

    def test_own_pid_not_held_here_is_taken_over(self, tmp_path: Path) -> None:
        """A container's earlier run had the same pid as this process."""
        out = tmp_path / "run"
        _write_lock(out, pid=os.getpid(), host=socket.gethostname(), proc_start="1")
        with output_lock(out, "sgma train"):
            assert json.loads(lock_path(out).read_text())["proc_start"] != "1"

    def test_other_host_is_refused(self, tmp_path: Path) -> None:
        out = tmp_path / "map.tif"
        _write_lock(out, pid=1, host="elsewhere.example", command="sgma predict")
        with pytest.raises(UsageError, match=r"sgma predict \(pid 1 on elsewhere\.example\)"):
            with output_lock(out, "sgma predict"):
                pass

    def test_unreadable_lock_is_stale_only_when_old(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        lock = lock_path(out)
        lock.write_bytes(b"\x00{half")
        with pytest.raises(UsageError, match=r"another sgma job \(pid \? on \?\)"):
            refuse_if_locked(out)
        old = time.time() - 60
        os.utime(lock, (old, old))
        with output_lock(out, "sgma train") as locks:
            assert json.loads(locks[0].read_text())["pid"] == os.getpid()

    def test_several_outputs_all_or_none(self, tmp_path: Path) -> None:
        first, second = tmp_path / "a.tif", tmp_path / "b.gpkg"
        _write_lock(second, pid=os.getppid(), host=socket.gethostname())
        with pytest.raises(UsageError, match="b.gpkg: another sgma job"):
            with output_lock([first, second], "sgma predict"):
                pass
        assert not lock_path(first).exists()  # taken, then released with the refusal

    def test_release_keeps_a_lock_that_is_not_ours(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        with output_lock(out, "sgma train") as locks:
            locks[0].write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
        assert json.loads(lock_path(out).read_text())["pid"] == os.getppid()


class TestJobsTakeTheLock:
    """prepare, train and predict refuse an output that a live job holds, with one line."""

    def test_prepare(self, tmp_path: Path) -> None:
        from sgma_cli.engine.prepare import PrepareOptions, prepare
        from tests.conftest import make_tiny_scene

        scene, out = make_tiny_scene(tmp_path / "scene", size=64), tmp_path / "data"
        options = PrepareOptions(src=scene, out=out, tile=32, stride=32, split="1,0,0")
        _write_lock(out, pid=os.getppid(), host=socket.gethostname(), command="sgma prepare")
        with pytest.raises(UsageError, match=r"data: sgma prepare \(pid \d+ on .*writing here"):
            prepare(options)
        assert not out.exists()  # refused before anything was written
        _write_lock(out, pid=_dead_pid(), host=socket.gethostname(), command="sgma prepare")
        report = prepare(options)  # the stale lock of a killed run is taken over
        assert report.tiles_written == 4 and (out / "dataset.toml").is_file()
        assert not lock_path(out).exists()

    def test_prepare_cli_one_line(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from sgma_cli.cli.app import app
        from tests.conftest import make_tiny_scene

        scene, out = make_tiny_scene(tmp_path / "scene", size=64), tmp_path / "data"
        with output_lock(out, "sgma prepare"):
            result = CliRunner().invoke(app, ["prepare", str(scene), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "sgma prepare (pid" in result.output and "is writing here" in result.output

    def test_train(self, tiny_dataset: Path, tmp_path: Path) -> None:
        from sgma_cli.config.recipe import load_recipe
        from sgma_cli.engine.train import TrainOptions, plan_training, train

        recipe = load_recipe(None, ["model.backbone='test_convnext'", "data.batch_size=1"])
        options = TrainOptions(data_dir=tiny_dataset, run_dir=tmp_path / "run", device="cpu")
        with output_lock(tmp_path / "run", "sgma train"):
            with pytest.raises(UsageError, match=r"run: sgma train \(pid .*is writing here"):
                plan_training(recipe, options)
            with pytest.raises(UsageError, match="is writing here"):
                train(recipe, options)
        assert plan_training(recipe, options).run_dir == (tmp_path / "run").resolve()

    def test_predict(self, tiny_checkpoint: Path, tiny_scene: Path, tmp_path: Path) -> None:
        from sgma_cli.engine.predict.job import PredictJob, run_predict

        job = PredictJob(
            tiny_checkpoint,
            tiny_scene,
            tmp_path / "map.tif",
            window=64,
            vectorize=tmp_path / "map.gpkg",
        )
        _write_lock(tmp_path / "map.gpkg", pid=os.getppid(), host=socket.gethostname())
        with pytest.raises(UsageError, match=r"map\.gpkg: another sgma job \(pid"):
            run_predict(job)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".map.gpkg.sgma-lock",
            "scene",
            "tiny.pt",
        ]
        lock_path(tmp_path / "map.gpkg").unlink()
        result = run_predict(job)
        assert result.outputs["classes"].is_file() and result.outputs["vectors"].is_file()
        assert not list(tmp_path.glob(".*.sgma-lock"))
