"""Tests for sgma predict (engine/predict: job, inference, workers): seamless blending,
nodata, streaming, outputs, processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

import sgma_cli.engine.predict.inference as predict_mod
from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.data.scene import Scene, find_sensor_files, open_scene
from sgma_cli.data.window_grid import window_grid
from sgma_cli.engine.predict.inference import Progress, batches_of, read_batches
from sgma_cli.engine.predict.job import PredictJob, predict_scene, run_predict
from sgma_cli.engine.predict.workers import WorkerPlan
from sgma_cli.engine.weights import load_model
from tests.conftest import make_tiny_checkpoint, make_tiny_scene

SIZE = 128


def _train(checkpoint: Path, scene_dir: Path, steps: int = 30) -> Path:
    """A few full-scene steps so the model is decisive (an untrained one predicts one class)."""
    torch.manual_seed(0)
    model, meta = load_model(checkpoint)
    scene = open_scene(
        find_sensor_files(scene_dir, meta.modality_names),
        {m.name: m.bands for m in meta.modalities},
    )
    batch = next(read_batches(scene, meta, batches_of(window_grid(SIZE, SIZE, SIZE, 0.0), 1)))
    images = {k: torch.from_numpy(v) for k, v in batch.images.items()}
    mask = torch.from_numpy(batch.mask)
    with rasterio.open(scene_dir / "labels.tif") as src:
        label = torch.from_numpy(src.read(1).astype(np.int64))[None]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = F.cross_entropy(model(images, mask).logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = checkpoint.with_name(f"trained_{checkpoint.name}")
    save_checkpoint(out, Checkpoint(load_checkpoint(checkpoint).meta, model.state_dict()))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scene folder of 128 px, checkpoint trained 30 steps on it)."""
    root = tmp_path_factory.mktemp("predict")
    scene_dir = make_tiny_scene(root / "scene", size=SIZE)
    return scene_dir, _train(make_tiny_checkpoint(root / "tiny.pt"), scene_dir)


@pytest.fixture(scope="module")
def trained_mean(trained: tuple[Path, Path]) -> tuple[Path, Path]:
    """(same scene, the ``mean`` fusion baseline trained 30 steps on it): a purely local model."""
    scene_dir = trained[0]
    return scene_dir, _train(
        make_tiny_checkpoint(scene_dir.parent / "mean.pt", fusion="mean"), scene_dir
    )


def _scene(
    scene_dir: Path, checkpoint: Path, modalities: list[str] | None = None
) -> tuple[torch.nn.Module, object, Scene]:
    model, meta = load_model(checkpoint)
    files = find_sensor_files(scene_dir, meta.modality_names)
    scene = open_scene(
        files,
        {m.name: m.bands for m in meta.modalities},
        modalities=modalities,
        resolution=0.5,
        resolution_crs=meta.crs,
    )
    return model, meta, scene


def _classes(blocks: list[predict_mod.PredictionBlock]) -> np.ndarray:
    rows = [b.row for b in blocks]
    assert rows == sorted(rows) and rows[0] == 0
    return np.concatenate([b.classes for b in blocks])


class TestBlending:
    """A scene small enough for one window: tiled + blended vs one window.

    With a model whose output at a pixel depends on its neighbourhood only (the ``mean``
    fusion baseline), blending must leave no seam: >= 99 % agreement. SGMA's semantic
    prototypes (Eq. 3) sum over the whole window, so its output also depends on the
    window's content; there blending still has to beat butting windows together.
    """

    def test_local_model_tiled_agrees_with_single_window(
        self, trained_mean: tuple[Path, Path]
    ) -> None:
        model, meta, scene = _scene(*trained_mean)
        single = _classes(list(predict_scene(model, meta, scene, window=SIZE, overlap=0.0)))
        assert (
            0.05 < (single == 0).mean() < 0.95
        )  # the model is not constant: the test means something
        for window, overlap in [(96, 0.5), (64, 0.5), (64, 0.25)]:
            tiled = _classes(
                list(
                    predict_scene(model, meta, scene, window=window, overlap=overlap, batch_size=3)
                )
            )
            assert (tiled == single).mean() >= 0.99, (window, overlap)

    def test_sgma_blending_beats_plain_tiling(self, trained: tuple[Path, Path]) -> None:
        model, meta, scene = _scene(*trained)
        single = _classes(list(predict_scene(model, meta, scene, window=SIZE, overlap=0.0)))
        assert 0.05 < (single == 0).mean() < 0.95
        tiled = _classes(
            list(predict_scene(model, meta, scene, window=96, overlap=0.5, batch_size=3))
        )
        plain = _classes(list(predict_scene(model, meta, scene, window=64, overlap=0.0)))
        agree = (tiled == single).mean()
        assert agree >= 0.975
        assert agree > (plain == single).mean() + 0.02


class TestAvailability:
    def test_nodata_exactly_where_no_chosen_sensor_saw(self, trained: tuple[Path, Path]) -> None:
        model, meta, scene = _scene(*trained, modalities=["dsm", "sar"])
        blocks = list(predict_scene(model, meta, scene, window=64, overlap=0.25))
        valid = np.concatenate([b.valid for b in blocks])
        classes = _classes(blocks)
        with scene.reader() as reader:
            _, seen = reader.read(0, 0, SIZE, SIZE)
        np.testing.assert_array_equal(valid, seen["dsm"] | seen["sar"])
        assert (~valid).sum() > 0.2 * SIZE * SIZE  # DSM hole outside the SAR swath
        assert (classes[~valid] == 255).all() and (classes[valid] < 3).all()
        _, _, full = _scene(*trained)
        assert all(
            b.valid.all() for b in predict_scene(model, meta, full, window=64)
        )  # RGB covers everything

    def test_windows_no_sensor_saw_are_skipped_and_nodata(
        self, trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        model, meta, scene = _scene(*trained, modalities=["sar"])  # the swath ends mid-scene
        sizes: list[int] = []
        real = predict_mod.compute_batch

        def counting(
            model: object, batch: predict_mod.WindowBatch, *args: object, **kwargs: object
        ) -> object:
            sizes.append(len(batch.windows))
            return real(model, batch, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(predict_mod, "compute_batch", counting)
        blocks = list(predict_scene(model, meta, scene, window=32, overlap=0.0, batch_size=4))
        classes, valid = _classes(blocks), np.concatenate([b.valid for b in blocks])
        total = len(window_grid(scene.grid.height, scene.grid.width, 32, 0.0))
        assert sum(sizes) < total  # windows outside the swath never reach the model
        assert (
            (classes[~valid] == 255).all()
            and not valid[:, -20:].any()
            and valid[:, :20].mean() > 0.8
        )


class TestStreaming:
    def test_rows_handed_out_before_the_last_window(self, trained: tuple[Path, Path]) -> None:
        model, meta, scene = _scene(*trained)
        seen: list[int] = []
        events: list[Progress] = []
        for block in predict_scene(
            model, meta, scene, window=64, overlap=0.0, batch_size=1, progress=events.append
        ):
            seen.append(events[-1].windows_done)
            assert block.classes.shape[1] == SIZE
        assert seen[0] < len(events) == 4  # the first rows come out while windows remain
        assert events[-1].megapixels_done == pytest.approx(SIZE * SIZE / 1e6)

    def test_needs_a_model(self, trained: tuple[Path, Path]) -> None:
        _, meta, scene = _scene(*trained)
        with pytest.raises(ValueError, match="needs a model"):
            list(predict_scene(None, meta, scene))


class TestRunPredict:
    def test_outputs(self, trained: tuple[Path, Path], tmp_path: Path) -> None:
        scene_dir, ckpt = trained
        job = PredictJob(
            ckpt,
            scene_dir,
            tmp_path / "map.tif",
            modalities=["rgb", "sar"],
            window=64,
            probabilities=True,
            confidence=True,
            robustness=True,
            vectorize=tmp_path / "map.gpkg",
        )
        result = run_predict(job)
        assert set(result.outputs) == {
            "classes",
            "probabilities",
            "confidence",
            "robustness",
            "vectors",
        }
        with (
            rasterio.open(scene_dir / "rgb.tif") as ref,
            rasterio.open(tmp_path / "map.tif") as src,
        ):
            assert src.crs == ref.crs and src.transform == ref.transform and src.shape == ref.shape
            classes = src.read(1)
            assert src.colormap(1)[1] == (0, 0, 255, 255) and src.nodata == 255
            assert '"building"' in src.tags()["CLASS_NAMES"]
        assert sum(result.class_pixels.values()) == SIZE * SIZE and result.nodata_pixels == 0
        assert result.class_pixels["ground"] == (classes == 0).sum()
        with (
            rasterio.open(tmp_path / "map.probabilities.tif") as p,
            rasterio.open(tmp_path / "map.confidence.tif") as c,
        ):
            probs, conf = p.read().astype(int), c.read(1).astype(int)
            assert p.descriptions == ("ground", "building", "tree")
        assert np.abs(probs.sum(0) - 100).max() <= 2
        assert np.abs(probs.max(0) - conf).max() <= 0
        assert (probs.argmax(0) == classes).mean() > 0.99  # ties in rounding aside
        with rasterio.open(tmp_path / "map.robustness.tif") as r:
            assert r.count == 2 and r.descriptions == ("robustness_rgb", "robustness_sar")
            rob = r.read().astype(int)
        assert rob.max() <= 100 and rob[0].mean() > 0
        assert rob[1][:, 80:].max() <= 1  # no RP weight for SAR outside its swath
        frame = gpd.read_file(tmp_path / "map.gpkg")
        for k, name in enumerate(["ground", "building", "tree"]):
            assert frame[frame["class"] == name]["area"].sum() == pytest.approx(
                (classes == k).sum() * 0.25
            )
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [
                "map.tif",
                "map.probabilities.tif",
                "map.confidence.tif",
                "map.robustness.tif",
                "map.gpkg",
            ]
        )

    def test_failed_run_leaves_no_output(
        self, trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls = {"n": 0}
        real = predict_mod.compute_batch

        def flaky(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] > 2:
                raise RuntimeError("device lost")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(predict_mod, "compute_batch", flaky)
        job = PredictJob(
            trained[1],
            trained[0],
            tmp_path / "map.tif",
            window=32,
            batch_size=2,
            confidence=True,
            vectorize=tmp_path / "map.gpkg",
        )
        with pytest.raises(RuntimeError, match="device lost"):
            run_predict(job)
        assert list(tmp_path.iterdir()) == []

    def test_killed_run_leaves_no_output(self, trained: tuple[Path, Path], tmp_path: Path) -> None:
        script = f"""
import sys, time
import sgma_cli.engine.predict.job as P
import sgma_cli.engine.predict.inference as W
real = W.compute_batch
def slow(*a, **k):
    print("batch", flush=True); time.sleep(0.25); return real(*a, **k)
W.compute_batch = slow
P.run_predict(P.PredictJob(
    P.Path({str(trained[1])!r}), P.Path({str(trained[0])!r}), P.Path({str(tmp_path / "map.tif")!r}),
    window=32, batch_size=1,
))
"""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[3])}
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdout is not None
        for _ in range(2):  # a few batches in: the temporary raster exists and has rows
            assert proc.stdout.readline().strip() == "batch"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (tmp_path / "map.tif").exists()
        assert all(p.name.startswith(".") for p in tmp_path.iterdir())  # only hidden temporaries


class TestPrecision:
    def test_bf16_autocast_path(self, trained: tuple[Path, Path]) -> None:
        """The GPU path's bf16 autocast, exercised on the CPU: same map up to rounding."""
        model, meta, scene = _scene(*trained)
        fp32 = _classes(list(predict_scene(model, meta, scene, window=64, precision="fp32")))
        bf16 = list(
            predict_scene(model, meta, scene, window=64, precision="bf16", probabilities=True)
        )
        assert (_classes(bf16) == fp32).mean() > 0.97
        assert all(
            b.probabilities is not None and b.probabilities.dtype == np.float32 for b in bf16
        )


class TestProcesses:
    def test_two_cpu_processes_match_one(self, trained: tuple[Path, Path]) -> None:
        model, meta, scene = _scene(*trained)
        kw = {"window": 64, "overlap": 0.25, "batch_size": 2, "probabilities": True}
        one = list(predict_scene(model, meta, scene, **kw))
        plan = WorkerPlan(trained[1], ("cpu", "cpu"), threads=1)
        events: list[Progress] = []
        two = list(predict_scene(None, meta, scene, workers=plan, progress=events.append, **kw))
        assert (_classes(two) == _classes(one)).mean() > 0.999
        np.testing.assert_allclose(
            np.concatenate([b.probabilities for b in two], 1),
            np.concatenate([b.probabilities for b in one], 1),
            atol=1e-4,
        )
        assert events[-1].windows_done == events[-1].windows_total == 9

    def test_worker_errors_reach_the_parent(
        self, trained: tuple[Path, Path], tmp_path: Path
    ) -> None:
        _, meta, scene = _scene(*trained)
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        plan = WorkerPlan(bad, ("cpu", "cpu"), threads=1)
        with pytest.raises(Exception, match="not a readable checkpoint"):
            list(predict_scene(None, meta, scene, window=64, workers=plan))
