"""The ``sgma evaluate --scene`` job: whole scenes through predict's sliding windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.engine.evaluate.job import EvaluateOptions
from sgma_cli.engine.evaluate.scene import SceneSource, evaluate_scene
from sgma_cli.engine.metrics import confusion_matrix
from sgma_cli.engine.subsets import all_subsets
from sgma_cli.engine.weights import load_model
from tests.conftest import make_tiny_checkpoint

SUBSETS = all_subsets(["rgb", "dsm", "sar"])


class TestScene:
    """Every subset of a whole scene equals ``predict_scene`` on that subset."""

    @pytest.fixture(scope="class")
    def scene(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
        from sgma_cli.config.checkpoint import Checkpoint, save_checkpoint
        from sgma_cli.data.scene import find_sensor_files, open_scene
        from sgma_cli.data.window_grid import window_grid
        from sgma_cli.engine.predict.inference import batches_of, read_batches
        from tests.conftest import make_tiny_scene

        root = tmp_path_factory.mktemp("scene")
        scene_dir = make_tiny_scene(root / "scene", size=96)
        ckpt = make_tiny_checkpoint(root / "tiny.pt")
        model, meta = load_model(ckpt)
        scene = open_scene(
            find_sensor_files(scene_dir, meta.modality_names),
            {m.name: m.bands for m in meta.modalities},
        )
        batch = next(read_batches(scene, meta, batches_of(window_grid(96, 96, 96, 0.0), 1)))
        images, mask = (
            {k: torch.from_numpy(v) for k, v in batch.images.items()},
            torch.from_numpy(batch.mask),
        )
        import rasterio

        with rasterio.open(scene_dir / "labels.tif") as src:
            label = torch.from_numpy(src.read(1).astype("int64"))[None]
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for step in range(21):
            subset = SUBSETS[step % len(SUBSETS)]
            loss = F.cross_entropy(model({n: images[n] for n in subset}, mask).logits, label)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained = save_checkpoint(
            root / "trained.pt", Checkpoint(load_checkpoint(ckpt).meta, model.state_dict())
        )
        return scene_dir, trained

    def test_equals_predict_per_subset(self, scene: tuple[Path, Path]) -> None:
        import numpy as np
        import rasterio

        from sgma_cli.data.scene import find_sensor_files, open_scene
        from sgma_cli.engine.predict.job import predict_scene

        scene_dir, ckpt = scene
        ev = evaluate_scene(
            ckpt,
            SceneSource(scene_dir, scene_dir / "labels.tif", window=64, overlap=0.25),
            EvaluateOptions(batch_size=2, device="cpu"),
        )
        assert ev.tiles == 4 and ev.split == "scene" and ev.result.subsets == SUBSETS
        model, meta = load_model(ckpt)
        with rasterio.open(scene_dir / "labels.tif") as src:
            label = torch.from_numpy(src.read(1).astype("int64"))
        files = find_sensor_files(scene_dir, meta.modality_names)
        bands = {m.name: m.bands for m in meta.modalities}
        # predict picks its grid from the chosen sensors: the full scene's grid while rgb is chosen
        for subset in [s for s in SUBSETS if "rgb" in s]:
            sc = open_scene(
                files, bands, modalities=list(subset), resolution=0.5, resolution_crs=meta.crs
            )
            blocks = list(
                predict_scene(model, meta, sc, window=64, overlap=0.25, batch_size=2, device="cpu")
            )
            classes = torch.from_numpy(np.concatenate([b.classes for b in blocks]).astype("int64"))
            valid = torch.from_numpy(np.concatenate([b.valid for b in blocks]))
            expected = confusion_matrix(classes, label, 3, 255, valid)
            assert torch.equal(ev.result.confusion[SUBSETS.index(subset)], expected), subset
        pixels = [int(c.sum()) for c in ev.result.confusion]
        # rgb sees everything, labels have no gaps
        assert pixels[SUBSETS.index(("rgb",))] == 96 * 96
        assert pixels[SUBSETS.index(("sar",))] < 96 * 96  # the swath ends mid-scene
        assert ev.result.metrics[0].miou > 0.5
        assert len({tuple(c.flatten().tolist()) for c in ev.result.confusion}) > 3

    def test_missing_labels_values(self, scene: tuple[Path, Path], tmp_path: Path) -> None:
        import rasterio

        from sgma_cli.errors import RasterError

        scene_dir, ckpt = scene
        bad = tmp_path / "labels.tif"
        with rasterio.open(scene_dir / "labels.tif") as src:
            profile, data = src.profile, src.read()
        data[0, :4, :4] = 7
        with rasterio.open(bad, "w", **profile) as dst:
            dst.write(data)
        with pytest.raises(RasterError, match="not in the palette: 7"):
            evaluate_scene(
                ckpt, SceneSource(scene_dir, bad, window=64), EvaluateOptions(device="cpu")
            )

    def test_like_reuses_subsets(self, scene: tuple[Path, Path]) -> None:
        scene_dir, ckpt = scene
        source = SceneSource(scene_dir, scene_dir / "labels.tif", window=64)
        first = evaluate_scene(ckpt, source, EvaluateOptions(subsets="dsm;rgb,sar", device="cpu"))
        again = evaluate_scene(ckpt, source, EvaluateOptions(device="cpu"), like=first)
        assert first.result.subsets == again.result.subsets == [("dsm",), ("rgb", "sar")]
        for a, b in zip(first.result.confusion, again.result.confusion):
            assert torch.equal(a, b)

    def test_scene_without_a_sensor(self, scene: tuple[Path, Path], tmp_path: Path) -> None:
        import shutil

        from sgma_cli.errors import DatasetError

        scene_dir, ckpt = scene
        for name in ("rgb.tif", "dsm.tif", "labels.tif"):
            shutil.copy(scene_dir / name, tmp_path / name)
        source = SceneSource(tmp_path, tmp_path / "labels.tif", window=64)
        ev = evaluate_scene(ckpt, source, EvaluateOptions(device="cpu"))
        assert ev.skipped == ("sar",)
        assert ev.result.subsets == [("rgb", "dsm"), ("rgb",), ("dsm",)]
        assert int(ev.result.confusion[1].sum()) == 96 * 96
        assert torch.isnan(ev.result.robustness[:, 2]).all()  # sar never encoded
        with pytest.raises(DatasetError, match=r"subset 'sar' needs \['sar'\]"):
            evaluate_scene(ckpt, source, EvaluateOptions(subsets="rgb;sar", device="cpu"))
