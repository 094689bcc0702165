"""Issue 14: every file sgma wrote and reads back gives one line naming it when damaged.

Checkpoints have their own tests (test_checkpoint_digest.py); here: ``dataset.toml``, the
prepare resume record ``.sgma-prepare.json``, a tile read back on resume, ``metrics.csv``
on ``train --resume``, and a resume checkpoint whose training state is incomplete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sgma_cli.config.dataset import load_manifest
from sgma_cli.engine.prepare import PrepareOptions, prepare
from sgma_cli.engine.train.run_log import RunLog, read_metrics
from sgma_cli.errors import DatasetError, RasterError, SgmaError, UsageError
from tests.conftest import make_tiny_scene

DAMAGE = {
    "binary": b"\x00\xff\xfe garbage \x80\x81",
    "not utf-8": b'name = "\xff\xfe"\n',
    "deep": b"a = " + b"[" * 50_000 + b"]" * 50_000,
    "empty": b"",
}


def _one_line(err: BaseException, path: Path) -> None:
    assert isinstance(err, SgmaError) and "\n" not in str(err)
    assert str(err).startswith(str(path)), str(err)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_dataset_toml(tiny_dataset: Path, kind: str) -> None:
    path = tiny_dataset / "dataset.toml"
    path.write_bytes(DAMAGE[kind])
    with pytest.raises(DatasetError) as err:
        load_manifest(tiny_dataset)
    _one_line(err.value, path)


def test_dataset_toml_truncated_anywhere(tiny_dataset: Path) -> None:
    path = tiny_dataset / "dataset.toml"
    text = path.read_bytes()
    for cut in np.linspace(0, len(text) - 1, 40).astype(int):
        path.write_bytes(text[:cut])
        try:
            load_manifest(tiny_dataset)  # a cut after the last needed line still loads
        except DatasetError as err:
            _one_line(err, path)


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[PrepareOptions, Path]:
    """A finished prepare run (4 tiles) and its options, for reruns that resume."""
    scene, out = make_tiny_scene(tmp_path / "scene", size=64), tmp_path / "data"
    options = PrepareOptions(src=scene, out=out, tile=32, stride=32, split="1,0,0")
    prepare(options)
    return options, out


@pytest.mark.parametrize("kind", ["binary", "not utf-8", "empty"])
def test_prepare_record(prepared: tuple[PrepareOptions, Path], kind: str) -> None:
    options, out = prepared
    record = out / ".sgma-prepare.json"
    record.write_bytes(DAMAGE[kind])
    with pytest.raises(UsageError, match="damaged or unreadable .* add --overwrite") as err:
        prepare(options)
    _one_line(err.value, record)
    report = prepare(PrepareOptions(**{**options.__dict__, "overwrite": True}))
    assert report.tiles_written == 4


def test_damaged_tile_on_resume(prepared: tuple[PrepareOptions, Path]) -> None:
    options, out = prepared
    (out / "dataset.toml").unlink()  # an unfinished run: the rerun reads the tiles back
    tile = sorted((out / "tiles" / "train").iterdir())[1]
    rgb = tile / "rgb.tif"
    rgb.write_bytes(rgb.read_bytes()[:300])
    with pytest.raises(RasterError, match="damaged tile .*delete this tile folder") as err:
        prepare(options)
    _one_line(err.value, tile)
    shutil.rmtree(tile)  # as the message says
    report = prepare(options)
    assert (report.tiles_resumed, report.tiles_written) == (3, 1)


@pytest.mark.parametrize(
    "content",
    [
        b"kind,epoch,step\ntrain,1,two\n",
        b"kind,epoch,step\ntrain,1,\xff\xfe\n",
        b'kind,epoch,step\ntrain,1,"3\x00\n',
    ],
)
def test_metrics_csv_on_resume(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "metrics.csv"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="move the file away") as err:
        RunLog(tmp_path, ["rgb"], [("rgb",)], resume_step=3, tensorboard=False)
    _one_line(err.value, path)


def test_metrics_csv_resume_keeps_rows_up_to_the_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("kind,epoch,step\ntrain,1,2\ntrain,1,3\ntrain,1,4\n")
    RunLog(tmp_path, ["rgb"], [("rgb",)], resume_step=3, tensorboard=False)
    assert [r["step"] for r in read_metrics(path)] == ["2", "3"]


def test_resume_checkpoint_without_recipe(tiny_dataset: Path, tmp_path: Path) -> None:
    """A last.pt whose recipe lacks the batch size (not one train wrote): one line."""
    import torch

    from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from sgma_cli.config.recipe import load_recipe
    from sgma_cli.engine.train import TrainOptions, plan_training
    from tests.conftest import make_tiny_checkpoint

    base = load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny.pt"))
    state = {"optimizer": {}, "step": 1, "rng": [], "world_size": 1, "seed": 0}
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    save_checkpoint(last, Checkpoint(base.meta, base.model, state))
    recipe = load_recipe(
        None, ["model.backbone='test_convnext'", "model.head_dim=32", "data.batch_size=1"]
    )
    options = TrainOptions(
        data_dir=tiny_dataset, run_dir=tmp_path / "run", device="cpu", resume=True
    )
    with pytest.raises(SgmaError, match="lacks the batch size, process count or seed") as err:
        plan_training(recipe, options)
    _one_line(err.value, last)
    assert torch.load(last, weights_only=True)["train"]["step"] == 1
