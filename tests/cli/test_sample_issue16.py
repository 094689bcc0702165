"""Issue 16 on `sgma sample`: byte-identical GeoPackage, one-line errors for bad options."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app

runner = CliRunner()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_size_and_seed_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = runner.invoke(app, ["sample", str(tmp_path / name), "--size", "64"])
        assert result.exit_code == 0, result.output
        time.sleep(1.1)  # the GeoPackage timestamp has a resolution of 1 s (ms in GDAL >= 3.x)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert "labels.gpkg" in a and a == b
    assert "OGR_CURRENT_DATE" not in os.environ  # the fixed date is set only while writing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "32"], "--size must be an even number between 64 and 16384, got 32"),
        (["--size", "20000"], "--size must be an even number between 64 and 16384, got 20000"),
    ],
)
def test_bad_size_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(tmp_path / "s"), *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "s").exists()


def test_out_dir_is_a_file_one_line(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    result = runner.invoke(app, ["sample", str(target)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {target}: exists and is not a folder"]
