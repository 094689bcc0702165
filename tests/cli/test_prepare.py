"""CLI tests of `sgma prepare`: plan table, dry run, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.config.dataset import load_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "scene"
    result = runner.invoke(app, ["sample", str(root), "--size", "256", "--no-vectors"])
    assert result.exit_code == 0, result.output
    return root


def test_dry_run_prints_plan(sample_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["prepare", str(sample_dir), "--out", str(tmp_path / "d"), "--tile", "64", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    for text in ("sample layout", "EPSG:3857", "EPSG:32633", "sar.tif", "-9999", "dry run"):
        assert text in result.output
    assert not (tmp_path / "d").exists()


def test_prepare_and_resume(sample_dir: Path, tmp_path: Path) -> None:
    args = [
        "prepare",
        str(sample_dir),
        "--out",
        str(tmp_path / "d"),
        "--tile",
        "64",
        "--stride",
        "32",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "MPix/s" in result.output
    m = load_manifest(tmp_path / "d")
    assert m.tile_size == 64 and m.stride == 32 and m.modality_names == ["rgb", "dsm", "sar"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 new tiles" in again.output


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--tile", "512"], 2, "--tile 512 is larger than scene scene"),
        (["--split", "0.5,0.6,0.1"], 2, "--split '0.5,0.6,0.1'"),
        (["--preset", "potsdam"], 2, "potsdam preset: no 2_Ortho_RGB"),
        (["--palette", "dfc2023"], 1, "labels.tif: label colours not in the palette"),
        (["--reference", "lidar"], 2, "--reference 'lidar' is not a modality"),
        (["--resampling", "fancy"], 2, "unknown --resampling 'fancy'"),
    ],
)
def test_bad_input_one_line(
    sample_dir: Path, tmp_path: Path, extra: list[str], code: int, message: str
) -> None:
    result = runner.invoke(app, ["prepare", str(sample_dir), "--out", str(tmp_path / "d"), *extra])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in result.output, (
        result.output
    )
    assert not (tmp_path / "d").exists()


def test_empty_source(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "source folder is empty" in result.output


def test_evaluation_only_split(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = runner.invoke(app, ["prepare", str(sample_dir), "--out", str(out), "--split", "0,0,1"])
    assert result.exit_code == 0, result.output
    assert "no training tiles" in result.output
    assert load_manifest(out).splits == {"test": 16}


def test_sample_tile_size_by_default(sample_dir: Path, tmp_path: Path) -> None:
    """sample.json carries the tile size: 64 px for this 256 px scene, no --tile needed."""
    result = runner.invoke(app, ["prepare", str(sample_dir), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "16 tiles of 64 px (stride 64)" in result.output
    m = load_manifest(tmp_path / "d")
    assert (m.tile_size, m.stride) == (64, 64) and m.splits == {"train": 12, "val": 2, "test": 2}


def test_unwritable_output_before_the_plan(sample_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["prepare", str(sample_dir), "--out", str(tmp_path / "file" / "d")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'file' / 'd'}: output folder is not writable (Not a directory)"
    ]  # one line: no plan table before it


def test_tiles_cut_from_mosaics_and_stac_equal_those_of_the_merged_files(
    tiled_region: Any, tmp_path: Path
) -> None:
    """Folder / list of tiles and STAC assets as modalities: the same training tiles."""
    import numpy as np
    import rasterio

    from tests.tiled_region import write_stac_items

    region = tiled_region
    labels = ["--labels", str(region.merged / "labels.tif"), "--tile", "64", "--split", "1,0,0"]
    # --stac modalities come after the --modality ones (the mask bands' order)
    merged = [f"--modality={m}={region.merged / m}.tif" for m in ("dsm", "sar", "rgb")]
    result = runner.invoke(app, ["prepare", str(region.root), "-o", str(tmp_path / "a"),
                                 *merged, *labels])  # fmt: skip
    assert result.exit_code == 0, result.output
    dsm_list = region.root / "dsm.txt"
    dsm_list.write_text("\n".join(p.name for p in region.dsm_tiles))
    (region.root / "dsm.txt").rename(region.dsm_dir / "dsm.txt")
    items = write_stac_items(region.root / "items.json", region.rgb_tiles)
    tiled = [
        "--stac",
        str(items),
        "--asset",
        "rgb=visual",
        f"--modality=dsm={region.dsm_dir / 'dsm.txt'}",
        f"--modality=sar={region.merged / 'sar.tif'}",
    ]
    result = runner.invoke(app, ["prepare", str(region.root), "-o", str(tmp_path / "b"),
                                 *tiled, *labels])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stac: 9 item(s)" in result.output and "rgb_r0c0" in result.output
    a_files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.tif"))
    b_files = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.tif"))
    assert a_files == b_files and len(a_files) > 8
    for rel in a_files:
        with rasterio.open(tmp_path / "a" / rel) as x, rasterio.open(tmp_path / "b" / rel) as y:
            np.testing.assert_array_equal(x.read(), y.read())
