"""RayExecutor on a local Ray cluster (this machine, 2 CPUs, started once for the module).

Toy ``setup``/``work`` functions record what ran where in files under ``tmp_path``: every
task runs once, ``setup`` once per actor, a free actor takes the next task, a worker killed
mid-task is replaced and its task rerun, an sgma error is final, a setup error or a bug
stops the run. Missing Ray and an unreachable address are one line each.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sgma_cli.engine.predict.executors import LocalExecutor
from sgma_cli.engine.predict.ray_executor import (
    RayExecutor,
    _exit_on_sigterm,
    _host_port,
    forwarded_environment,
    require_ray,
)
from sgma_cli.errors import CheckpointError, RasterError, SgmaError, UsageError

ray = pytest.importorskip("ray")


@dataclass(frozen=True)
class Task:
    id: int
    sleep: float = 0.0


@dataclass(frozen=True)
class Result:
    id: int
    square: int
    pid: int


def _setup(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "setup.txt"), "a") as log:
        log.write(f"{os.getpid()}\n")
    with open(os.path.join(folder, "cwd.txt"), "w") as cwd:
        cwd.write(os.getcwd())
    return {"pid": os.getpid(), "folder": folder}


def _broken_setup(folder: str) -> None:
    raise CheckpointError("not an sgma checkpoint", path=os.path.join(folder, "best.pt"))


def _work(state: dict[str, Any], task: Task) -> Result:
    folder = state["folder"]
    with open(os.path.join(folder, f"attempt-{task.id}-{os.getpid()}-{time.time_ns()}"), "w"):
        pass
    if task.sleep:
        time.sleep(task.sleep)
    if task.id == 1 and "die" in folder and not os.path.exists(os.path.join(folder, "died")):
        with open(os.path.join(folder, "died"), "w") as died:
            died.write(str(os.getpid()))
        os._exit(1)  # the worker process dies mid-task, on the first attempt only
    if "bad" in folder:  # what the worker's environment holds (RayExecutor env=)
        with open(os.path.join(folder, "region.txt"), "w") as env:
            env.write(os.environ.get("AWS_REGION", ""))
    if task.id == 2 and "bad" in folder:
        raise RasterError("band count 3, expected 4", path=os.path.join(folder, "tile.tif"))
    if task.id == 3 and "bug" in folder:
        raise ZeroDivisionError("a bug in work")
    return Result(task.id, task.id**2, os.getpid())


def _attempts(folder: Path, task_id: int) -> int:
    return len(list(folder.glob(f"attempt-{task_id}-*")))


def _setups(folder: Path) -> list[str]:
    return (folder / "setup.txt").read_text().split()


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A local Ray cluster of 2 CPUs on this machine, for this module only."""
    import signal

    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


def _run(executor: Any, tasks: list[Task], folder: Path, setup: Any = _setup) -> dict[str, Any]:
    results: dict[int, Result] = {}
    failures: dict[int, BaseException] = {}
    order: list[int] = []

    def on_result(task: Task, result: Result) -> None:
        results[task.id] = result
        order.append(task.id)

    def on_failure(task: Task, error: BaseException) -> None:
        failures[task.id] = error

    executor.run(tasks, functools.partial(setup, str(folder)), _work, on_result, on_failure)
    return {"results": results, "failures": failures, "order": order}


def test_every_task_once_setup_once_per_actor_free_actor_takes_next(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [Task(0, sleep=1.0)] + [Task(i) for i in range(1, 7)]
    executor = RayExecutor()
    monkeypatch.chdir(tmp_path)  # workers move into the driver's working directory
    out = _run(executor, tasks, tmp_path)
    assert (tmp_path / "cwd.txt").read_text() == str(tmp_path)
    assert {i: r.square for i, r in out["results"].items()} == {i: i * i for i in range(7)}
    assert out["failures"] == {}
    assert [_attempts(tmp_path, i) for i in range(7)] == [1] * 7
    assert executor.actors == 2 and executor.retries == 0
    setups = _setups(tmp_path)
    assert len(setups) == 2 and len(set(setups)) == 2  # one setup per actor
    # the slow task held one actor; the other, free, took every other task
    slow_pid = out["results"][0].pid
    assert {out["results"][i].pid for i in range(1, 7)} == {int(p) for p in setups} - {slow_pid}
    assert out["order"][-1] == 0
    # the same tasks on the local executor give the same results
    (tmp_path / "local").mkdir()
    local = _run(LocalExecutor(), tasks[1:], tmp_path / "local")
    assert {i: r.square for i, r in local["results"].items()} == {i: i * i for i in range(1, 7)}


def test_killed_worker_task_is_rerun(cluster: Any, tmp_path: Path) -> None:
    folder = tmp_path / "die"
    folder.mkdir()
    retried: list[tuple[int, int]] = []
    executor = RayExecutor(on_retry=lambda task, attempt: retried.append((task.id, attempt)))
    out = _run(executor, [Task(i) for i in range(4)], folder)
    assert sorted(out["results"]) == [0, 1, 2, 3] and out["failures"] == {}
    assert out["results"][1].square == 1
    assert (folder / "died").exists() and _attempts(folder, 1) == 2
    assert executor.retries == 1 and retried == [(1, 2)]
    dead = int((folder / "died").read_text())
    assert out["results"][1].pid != dead  # rerun by another worker process
    assert str(dead) in _setups(folder) and len(_setups(folder)) <= 3  # + the dead one's heir


def test_sgma_error_is_final_not_retried(cluster: Any, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    executor = RayExecutor(env={"AWS_REGION": "eu-test-1"})  # set in the workers' environment
    out = _run(executor, [Task(i) for i in range(4)], folder)
    assert (folder / "region.txt").read_text() == "eu-test-1"
    assert sorted(out["results"]) == [0, 1, 3]
    error = out["failures"][2]
    assert isinstance(error, RasterError)
    assert str(error) == f"{folder / 'tile.tif'}: band count 3, expected 4"
    assert _attempts(folder, 2) == 1 and executor.retries == 0


@pytest.mark.slow  # keeps make test short; runs under -m slow
def test_setup_error_and_bug_stop_the_run(cluster: Any, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="best.pt: not an sgma checkpoint"):
        _run(RayExecutor(), [Task(0), Task(1)], tmp_path, setup=_broken_setup)
    folder = tmp_path / "bug"
    folder.mkdir()
    with pytest.raises(ZeroDivisionError, match="a bug in work") as caught:
        _run(RayExecutor(workers=1), [Task(3)], folder)
    assert any("in the Ray worker" in note for note in caught.value.__notes__)
    assert ray.is_initialized()  # the module's cluster stays up: it was not ours to stop


def test_missing_ray_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError) as caught:
        require_ray()
    assert str(caught.value) == (
        "--ray needs the optional package ray, not installed; "
        "install the ray extra: pip install 'sgma-cli[ray]'"
    )
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="sgma-cli\\[ray\\]"):
        RayExecutor().run([Task(0)], lambda: None, _work, print, print)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_address_is_one_line_and_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `sgma` process
    init = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: init.append(a))
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(UsageError) as caught:
        RayExecutor(f"127.0.0.1:{port}").run([Task(0)], lambda: None, _work, print, print)
    assert str(caught.value) == (
        f"--ray 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port} "
        "(Connection refused); start one (`ray start --head`) or give the head node's "
        "address HOST:PORT"
    )
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(
        UsageError, match=f"^RAY_ADDRESS: no Ray cluster answers at 127.0.0.1:{port}"
    ):
        RayExecutor("auto").run([Task(0)], lambda: None, _work, print, print)
    # something listens, but it is not Ray: refused within the timeout, Ray never asked
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(UsageError, match="no answer within 0.5 s"):
            RayExecutor(address, connect_timeout=0.5).run([Task(0)], print, _work, print, print)
    assert init == [] and time.monotonic() - start < 5


def test_addresses_and_forwarded_environment() -> None:
    assert _host_port("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert _host_port("head") == ("head", 6379)
    assert _host_port("ray://head") == ("head", 10001)
    assert _host_port("ray://[::1]:10002") == ("::1", 10002)
    env = {"AWS_SECRET_ACCESS_KEY": "s", "GS_NO_SIGN_REQUEST": "YES", "HOME": "/h", "AWS_X": ""}
    assert forwarded_environment(env) == {"AWS_SECRET_ACCESS_KEY": "s", "GS_NO_SIGN_REQUEST": "YES"}
    with pytest.raises(UsageError, match="--cpus-per-worker 0"):
        RayExecutor(cpus_per_worker=0)
    # SIGTERM during a run on a cluster it started: an ordinary exit (143), so the workers
    # and the cluster are stopped (Ray's own handler prints a crash report and aborts)
    with pytest.raises(SystemExit) as exited:
        _exit_on_sigterm(15, None)
    assert exited.value.code == 143


@pytest.mark.slow  # keeps make test short; runs under -m slow
def test_worker_that_does_not_fit_is_one_line(cluster: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no node of the Ray cluster .* holds a worker of 3 CPU"):
        _run(RayExecutor(cpus_per_worker=3), [Task(0)], tmp_path)


@pytest.mark.slow  # keeps make test short; runs under -m slow
def test_workers_that_cannot_start_are_one_line(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setup the workers cannot import (as when sgma is missing on the nodes)."""
    (tmp_path / "only_on_the_driver.py").write_text("def setup():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_the_driver  # type: ignore[import-not-found]

    executor = RayExecutor(workers=1, max_retries=1)
    with pytest.raises(SgmaError) as caught:
        executor.run([Task(0)], only_on_the_driver.setup, _work, print, print)
    message = str(caught.value)
    assert message.startswith("the Ray workers die before they start (2 in a row): ")
    assert "only_on_the_driver" in message and "\n" not in message


# ------------------------------------------------------------------ the region job on Ray
def _region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import make_tiny_checkpoint, make_tiny_scene

    root = tmp_path_factory.mktemp("ray-region")
    return make_tiny_scene(root / "scene", size=64), make_tiny_checkpoint(root / "tiny.pt")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a 64 px scene folder, a tiny checkpoint): 4 chunks (48 + 16 px a side), one window."""
    return _region(tmp_path_factory)


def _region_job(region: tuple[Path, Path], out: Path) -> Any:
    from sgma_cli.engine.predict.region import RegionJob

    scene_dir, checkpoint = region
    return RegionJob(
        checkpoint=checkpoint,
        scene_dir=scene_dir,
        out=out,
        device="cpu",
        chunk=48,
        probabilities=True,
    )


def _read(path: Path) -> Any:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def test_region_map_on_ray_equals_local_executor(
    cluster: Any, region: tuple[Path, Path], tmp_path: Path
) -> None:
    import numpy as np

    from sgma_cli.engine.predict.region import run_region

    local = run_region(_region_job(region, tmp_path / "local"), executor=LocalExecutor())
    executor = RayExecutor(workers=1)  # several workers: the toy tests above (cheaper)
    on_ray = run_region(_region_job(region, tmp_path / "ray"), executor=executor)
    assert on_ray.chunks_computed == local.chunks_computed == 4 and executor.actors == 1
    for name in ("map.vrt", "probabilities.vrt"):
        assert np.array_equal(_read(tmp_path / "ray" / name), _read(tmp_path / "local" / name))
    assert on_ray.class_pixels == local.class_pixels


def test_cli_ray_errors_are_one_line_and_write_nothing(
    region: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sgma_cli.cli.app import app

    scene_dir, checkpoint = region
    out = tmp_path / "map"

    def sgma(*args: object) -> Any:
        base = ["predict", str(scene_dir), "-c", str(checkpoint), "-o", str(out)]
        return CliRunner().invoke(app, [*base, *(str(a) for a in args)])

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    port = _closed_port()
    result = sgma("--ray", f"127.0.0.1:{port}")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --ray 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port} "
        "(Connection refused); start one (`ray start --head`) or give the head node's "
        "address HOST:PORT"
    ]
    result = sgma("--ray", "local", "--device", "cuda:1")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: --device cuda:1 with --ray: Ray gives each worker its own GPU; use --device "
        "cuda (or auto)"
    ]
    result = sgma("--cpus-per-worker", "2")
    assert result.exit_code == 2 and "--cpus-per-worker and --ray-workers go with --ray" in (
        result.output
    )
    monkeypatch.setitem(sys.modules, "ray", None)
    result = sgma("--ray", "auto")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --ray needs the optional package ray, not installed; install the ray extra: "
        "pip install 'sgma-cli[ray]'"
    ]
    assert not out.exists()


def _descendants(pid: int) -> dict[int, str]:
    """``{pid: start time}`` of every live descendant of ``pid`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        starts[child] = fields[19]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _kill_leftovers(processes: dict[int, str]) -> None:
    """SIGKILL those of ``processes`` still alive (same pid and start time): Ray's agents
    outlive a driver killed with SIGKILL."""
    import signal

    for pid, start in processes.items():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start:
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass


@pytest.mark.slow
def test_killed_driver_then_rerun_gives_the_same_map(
    cluster: Any, region: tuple[Path, Path], tmp_path: Path
) -> None:
    """``sgma predict --ray local`` SIGKILLed after its first chunk; the rerun completes."""
    import signal
    import subprocess

    import numpy as np

    from sgma_cli.engine.predict.region import run_region

    scene_dir, checkpoint = region
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sgma_cli", "predict", str(scene_dir), "-c", str(checkpoint)]
    cmd += ["-o", str(out), "--chunk", "48", "--device", "cpu", "--probabilities"]
    cmd += ["--ray", "local", "--ray-workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: dict[int, str] = {}
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list((out / "chunks").glob("*/chunk.json")):
            started.update(_descendants(proc.pid))
            time.sleep(0.02)
        started.update(_descendants(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        time.sleep(1)
        _kill_leftovers(started)
    done = [p for p in (out / "chunks").iterdir() if not p.name.startswith(".")]
    assert 1 <= len(done) < 4 and all((p / "chunk.json").is_file() for p in done)
    assert not (out / "map.vrt").exists()
    result = run_region(_region_job(region, out), executor=RayExecutor())  # the module's Ray
    assert result.chunks_skipped == len(done) and result.chunks_computed == 4 - len(done)
    local = run_region(_region_job(region, tmp_path / "local"))
    for name in ("map.vrt", "probabilities.vrt"):
        assert np.array_equal(_read(out / name), _read(tmp_path / "local" / name))
    assert [p.name for p in (out / "chunks").iterdir() if p.name.startswith(".")] == []
    assert local.chunks_computed == 4


def test_which_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: RAY_ADDRESS, else the latest ``ray start`` here, else a local cluster."""
    import sgma_cli.engine.predict.ray_executor as module

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(module, "_latest_local_cluster", lambda: None)
    assert RayExecutor("auto")._target() == (None, "--ray auto")
    assert RayExecutor("local")._target() == (None, "--ray local")
    assert RayExecutor("head:6379")._target() == ("head:6379", "--ray head:6379")
    monkeypatch.setattr(module, "_latest_local_cluster", lambda: "10.0.0.7:6379")
    assert RayExecutor()._target()[0] == "10.0.0.7:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert RayExecutor()._target() == ("10.0.0.9:6379", "RAY_ADDRESS")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.setattr(module, "_latest_local_cluster", lambda: None)
    with pytest.raises(UsageError, match="RAY_ADDRESS is 'auto' but no cluster"):
        RayExecutor()._target()


class _FakeRay:
    """What ``_plan_workers`` reads of Ray: the live nodes and their resources."""

    def __init__(self, *resources: dict[str, float]) -> None:
        self._nodes = [{"Alive": True, "Resources": r} for r in resources]
        self._nodes.append({"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}})

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes


def test_workers_per_gpu_or_per_cpus() -> None:
    gpu_nodes = _FakeRay({"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}, {"CPU": 4.0})
    assert RayExecutor()._plan_workers(gpu_nodes, 100) == (4, 1.0)  # one per GPU (dead: none)
    assert RayExecutor(cpus_per_worker=10)._plan_workers(gpu_nodes, 100) == (2, 1.0)
    assert RayExecutor(gpus_per_worker=0.0)._plan_workers(gpu_nodes, 100) == (36, 0.0)
    assert RayExecutor()._plan_workers(gpu_nodes, 3) == (3, 1.0)  # at most one per task
    cpu_nodes = _FakeRay({"CPU": 8.0}, {"CPU": 6.0})
    assert RayExecutor(cpus_per_worker=4)._plan_workers(cpu_nodes, 100) == (3, 0.0)
    assert RayExecutor(workers=7, cpus_per_worker=4)._plan_workers(cpu_nodes, 100) == (7, 0.0)
    with pytest.raises(UsageError, match=r"holds a worker of 1 CPU\(s\) and 1 GPU\(s\)"):
        RayExecutor(gpus_per_worker=1.0)._plan_workers(cpu_nodes, 10)
