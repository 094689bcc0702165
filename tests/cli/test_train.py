"""CLI tests of `sgma train`: a tiny run, --print, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.config._base import tomllib

TINY = """
name = "tiny"
[data]
crop_size = 64
batch_size = 2
num_workers = 0
[model]
backbone = "test_convnext"
head_dim = 32
[schedule]
epochs = 1
warmup_epochs = 0
[train]
log_every = 1
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


runner = CliRunner()


class TestTrainCommand:
    def test_tiny_run(self, recipe: Path, tiny_dataset: Path, tmp_path: Path) -> None:
        out = tmp_path / "run"
        result = runner.invoke(
            app,
            [
                "train",
                str(recipe),
                "--data",
                str(tiny_dataset),
                "--out",
                str(out),
                "--device",
                "cpu",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "best val mIoU" in result.output and "rgb+dsm+sar" in result.output
        assert "sgma evaluate" in result.output
        assert (out / "checkpoints" / "best.pt").is_file() and (out / "loss.png").is_file()
        saved = tomllib.loads((out / "recipe.toml").read_text())
        assert (
            saved["data"]["dir"] == str(tiny_dataset.resolve())
            and saved["model"]["backbone"] == "test_convnext"
        )
        again = runner.invoke(
            app,
            [
                "train",
                str(recipe),
                "--data",
                str(tiny_dataset),
                "--out",
                str(out),
                "--device",
                "cpu",
            ],
        )
        assert again.exit_code == 2 and "--resume" in again.output

    def test_print(self, recipe: Path) -> None:
        result = runner.invoke(
            app,
            ["train", str(recipe), "--set", "optim.lr=1e-4", "--set", "train.mas=false", "--print"],
        )
        assert result.exit_code == 0, result.output
        printed = tomllib.loads(result.output)
        assert (
            printed["optim"]["lr"] == 1e-4
            and printed["train"]["mas"] is False
            and printed["schedule"]["power"] == 0.9
        )

    @pytest.mark.parametrize(
        ("flag", "value"), [([], "auto"), (["--compile"], True), (["--no-compile"], False)]
    )
    def test_compile_is_the_recipe_key(self, recipe: Path, flag: list[str], value: object) -> None:
        result = runner.invoke(app, ["train", str(recipe), *flag, "--print"])
        assert result.exit_code == 0, result.output
        assert tomllib.loads(result.output)["train"]["compile"] == value

    def test_unknown_key(self, recipe: Path) -> None:
        result = runner.invoke(
            app, ["train", str(recipe), "--set", "optim.learning_rate=1", "--print"]
        )
        assert result.exit_code == 1
        assert (
            "unknown key optim.learning_rate" in result.output and "Traceback" not in result.output
        )

    def test_bad_value(self, recipe: Path) -> None:
        result = runner.invoke(
            app, ["train", str(recipe), "--set", "model.fusion=concat", "--print"]
        )
        assert (
            result.exit_code == 1 and "model.fusion" in result.output and "concat" in result.output
        )

    def test_missing_dataset(self, recipe: Path, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            ["train", str(recipe), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
        )
        assert result.exit_code == 1 and "dataset folder not found" in result.output
        assert not (tmp_path / "r").exists()

    def test_too_many_gpus(self, recipe: Path, tiny_dataset: Path, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            [
                "train",
                str(recipe),
                "--data",
                str(tiny_dataset),
                "--gpus",
                "64",
                "--out",
                str(tmp_path / "r"),
            ],
        )
        assert result.exit_code == 1 and "--gpus 64" in result.output

    def test_device_index_is_refused(self, recipe: Path, tmp_path: Path) -> None:
        """Training places its processes itself: cuda:N would silently train on GPU 0."""
        result = runner.invoke(
            app, ["train", str(recipe), "--device", "cuda:1", "--out", str(tmp_path / "r")]
        )
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "--device cuda:1" in lines[0]
        assert "CUDA_VISIBLE_DEVICES=1" in lines[0]
        assert not (tmp_path / "r").exists()
