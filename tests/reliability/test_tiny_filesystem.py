"""Real write errors: a tmpfs of a few hundred KiB fills up, or is remounted read-only.

Where the tests run as root (CI containers, this project's machines) a tmpfs is mounted in
``tmp_path`` for each test and unmounted after it; elsewhere the tests are skipped. The
errors come from GDAL, SQLite (GeoPackages), ``torch.save`` and the OS as they really are;
each command must stop with one :class:`OutputError` naming an output, leave nothing that
looks finished, and complete when run again once there is room (or write access) again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgma_cli.engine.predict.job import run_predict
from sgma_cli.engine.prepare import prepare
from sgma_cli.errors import OutputError
from tests.conftest import make_tiny_dataset
from tests.reliability.conftest import (
    Evaluated,
    Predicted,
    Prepared,
    TinyFS,
    quick_training,
    train_tiny,
    tree,
)

FULL = "cannot write (No space left on device); free some space, then run the command again"


def _visible(root: Path) -> list[str]:
    """Files and folders under ``root`` (locks of released jobs are gone too)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class TestPrepare:
    @pytest.mark.parametrize("fails", ["tiles/train/scene_", "index.gpkg"])
    def test_full_disk(self, prepared: Prepared, tiny_fs: TinyFS, fails: str) -> None:
        # room for a few tiles, or for every tile (about 1 MiB in 4 KiB pages) but not the index
        tiles = [p for p in prepared.clean.rglob("*") if p.is_file() and p.suffix == ".tif"]
        pages = sum(-(-p.stat().st_size // 4096) for p in tiles) + 1  # + the fingerprint
        size = 64 if fails.startswith("tiles") else pages * 4 + 32
        root = tiny_fs.mount(f"{size}k")
        out = root / "data"
        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out))
        message = str(caught.value)
        assert message.startswith(f"{out}/{fails}") and message.endswith(FULL)
        assert _visible(root) == []  # a first run removes what it wrote
        tiny_fs.remount("size=16m")
        prepare(prepared.options(out))
        assert tree(out) == tree(prepared.clean)

    def test_folder_turns_read_only_mid_run(self, prepared: Prepared, tiny_fs: TinyFS) -> None:
        out = tiny_fs.mount("16m") / "data"

        def turn_read_only(done: int, total: int) -> None:
            if done == 5:
                tiny_fs.remount("ro")

        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out), progress=turn_read_only)
        assert str(caught.value) == (
            f"{out}/tiles/train/scene_r00016_c00000: cannot write (Read-only file system); "
            "make the folder writable, then run the command again"
        )
        assert not (out / "dataset.toml").exists()  # the 5 finished tiles stay: read-only
        tiny_fs.remount("rw")
        report = prepare(prepared.options(out))
        assert report.tiles_resumed == 5 and tree(out) == tree(prepared.clean)


class TestPredict:
    def test_full_disk(self, predicted: Predicted, tiny_fs: TinyFS) -> None:
        root = tiny_fs.mount("64k")  # the rasters fit, the GeoPackage does not
        with pytest.raises(OutputError) as caught:
            run_predict(predicted.job(root))
        message = str(caught.value)
        assert message.startswith(f"{root}/map.") and FULL in message
        assert _visible(root) == []
        tiny_fs.remount("size=16m")
        run_predict(predicted.job(root))
        assert tree(root) == tree(predicted.clean)


class TestEvaluate:
    def test_full_disk(self, evaluated: Evaluated, tiny_fs: TinyFS) -> None:
        root = tiny_fs.mount("48k")  # the report needs about 150 KiB of PNGs
        out = root / "report"
        with pytest.raises(OutputError) as caught:
            evaluated.write(out)
        assert str(caught.value) in (f"{out}: {FULL}", f"{out}/subsets.csv: {FULL}")
        assert _visible(root) == []
        tiny_fs.remount("size=16m")
        evaluated.write(out)
        assert tree(out) == tree(evaluated.clean)


class TestTrain:
    def test_checkpoint_on_a_full_disk(
        self, tiny_fs: TinyFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "val": 2})
        run = tiny_fs.mount("1m") / "run"  # a checkpoint is about 1.7 MiB
        quick_training(monkeypatch, [0.4])
        with pytest.raises(OutputError) as caught:
            train_tiny(data, run, "schedule.epochs=1")
        assert str(caught.value) == f"{run}/checkpoints/best.pt: {FULL}"
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == []
        assert not (run / "summary.json").exists()
        tiny_fs.remount("size=64m")
        quick_training(monkeypatch, [0.4])
        result = train_tiny(data, run, "schedule.epochs=1")
        assert result.step == 1 and (run / "summary.json").is_file()
