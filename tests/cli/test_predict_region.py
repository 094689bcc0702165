"""Tests for `sgma predict --out DIR` (cli/predict.py, cli/predict_region.py): the plan lines,
resume, refusals as one line, and a chunked map over tiled mosaics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from tests.conftest import make_tiny_scene

runner = CliRunner()
# windows of 64 px (stride 48): a 96 px scene in 2 x 2 chunks of 48 px computes 16 windows,
# a 160 px one in 2 x 2 chunks of 96 px too
FAST = ("--device", "cpu", "--window", "64", "--batch-size", "16")


def _run(*args: Any) -> Any:
    return runner.invoke(app, ["predict", *(str(a) for a in args)])


def _one_line(result: Any, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_region_run_plan_resume_and_refusal(tiny_checkpoint: Path, tmp_path: Path) -> None:
    scene = make_tiny_scene(tmp_path / "scene", size=96)
    out = tmp_path / "region"
    args = (scene, "-c", tiny_checkpoint, "-o", out, "--chunk", "48", *FAST)
    first = _run(*args, "--merge")
    assert first.exit_code == 0, first.output
    assert "region: 96 x 96 px" in first.output
    assert "chunks: 4 of 48 px, 0 already done, 4 to compute" in first.output
    assert "map.vrt" in first.stdout and "4 computed, 0 done before" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "chunks",
        "chunks.gpkg",
        "map.tif",
        "map.vrt",
        "run.json",
    ]
    again = _run(*args)
    assert again.exit_code == 0, again.output
    assert "4 already done, 0 to compute" in again.output
    other = _run(*args, "--overlap", "0.5")
    _one_line(
        other, "run.json", "other options (overlap 0.25 -> 0.5, chunk 48 -> 64)", "--overwrite"
    )
    assert other.exit_code == 2


def test_aoi_outside_sources_and_unknown_crs_are_one_line(
    tiny_scene: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "region"
    base = (tiny_scene, "-c", tiny_checkpoint, "-o", out, *FAST)
    line = _one_line(_run(*base, "--aoi", "0,0,100,100"), "--aoi 0,0,100,100", "outside")
    assert "rgb.tif" in line
    _one_line(_run(*base, "--aoi", "0,0,1,1,EPSG:999999"), "unknown CRS 'EPSG:999999'")
    _one_line(_run(*base, "--aoi", tmp_path / "nowhere.gpkg"), "nowhere.gpkg", "not found")
    _one_line(_run(*base, "--nproc", "2"), "--gpus/--nproc", "--ray")
    assert not out.exists() or list(out.iterdir()) == []
    single = tmp_path / "map.tif"
    _one_line(
        _run(tiny_scene, "-c", tiny_checkpoint, "-o", single, "--chunk", "64"),
        "--chunk, --merge and --overwrite need --out DIR",
    )


def test_chunked_map_over_mosaics_equals_merged_files(
    tiled_region: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """3 x 3 RGB tiles + a 2 x 2 DSM tiling in another CRS with a gap, in chunks, give the
    map of the same data merged into single files."""
    root, merged = tiled_region.root, tiled_region.merged
    one = tmp_path / "one.tif"
    result = _run(merged, "-c", tiny_checkpoint, "-o", one, "--probabilities", *FAST)
    assert result.exit_code == 0, result.output
    out = tmp_path / "chunked"
    result = _run(
        "-c",
        tiny_checkpoint,
        "--modality",
        f"rgb={root}/tiles/rgb/*.tif",
        "--modality",
        f"dsm={root}/tiles/dsm/*.tif",
        "--modality",
        f"sar={merged}/sar.tif",
        "-o",
        out,
        "--chunk",
        "96",
        "--probabilities",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert "chunks: 4 of 96 px" in result.output
    for region_file, single in (("map.vrt", one), ("probabilities.vrt", None)):
        reference = single or one.with_name("one.probabilities.tif")
        with rasterio.open(out / region_file) as a, rasterio.open(reference) as b:
            assert a.transform == b.transform and a.crs == b.crs
            assert np.array_equal(a.read(), b.read()), region_file
