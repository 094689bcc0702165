"""CLI tests of `sgma sample`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sgma_cli.cli.app import app

runner = CliRunner()


def test_sample_ok(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(tmp_path / "scene"), "--size", "128", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "rgb.tif" in result.output and "sgma prepare" in result.output
    assert (tmp_path / "scene" / "sample.json").exists()


def test_sample_bad_size(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(tmp_path / "scene"), "--size", "65"])
    assert result.exit_code == 2
    assert "error:" in result.output and "--size must be an even number" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "scene").exists()
