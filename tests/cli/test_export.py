"""`sgma export` on the command line, and `sgma predict --model` with what it wrote."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import rasterio
import torch
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.engine.export.formats import load_exported_program
from tests.engine.export.exported import exported, tiny_checkpoint, tiny_scene

runner = CliRunner()


def _run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


class TestExport:
    @pytest.mark.slow  # keeps make test short; runs under -m slow
    def test_exported_program_of_one_sensor(self, tmp_path: Path) -> None:
        out = tmp_path / "dsm.pt2"
        result = _run(
            "export", tiny_checkpoint(), "--format", "exported-program", "-m", "dsm",
            "--size", "32", "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"wrote {out} (exported-program, ")
        assert lines[1].strip() == "inputs: dsm, mask (B x C x 32 x 32; mask bool B x M x H x W)"
        assert lines[2].strip() == "outputs: logits"
        assert "checked: max |logit difference| vs PyTorch" in lines[4]
        program, meta = load_exported_program(out)
        assert meta.modalities == ["dsm"] and meta.size == 32
        logits = program.module()(
            torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.bool)
        )
        assert logits.shape == (1, 3, 32, 32)

    def test_missing_extra_is_one_error_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
        result = _run("export", tiny_checkpoint(), "--out", tmp_path / "m.onnx")
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "error: sgma export --format onnx needs the optional package(s) onnxruntime, not "
            "installed; install the onnx extra: pip install 'sgma-cli[onnx]'"
        )
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["--format", "tflite"], 2, "--format 'tflite': use onnx or exported-program"),
            (["--size", "100"], 2, "--size 100 must be a positive multiple of 32, e.g. 256 or 512"),
            (["-m", "nir"], 2, "--modalities nir: not in the checkpoint; it has rgb, dsm, sar"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, args: list[str], code: int, message: str) -> None:
        result = _run("export", tiny_checkpoint(), "--out", tmp_path / "m.onnx", *args)
        assert result.exit_code == code
        assert result.stderr.strip() == f"error: {message}"

    def test_bad_checkpoint(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.pt"
        bad.write_text("hello")
        result = _run("export", bad, "--out", tmp_path / "m.onnx")
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: {bad}: not a readable checkpoint")
        assert len(result.stderr.strip().splitlines()) == 1


class TestPredictModel:
    def test_predict_with_an_onnx_file(self, tmp_path: Path) -> None:
        pytest.importorskip("onnxruntime")
        model = exported("onnx").path
        out = tmp_path / "map.tif"
        result = _run("predict", tiny_scene(), "--model", model, "--out", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert "Predicted classes" in result.stdout and f"classes: {out}" in result.stdout
        with rasterio.open(out) as src:
            assert src.tags()["CHECKPOINT"] == model.name and src.count == 1

    def test_neither_checkpoint_nor_model(self, tmp_path: Path) -> None:
        result = _run("predict", tiny_scene(), "--out", tmp_path / "m.tif")
        assert result.exit_code == 2
        assert "either --checkpoint (a .pt) or --model" in result.stderr
