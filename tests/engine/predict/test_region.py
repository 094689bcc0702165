"""Tests for the region job (engine/predict/region.py, region_outputs.py, executors.py):
chunked == one-piece, resume, refusals, failures, polygons across chunk borders."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

import sgma_cli.engine.predict.region as region_mod
from sgma_cli.data.window_grid import window_grid, windows_touching
from sgma_cli.engine.predict.executors import LocalExecutor
from sgma_cli.engine.predict.job import PredictJob, run_predict
from sgma_cli.engine.predict.region import (
    ChunkTask,
    RegionJob,
    RegionProgress,
    RegionResult,
    chunk_side,
    is_region_out,
    plan_chunks,
    run_region,
)
from sgma_cli.errors import OutputError, SgmaError, UsageError
from tests.conftest import make_tiny_checkpoint, make_tiny_scene

SCENE = 96  # px; windows of 32 px, overlap 0.25 (stride 24), chunks of 48 px: 2 x 2 chunks
WINDOW = 32


def _decisive(checkpoint: Path, scene_dir: Path) -> Path:
    """The untrained model, made to draw several classes without training (one forward pass).

    An untrained head predicts one class everywhere: its features share a large constant
    part. Centring the head's batch norm on this scene's features and drawing a random
    classifier makes the classes follow the features (sensor coverage, texture).
    """
    import torch

    from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from sgma_cli.data.scene import find_sensor_files, open_scene
    from sgma_cli.engine.predict.inference import batches_of, read_batches
    from sgma_cli.engine.weights import load_model

    model, meta = load_model(checkpoint)
    scene = open_scene(
        find_sensor_files(scene_dir, meta.modality_names),
        {m.name: m.bands for m in meta.modalities},
    )
    grid = window_grid(SCENE, SCENE, SCENE, 0.0)
    batch = next(read_batches(scene, meta, batches_of(grid, 1)))
    seen: dict[str, torch.Tensor] = {}
    hook = model.head.norm.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.inference_mode():
        model(
            {k: torch.from_numpy(v) for k, v in batch.images.items()}, torch.from_numpy(batch.mask)
        )
    hook.remove()
    state = model.state_dict()
    state["head.norm.running_mean"] = seen["x"].mean((0, 2, 3)).clone()
    state["head.norm.running_var"] = seen["x"].var((0, 2, 3)).clone()
    weight = state["head.classifier.weight"]
    state["head.classifier.weight"] = torch.randn(
        weight.shape, generator=torch.Generator().manual_seed(0)
    )
    state["head.classifier.bias"] = torch.zeros_like(state["head.classifier.bias"])
    out = checkpoint.with_name(f"decisive_{checkpoint.name}")
    save_checkpoint(out, Checkpoint(load_checkpoint(checkpoint).meta, state))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scene folder of 96 px, a checkpoint that draws several classes on it)."""
    root = tmp_path_factory.mktemp("region")
    scene_dir = make_tiny_scene(root / "scene", size=SCENE)
    return scene_dir, _decisive(make_tiny_checkpoint(root / "tiny.pt"), scene_dir)


@pytest.fixture(scope="module")
def one_piece(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-piece map (classes, probabilities, robustness, polygons) of the scene."""
    scene_dir, checkpoint = trained
    out = tmp_path_factory.mktemp("one") / "map.tif"
    run_predict(
        PredictJob(
            checkpoint=checkpoint,
            scene_dir=scene_dir,
            out=out,
            device="cpu",
            window=WINDOW,
            probabilities=True,
            robustness=True,
            vectorize=out.with_suffix(".gpkg"),
        )
    )
    return out


def _job(trained: tuple[Path, Path], out: Path, **kw: object) -> RegionJob:
    scene_dir, checkpoint = trained
    # other batches than the one-piece job's (8): batch composition does not change numbers
    # (and one forward pass per chunk: the tests' time is mostly per-pass overhead)
    options: dict[str, object] = {"device": "cpu", "chunk": 48, "window": WINDOW, "batch_size": 16}
    options.update(kw)
    return RegionJob(checkpoint=checkpoint, scene_dir=scene_dir, out=out, **options)  # type: ignore[arg-type]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


class CountingExecutor(LocalExecutor):
    """The local executor, counting the chunks it was given."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, tasks, setup, work, on_result, on_failure) -> None:  # type: ignore[no-untyped-def]
        self.ran += [t.id for t in tasks]
        super().run(tasks, setup, work, on_result, on_failure)


def test_windows_touching_is_the_grid_restricted_to_a_box() -> None:
    full = window_grid(200, 300, 64, 0.25)
    box = windows_touching(200, 300, 64, 0.25, range(48, 96), range(100, 250))
    expected = [
        w for w in full if w.row < 96 and w.row + 64 > 48 and w.col < 250 and w.col + 64 > 100
    ]
    assert box == expected and len(box) > 4


def test_chunk_side_and_plan() -> None:
    assert chunk_side(None, 128, 0.25) == 4128  # 4096 rounded up to the 96 px stride
    assert chunk_side(None, 512, 0.25) == 8448  # 16 windows of 512, rounded up to 384
    assert chunk_side(10, 64, 0.25) == 48 and chunk_side(100, 64, 0.5) == 128
    assert is_region_out(Path("out")) and not is_region_out(Path("map.TIF"))
    from affine import Affine

    from sgma_cli.data.raster import Grid

    tasks = plan_chunks(Grid(None, Affine.identity(), 100, 50), 48)
    assert [(t.id, t.row, t.col, t.height, t.width) for t in tasks] == [
        ("r000_c000", 0, 0, 48, 48),
        ("r000_c001", 0, 48, 48, 48),
        ("r000_c002", 0, 96, 48, 4),
        ("r001_c000", 48, 0, 2, 48),
        ("r001_c001", 48, 48, 2, 48),
        ("r001_c002", 48, 96, 2, 4),
    ]
    assert isinstance(tasks[0], ChunkTask)


@dataclass
class Runs:
    """A region run whose chunk r001_c001 failed after writing its files, then the rerun."""

    out: Path
    vectors: Path
    error: SgmaError
    after_failure: list[str]
    status: dict[str, str]
    rerun: list[str]
    result: RegionResult
    progress: list[RegionProgress]


@pytest.fixture(scope="module")
def runs(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("runs")
    out, vectors = root / "run", root / "polygons.gpkg"
    job = _job(trained, out, probabilities=True, robustness=True, vectorize=vectors, merge=True)
    real = region_mod._compute_into

    def failing(state, task, folder, start):  # type: ignore[no-untyped-def]
        record = real(state, task, folder, start)  # every file of the chunk written, then:
        if task.id == "r001_c001":
            raise OutputError("cannot write (No space left on device)", folder)
        return record

    region_mod._compute_into = failing  # type: ignore[assignment]
    try:
        with pytest.raises(SgmaError) as caught:
            run_region(job)
    finally:
        region_mod._compute_into = real  # type: ignore[assignment]
    after = sorted(p.name for p in out.iterdir()) + sorted(
        f"chunks/{p.name}" for p in (out / "chunks").iterdir()
    )
    index = gpd.read_file(out / "chunks.gpkg")
    executor = CountingExecutor()
    progress: list[RegionProgress] = []
    rerun = dataclasses.replace(job, batch_size=4)  # batches do not change pixels
    result = run_region(rerun, executor=executor, progress=progress.append)
    return Runs(
        out,
        vectors,
        caught.value,
        after,
        dict(zip(index["chunk"], index["status"])),
        executor.ran,
        result,
        progress,
    )


def test_failed_chunk_leaves_nothing_finished(runs: Runs) -> None:
    assert "1 of 4 chunks failed (chunk r001_c001: " in str(runs.error)
    assert "No space left on device" in str(runs.error)
    # no map.vrt, no chunk folder of the failed chunk, no temporaries
    assert runs.after_failure == [
        "chunks",
        "chunks.gpkg",
        "run.json",
        "chunks/r000_c000",
        "chunks/r000_c001",
        "chunks/r001_c000",
    ]
    assert runs.status == {
        "r000_c000": "done",
        "r000_c001": "done",
        "r001_c000": "done",
        "r001_c001": "failed",
    }


def test_rerun_computes_only_the_missing_chunk(runs: Runs) -> None:
    assert runs.rerun == ["r001_c001"]
    # the bar moves with the windows of the running chunk (9 windows in batches of 4)
    running = [round(p.running, 3) for p in runs.progress]
    assert running[:4] == [0.0, round(4 / 9, 3), round(8 / 9, 3), 1.0]
    last = runs.progress[-1]
    assert (last.chunks_done, last.chunks_total, last.running) == (1, 1, 0.0)
    assert last.megapixels_done == pytest.approx(last.megapixels_total)
    assert runs.result.chunks_computed == 1 and runs.result.chunks_skipped == 3
    index = gpd.read_file(runs.out / "chunks.gpkg")
    assert set(index["status"]) == {"done"} and set(index["sensors"]) >= {"rgb,dsm,sar"}


def test_chunked_map_equals_one_piece(runs: Runs, one_piece: Path) -> None:
    one = _read(one_piece)
    assert len(np.unique(one)) >= 2  # a map with several classes
    assert np.array_equal(_read(runs.out / "map.vrt"), one)
    assert np.array_equal(_read(runs.out / "map.tif"), one)
    for kind in ("probabilities", "robustness"):
        expected = _read(one_piece.with_name(f"map.{kind}.tif"))
        assert np.array_equal(_read(runs.out / f"{kind}.vrt"), expected), kind
        assert np.array_equal(_read(runs.out / f"{kind}.tif"), expected), kind
    with rasterio.open(runs.out / "map.vrt") as vrt, rasterio.open(one_piece) as ref:
        assert vrt.crs == ref.crs and vrt.transform == ref.transform
        assert vrt.colormap(1)[1] == ref.colormap(1)[1]
        assert vrt.descriptions == ("class",) and vrt.nodata == 255
    with rasterio.open(runs.out / "probabilities.vrt") as vrt:
        assert vrt.scales == (0.01,) * 3
        assert vrt.descriptions == ("ground", "building", "tree")
    names = ("ground", "building", "tree")
    assert runs.result.class_pixels == {n: int((one == i).sum()) for i, n in enumerate(names)}
    manifest = json.loads((runs.out / "run.json").read_text())
    assert manifest["checkpoint_digest"].startswith("sha256:")


def test_polygon_crossing_a_chunk_border_is_one(runs: Runs, one_piece: Path) -> None:
    chunked = gpd.read_file(runs.vectors)
    whole = gpd.read_file(one_piece.with_suffix(".gpkg"))
    assert len(chunked) == len(whole) == runs.result.polygons
    assert sorted(np.round(chunked.area, 3)) == sorted(np.round(whole.area, 3))
    border_y = 5800000.0 - 48 * 0.5  # the chunk border between rows 47 and 48
    crossing = chunked[(chunked.bounds.miny < border_y) & (chunked.bounds.maxy > border_y)]
    assert len(crossing) >= 1  # one polygon each, as in the one-piece map


def test_rerun_with_other_options_is_refused(trained: tuple[Path, Path], runs: Runs) -> None:
    with pytest.raises(UsageError, match=r"other options \(overlap 0.25 -> 0.5\).*--overwrite"):
        run_region(_job(trained, runs.out, overlap=0.5, probabilities=True, robustness=True))
    executor = CountingExecutor()
    again = run_region(
        _job(trained, runs.out, probabilities=True, robustness=True), executor=executor
    )
    assert executor.ran == [] and again.chunks_skipped == 4  # --merge/--vectorize: no matter


def test_overwrite_starts_over(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "run.json").write_text('{"format": "sgma-region/1", "options": {}}')
    (out / "chunks" / "r009_c009").mkdir(parents=True)
    corner = "500000,5799984,500016,5800000"  # 32 x 32 px: one window
    with pytest.raises(UsageError, match="--overwrite"):
        run_region(_job(trained, out, chunk=96, aoi=corner))
    executor = CountingExecutor()
    run_region(_job(trained, out, chunk=96, aoi=corner, overwrite=True), executor=executor)
    assert executor.ran == ["r000_c000"]
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["r000_c000"]
    assert (out / "notes.txt").read_text() == "mine"  # only what sgma wrote is removed


def test_aoi_polygon_equals_one_piece_and_like(
    trained: tuple[Path, Path], one_piece: Path, tmp_path: Path
) -> None:
    """Outside an AOI polygon: nodata; the chunked map equals the one-piece one of the AOI;
    --like keeps the --like raster's pixel lattice."""
    from shapely.geometry import Polygon

    x0, y0 = 500000.0, 5800000.0  # the tiny scene's origin, 0.5 m pixels
    tri = Polygon([(x0 + 2.2, y0 - 2.2), (x0 + 40, y0 - 2.2), (x0 + 2.2, y0 - 40)])
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[tri], crs="EPSG:32633").to_file(aoi)
    scene_dir, checkpoint = trained
    single = tmp_path / "single.tif"
    run_predict(
        PredictJob(
            checkpoint=checkpoint,
            scene_dir=scene_dir,
            out=single,
            device="cpu",
            window=WINDOW,
            aoi=str(aoi),
            like=one_piece,
        )
    )
    result = run_region(_job(trained, tmp_path / "run", aoi=str(aoi), like=one_piece))
    assert result.chunks_total == 3  # of 2 x 2: the chunk beyond the triangle is not computed
    chunked = _read(tmp_path / "run" / "map.vrt")
    assert np.array_equal(chunked, _read(single))
    with rasterio.open(single) as src:
        assert (src.transform.c, src.transform.f) == (x0 + 2.0, y0 - 2.0)  # on the lattice
        assert src.width == src.height == 76
    inside = chunked[0] != 255
    assert 0.4 < inside.mean() < 0.6  # a triangle: about half of its box
    assert not inside[-1, -1] and inside[0, 0]


def test_like_puts_sensor_subsets_on_one_grid(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Today --modalities sar writes in the SAR's EPSG:3857; with --like on the RGB grid."""
    scene_dir, checkpoint = trained
    base = {"checkpoint": checkpoint, "scene_dir": scene_dir, "device": "cpu", "window": WINDOW}
    base["batch_size"] = 16
    rgb_dsm = tmp_path / "rgb_dsm.tif"
    run_predict(PredictJob(out=rgb_dsm, modalities=["rgb", "dsm"], **base))  # type: ignore[arg-type]
    run_region(
        RegionJob(out=tmp_path / "sar", modalities=["sar"], like=rgb_dsm, chunk=96, **base)  # type: ignore[arg-type]
    )
    with rasterio.open(rgb_dsm) as a, rasterio.open(tmp_path / "sar" / "map.vrt") as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        sar_only = b.read(1)
    assert (sar_only[:, :40] != 255).all() and (sar_only[:, 56:] == 255).all()  # swath ends mid


@pytest.mark.slow
def test_killed_run_leaves_nothing_finished(
    trained: tuple[Path, Path], one_piece: Path, tmp_path: Path
) -> None:
    """SIGKILL after the first chunk: no finished-looking chunk; the rerun gives the same map."""
    scene_dir, checkpoint = trained
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sgma_cli", "predict", str(scene_dir), "-c", str(checkpoint)]
    cmd += ["-o", str(out), "--chunk", "48", "--window", str(WINDOW), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "chunks").glob("*/chunk.json")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [p for p in (out / "chunks").iterdir() if not p.name.startswith(".")]
    assert 1 <= len(done) < 4
    assert all((p / "chunk.json").is_file() for p in done)
    assert not (out / "map.vrt").exists()
    result = run_region(_job(trained, out))
    assert result.chunks_skipped == len(done)
    assert np.array_equal(_read(out / "map.vrt"), _read(one_piece))
    assert [p.name for p in (out / "chunks").iterdir() if p.name.startswith(".")] == []
