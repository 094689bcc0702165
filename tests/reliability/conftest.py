"""Tools of the reliability tests: write faults, kills at chosen points, tiny file systems.

* :class:`Faults` makes a write function raise ``OSError(ENOSPC)`` (or any error) at its
  n-th call, the way a full disk, an I/O error or a folder made read-only shows up.
* :class:`Events` counts the write events of a run (every GeoTIFF block write, finished
  file, rename, GeoPackage and checkpoint write); :func:`kill_at` runs a job in a forked
  child that SIGKILLs itself right after event ``n``, so a test can kill a command at
  every kind of point, mid-file included, without timing luck. :func:`kill_after` kills
  the child by the clock instead.
* :class:`TinyFS` mounts a tmpfs of a few hundred KiB (root only; skipped elsewhere) for
  real ``ENOSPC`` and read-only (``EROFS``) errors, and unmounts it after the test.
* :func:`tree` lists a folder's files with their SHA-256; GeoPackages are compared by
  content, since GDAL stamps them with the time of writing.

Children are forked from the test process (the modules are already imported, so a kill
point costs a fraction of a second instead of a fresh interpreter).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


def oserror(code: int = errno.ENOSPC) -> OSError:
    """``OSError(code)`` as the OS raises it (``errno`` and ``strerror`` set)."""
    return OSError(code, os.strerror(code))


class Faults:
    """Make functions raise at their n-th call (undone by ``monkeypatch`` after the test)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def fail(
        self,
        owner: Any,
        name: str,
        at: int = 1,
        error: BaseException | None = None,
        code: int = errno.ENOSPC,
    ) -> list[int]:
        """Patch ``owner.name`` to raise ``error`` (default ``OSError(code)``) at call ``at``.

        Returns a one-item list holding the number of calls so far.
        """
        real = getattr(owner, name)
        calls = [0]

        @functools.wraps(real)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == at:
                raise error if error is not None else oserror(code)
            return real(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, wrapper)
        return calls


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


def _write_targets() -> list[tuple[Any, str, str]]:
    """``(owner, attribute, label)`` of every call that changes files during a job."""
    import geopandas
    import rasterio.io
    import torch
    from matplotlib.figure import Figure

    import sgma_cli.data.tile_files as tile_files
    import sgma_cli.data.writers as writers

    return [
        (rasterio.io.DatasetWriter, "write", "raster block"),
        (tile_files, "_write", "tile file"),
        (writers, "rio_copy", "COG copy"),
        (geopandas.GeoDataFrame, "to_file", "GeoPackage"),
        (Figure, "savefig", "PNG"),
        (torch, "save", "torch.save"),
        (pathlib.Path, "write_text", "text file"),
        (pathlib.Path, "rename", "rename"),
        (pathlib.Path, "replace", "rename"),
        (pathlib.Path, "unlink", "unlink"),
        (os, "replace", "rename"),
    ]


@dataclass
class Events:
    """The write events of a job, in order; with ``kill_at`` the process dies after that one.

    Attributes:
        kill_at: 1-based event after which this process SIGKILLs itself (``None``: record).
        seen: ``(label, detail)`` of every event so far.
    """

    kill_at: int | None = None
    seen: list[tuple[str, str]] = field(default_factory=list)
    _saved: list[tuple[Any, str, Any]] = field(default_factory=list)

    def install(self) -> Events:
        for owner, name, label in _write_targets():
            real = getattr(owner, name)
            self._saved.append((owner, name, real))
            setattr(owner, name, self._wrap(real, label))
        return self

    def uninstall(self) -> None:
        for owner, name, real in reversed(self._saved):
            setattr(owner, name, real)
        self._saved.clear()

    def _wrap(self, real: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(real)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            target = next((a for a in args if isinstance(a, (str, os.PathLike))), "")
            self.seen.append((label, Path(target).name if target else ""))
            if self.kill_at is not None and len(self.seen) >= self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapper

    def __enter__(self) -> Events:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def spread(count: int, points: int) -> list[int]:
    """``points`` event numbers spread over ``1..count``, first and last included."""
    if points >= count:
        return list(range(1, count + 1))
    return sorted({1 + round(i * (count - 1) / (points - 1)) for i in range(points)})


def _child(job: Callable[[], object], events: Events | None) -> None:
    """Body of a forked child: run ``job`` (with ``events`` armed); never returns."""
    code = 0
    try:
        if "torch" in sys.modules:  # no OpenMP pool inherited across fork
            sys.modules["torch"].set_num_threads(1)
        if events is not None:
            events.install()
        job()
        code = 3  # the job finished: the kill point was never reached
    except BaseException:
        traceback.print_exc()
        code = 4
    finally:
        os._exit(code)


def kill_at(job: Callable[[], object], event: int, *, must: bool = True) -> bool:
    """Run ``job`` in a forked child that SIGKILLs itself right after write event ``event``.

    Returns True when it was killed; a child that finishes first (fewer events, e.g. a run
    resuming from an earlier one) fails the test unless ``must`` is False.
    """
    pid = os.fork()
    if pid == 0:
        _child(job, Events(kill_at=event))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    assert not must and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, (
        f"the child was not killed at event {event} (status {status})"
    )
    return False


def kill_after(job: Callable[[], object], seconds: float) -> bool:
    """Run ``job`` in a forked child, SIGKILL it after ``seconds``; False if it ended first."""
    pid = os.fork()
    if pid == 0:
        _child(job, None)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, status
            return False
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) -> SHA-256 of its bytes; GeoPackages ->
    a digest of their features (GDAL writes the time into them)."""
    out = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        out[rel] = gpkg_digest(path) if path.suffix == ".gpkg" else _sha(path.read_bytes())
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gpkg_digest(path: Path) -> str:
    """Layers, columns, values and geometries (WKB) of a GeoPackage, hashed."""
    import geopandas as gpd
    import pyogrio

    parts = []
    for name, _ in pyogrio.list_layers(path):
        frame = gpd.read_file(path, layer=name)
        parts.append(f"{name}|{frame.crs}|{list(frame.columns)}")
        parts.append(frame.drop(columns="geometry").to_csv())
        parts.extend(g.wkb_hex for g in frame.geometry)
    return _sha("\n".join(parts).encode())


# --------------------------------------------------------------------- tiny file systems
class TinyFS:
    """A tmpfs mounted at ``point`` (root only; the test is skipped where mounting fails)."""

    def __init__(self, point: Path) -> None:
        self.point = point
        self.mounted = False

    def mount(self, size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        self.point.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        self.mounted = True
        return self.point

    def remount(self, options: str) -> None:
        """``mount -o remount,<options>`` (``ro``, ``rw``, ``size=4m``)."""
        subprocess.run(
            ["mount", "-o", f"remount,{options}", str(self.point)], check=True, capture_output=True
        )

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.point)], capture_output=True)
            self.mounted = False


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[TinyFS]:
    fs = TinyFS(tmp_path / "tinyfs")
    try:
        yield fs
    finally:
        fs.unmount()


# --------------------------------------------------------------------- shared clean runs
PREPARE_MODALITIES = ("rgb=rgb.tif", "dsm=dsm.tif", "sar=sar.tif")


def prepare_options(src: Path, out: Path, **kw: Any) -> Any:
    """``prepare`` of the 96 px test scene: 32 px tiles, stride 16, 25 training tiles."""
    from sgma_cli.engine.prepare import PrepareOptions

    base: dict[str, Any] = dict(
        src=src,
        out=out,
        modality=PREPARE_MODALITIES,
        labels="labels_index.tif",
        palette="potsdam",
        tile=32,
        stride=16,
        split="1,0,0",
    )
    base.update(kw)
    return PrepareOptions(**base)


@dataclass(frozen=True)
class Prepared:
    """The test scene, an uninterrupted ``prepare`` of it, and that run's write events."""

    src: Path
    clean: Path
    events: list[tuple[str, str]]

    def options(self, out: Path, **kw: Any) -> Any:
        return prepare_options(self.src, out, **kw)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    from sgma_cli.engine.prepare import prepare
    from tests.data.conftest import make_scene

    root = tmp_path_factory.mktemp("prepared")
    scene = make_scene(root / "scene")
    with Events() as events:
        prepare(prepare_options(scene.root, root / "clean"))
    return Prepared(scene.root, root / "clean", events.seen)


@dataclass(frozen=True)
class Predicted:
    """A 64 px scene, an untrained checkpoint, and an uninterrupted ``predict`` of it."""

    scene: Path
    checkpoint: Path
    clean: Path
    events: list[tuple[str, str]]

    def job(self, folder: Path) -> Any:
        from sgma_cli.engine.predict.job import PredictJob

        return PredictJob(
            self.checkpoint,
            self.scene,
            folder / "map.tif",
            window=64,
            batch_size=4,
            device="cpu",
            probabilities=True,
            confidence=True,
            vectorize=folder / "map.gpkg",
        )


@pytest.fixture(scope="session")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> Predicted:
    from sgma_cli.engine.predict.job import run_predict
    from tests.conftest import make_tiny_checkpoint, make_tiny_scene

    root = tmp_path_factory.mktemp("predicted")
    made = Predicted(
        make_tiny_scene(root / "scene", size=64),
        make_tiny_checkpoint(root / "tiny.pt"),
        root / "clean",
        [],
    )
    made.clean.mkdir()
    with Events() as events:
        run_predict(made.job(made.clean))
    made.events.extend(events.seen)
    return made


@dataclass
class Evaluated:
    """A tiny dataset, two checkpoints, an uninterrupted ``evaluate --out`` report, and the
    evaluations themselves (so a test can write reports without scoring again).

    Attributes:
        data: the dataset.
        checkpoint: the evaluated checkpoint.
        other: another checkpoint (an older report in a folder to be replaced).
        clean: report folder of an uninterrupted ``evaluate_and_compare``.
        events: the write events of that run.
        evaluations: ``{checkpoint: CheckpointEvaluation}``.
    """

    data: Path
    checkpoint: Path
    other: Path
    clean: Path
    events: list[tuple[str, str]] = field(default_factory=list)
    evaluations: dict[Path, Any] = field(default_factory=dict)

    def run(self, out: Path, checkpoint: Path | None = None) -> Any:
        """The whole of ``sgma evaluate CHECKPOINT --out OUT`` (scores, then the report)."""
        from sgma_cli.engine.evaluate.compare import evaluate_and_compare
        from sgma_cli.engine.evaluate.job import EvaluateOptions

        options = EvaluateOptions(subsets="rgb;dsm,sar;rgb,dsm,sar", device="cpu", batch_size=2)
        done = evaluate_and_compare(
            checkpoint or self.checkpoint, data_dir=self.data, options=options, out=out
        )
        self.evaluations.setdefault(checkpoint or self.checkpoint, done.main)
        return done

    def write(self, out: Path, checkpoint: Path | None = None) -> list[Path]:
        """The report part of :meth:`run`, from the evaluation scored before."""
        from sgma_cli.engine.evaluate.report import write_report

        return write_report(out, self.evaluations[checkpoint or self.checkpoint])


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    from tests.conftest import make_tiny_checkpoint, make_tiny_dataset

    root = tmp_path_factory.mktemp("evaluated")
    made = Evaluated(
        make_tiny_dataset(root / "data"),
        make_tiny_checkpoint(root / "tiny.pt"),
        make_tiny_checkpoint(root / "other.pt", seed=1),
        root / "clean",
    )
    with Events() as events:
        made.run(made.clean)
    made.events.extend(events.seen)
    made.run(root / "other", made.other)
    return made


# --------------------------------------------------------------------- tiny trainings
#: 1 step per epoch (batch 4 over 4 tiles), validation every epoch, a log row every step.
TRAIN_SHORT = [
    "model.backbone='test_convnext'",
    "model.head_dim=32",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "schedule.warmup_epochs=0",
    "train.log_every=1",
    "train.val_subsets='rgb;dsm,sar;rgb,dsm,sar'",
]


def quick_training(monkeypatch: pytest.MonkeyPatch, averages: list[float]) -> None:
    """Validation ``i`` scores an Average of ``averages[i]`` (subset ``j``: ``+ j/100``)
    instead of scoring the val tiles, and the run draws no PNG plots."""
    import sgma_cli.engine.train.loop as loop

    queue = iter(averages)

    def fake(model: Any, loader: Any, subsets: list[Any], **kwargs: Any) -> Any:
        average = next(queue)
        result = SimpleNamespace(
            subsets=list(subsets),
            metrics=[SimpleNamespace(miou=average + j / 100) for j in range(len(subsets))],
            summary=SimpleNamespace(average=average, top1=average + 0.1, last1=average - 0.1),
        )
        result.all_reduce = lambda: result
        return result

    monkeypatch.setattr(loop, "evaluate_subsets", fake)
    monkeypatch.setattr(loop, "write_plots", lambda run_dir: [])


def train_tiny(data: Path, run: Path, *extra: str, resume: bool = False) -> Any:
    """``sgma train`` of :data:`TRAIN_SHORT` (+ ``extra`` overrides) on the CPU."""
    from sgma_cli.config.recipe import load_recipe
    from sgma_cli.engine.train import TrainOptions, train

    options = TrainOptions(data_dir=data, run_dir=run, device="cpu", resume=resume)
    return train(load_recipe(None, [*TRAIN_SHORT, *extra]), options)
