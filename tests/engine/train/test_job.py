"""Tests of the train job: a full tiny run, its outputs, exact resume after SIGKILL, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.config.recipe import Recipe, load_recipe
from sgma_cli.engine.train import TrainOptions, plan_training, train
from sgma_cli.engine.train.loop import TrainEvent
from sgma_cli.engine.train.run_log import read_metrics
from sgma_cli.errors import CheckpointError, ConfigError, DatasetError, UsageError

REPO = Path(__file__).resolve().parents[3]

#: A run of 2 epochs x 4 steps (batch 1 over 4 tiles) with a checkpoint every 2 steps.
TINY = [
    "model.backbone='test_convnext'",
    "model.head_dim=32",
    "data.crop_size=64",
    "data.batch_size=1",
    "data.num_workers=0",
    "schedule.epochs=2",
    "schedule.warmup_epochs=1",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "optim.lr=1e-3",
    "data.scale=[0.75, 1.25]",
]


def tiny_recipe(*extra: str) -> Recipe:
    return load_recipe(None, [*TINY, *extra])


def on_cpu(data_dir: Path, run_dir: Path, resume: bool = False) -> TrainOptions:
    """One CPU process on ``data_dir``, writing ``run_dir``."""
    return TrainOptions(data_dir=data_dir, run_dir=run_dir, device="cpu", resume=resume)


class TestTrainRun:
    def test_outputs(self, tiny_dataset: Path, tmp_path: Path) -> None:
        events: list[TrainEvent] = []
        result = train(
            tiny_recipe(), on_cpu(tiny_dataset, tmp_path / "run"), progress=events.append
        )
        run = tmp_path / "run"
        assert result.step == result.total_steps == 8
        assert [e.kind for e in events].count("step") == 8
        kinds = {e.kind for e in events}
        assert kinds >= {"start", "step", "val_progress", "val", "checkpoint", "end"}
        assert {k for k in kinds if k.startswith("val")} == {"val_progress", "val"}
        assert all(
            e.values["done"] <= e.values["total"] for e in events if e.kind == "val_progress"
        )
        for name in (
            "recipe.toml",
            "metrics.csv",
            "summary.json",
            "loss.png",
            "val_miou.png",
            "mas_probs.png",
        ):
            assert (run / name).is_file(), name
        assert list((run / "tb").iterdir())
        rows = read_metrics(run / "metrics.csv")
        train_rows = [r for r in rows if r["kind"] == "train"]
        assert [int(r["step"]) for r in train_rows] == list(range(1, 9))
        assert len([r for r in rows if r["kind"] == "val"]) == 2
        # MAS probabilities per scale sum to 1 over the modalities
        for scale in range(1, 5):
            total = sum(float(train_rows[0][f"mas_s{scale}_{m}"]) for m in ("rgb", "dsm", "sar"))
            assert total == pytest.approx(1.0, abs=1e-4)
        ckpt = load_checkpoint(run / "checkpoints" / "last.pt", with_train_state=True)
        assert ckpt.meta.class_names == ["ground", "building", "tree"]
        assert ckpt.meta.modality_names == ["rgb", "dsm", "sar"]
        assert ckpt.meta.modalities[0].mean == [120.0, 145.0, 120.0]
        assert ckpt.meta.recipe["data"]["dir"] == str(tiny_dataset.resolve())
        assert ckpt.meta.step == 8 and ckpt.train is not None and ckpt.train["step"] == 8
        assert set(ckpt.train["rng"][0]) == {"python", "numpy", "torch", "cuda"}
        best = load_checkpoint(run / "checkpoints" / "best.pt")
        assert "val_average" in best.meta.metrics
        # the loss goes down on this easy data
        assert float(train_rows[-1]["loss"]) < float(train_rows[0]["loss"])

    def test_sgf_only_and_dropout(self, tiny_dataset: Path, tmp_path: Path) -> None:
        recipe = tiny_recipe(
            "train.mas=false",
            "train.modality_dropout=0.5",
            "schedule.max_steps=2",
            "train.val_every=0",
        )
        result = train(recipe, on_cpu(tiny_dataset, tmp_path / "run"))
        rows = read_metrics(tmp_path / "run" / "metrics.csv")
        assert result.step == 2 and rows[0]["loss_mas"] == "" and rows[0]["mas_s1_rgb"] == ""
        # never validated: best.pt holds the last weights (issue 16), with a warning
        assert result.best_checkpoint is not None and result.best_checkpoint.name == "best.pt"

    def test_accumulate_clip_batch_mas(self, tiny_dataset: Path, tmp_path: Path) -> None:
        recipe = tiny_recipe(
            "train.accumulate=2",
            "optim.grad_clip=1.0",
            "model.mas_granularity='batch'",
            "train.val_every=0",
        )
        result = train(recipe, on_cpu(tiny_dataset, tmp_path / "run"))
        assert (
            result.total_steps == 4 and result.step == 4
        )  # 4 batches per epoch / 2 per step x 2 epochs
        rows = read_metrics(tmp_path / "run" / "metrics.csv")
        assert float(rows[-1]["loss"]) > 0 and rows[-1]["mas_s1_rgb"] != ""


#: The kill/resume runs validate once (at the end) to keep the test short.
KILL_ARGS = ("train.val_every=2",)

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from tests.engine.train.test_job import KILL_ARGS, on_cpu, tiny_recipe
    from sgma_cli.engine.train import train

    def progress(event):
        # killed -9 at step 3: mid-epoch, one step after the step-2 checkpoint
        if event.kind == "step" and event.step == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    train(tiny_recipe(*KILL_ARGS), on_cpu(Path(sys.argv[1]), Path(sys.argv[2])), progress=progress)
    """
)


class TestResume:
    def test_sigkill_then_resume_is_bitwise_exact(self, tiny_dataset: Path, tmp_path: Path) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            reference = train(tiny_recipe(*KILL_ARGS), on_cpu(tiny_dataset, tmp_path / "ref"))
            run = tmp_path / "killed"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
            proc = subprocess.run(
                [sys.executable, "-c", KILL_SCRIPT, str(tiny_dataset), str(run)],
                cwd=REPO,
                env=env,
                capture_output=True,
                timeout=120,
            )
            assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
            partial = load_checkpoint(run / "checkpoints" / "last.pt", with_train_state=True)
            assert (
                partial.train is not None
                and partial.train["step"] == 2
                and partial.train["batch_in_epoch"] == 2
            )
            assert (
                max(int(r["step"]) for r in read_metrics(run / "metrics.csv")) == 3
            )  # a step after the checkpoint
            resumed = train(tiny_recipe(*KILL_ARGS), on_cpu(tiny_dataset, run, resume=True))
        finally:
            torch.set_num_threads(threads)
        assert resumed.resumed_from == 2 and resumed.step == reference.step == 8
        a = load_checkpoint(reference.last_checkpoint, with_train_state=True)
        b = load_checkpoint(run / "checkpoints" / "last.pt", with_train_state=True)
        assert a.model.keys() == b.model.keys()
        for key in a.model:
            assert torch.equal(a.model[key], b.model[key]), key
        rows = read_metrics(run / "metrics.csv")
        assert [int(r["step"]) for r in rows if r["kind"] == "train"] == list(range(1, 9))
        ref_rows = read_metrics(reference.run_dir / "metrics.csv")
        assert [r["loss"] for r in rows if r["kind"] == "train"] == [
            r["loss"] for r in ref_rows if r["kind"] == "train"
        ]
        assert resumed.best == reference.best and len([r for r in rows if r["kind"] == "val"]) == 1

    def test_corrupt_checkpoint(self, tiny_dataset: Path, tmp_path: Path) -> None:
        last = tmp_path / "run" / "checkpoints" / "last.pt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError, match="last.pt"):
            plan_training(tiny_recipe(), on_cpu(tiny_dataset, tmp_path / "run", resume=True))

    def test_existing_run_needs_resume(self, tiny_dataset: Path, tmp_path: Path) -> None:
        last = tmp_path / "run" / "checkpoints" / "last.pt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"x")
        with pytest.raises(UsageError, match="--resume"):
            plan_training(tiny_recipe(), on_cpu(tiny_dataset, tmp_path / "run"))
        with pytest.raises(UsageError, match="nothing to resume"):
            plan_training(tiny_recipe(), on_cpu(tiny_dataset, tmp_path / "other", resume=True))


class TestPlanErrors:
    def test_missing_dataset(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="not found"):
            plan_training(tiny_recipe(), on_cpu(tmp_path / "nope", tmp_path / "run"))

    def test_modalities_disagree(self, tiny_dataset: Path, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"\['nir'\]"):
            plan_training(
                tiny_recipe("data.modalities=['rgb','nir']"), on_cpu(tiny_dataset, tmp_path / "r")
            )

    def test_classes_disagree(self, tiny_dataset: Path, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="data.classes"):
            plan_training(
                tiny_recipe("data.classes=['a','b']"), on_cpu(tiny_dataset, tmp_path / "r")
            )

    def test_bad_pretrained_weights(self, tiny_dataset: Path, tmp_path: Path) -> None:
        weights = tmp_path / "weights.pth"
        torch.save({"not": torch.zeros(3)}, weights)
        with pytest.raises(ConfigError, match="weights.pth"):
            plan_training(
                tiny_recipe(f"model.pretrained='{weights}'"), on_cpu(tiny_dataset, tmp_path / "r")
            )
        with pytest.raises(ConfigError, match="not found"):
            plan_training(
                tiny_recipe(f"model.pretrained='{tmp_path / 'x.pth'}'"),
                on_cpu(tiny_dataset, tmp_path / "r"),
            )

    def test_unwritable_run_folder(self, tiny_dataset: Path, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(UsageError, match="cannot write"):
            plan_training(tiny_recipe(), on_cpu(tiny_dataset, blocker / "run"))

    def test_batch_too_large(self, tiny_dataset: Path, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="one step needs"):
            plan_training(tiny_recipe("data.batch_size=8"), on_cpu(tiny_dataset, tmp_path / "r"))

    def test_model_that_does_not_build(self, tiny_dataset: Path, tmp_path: Path) -> None:
        # test_convnext's first stage has 24 channels: 5 heads cannot split them
        with pytest.raises(
            ConfigError,
            match=r"recipe \[model\] does not fit the dataset: num_heads=5 must divide .* 24",
        ):
            plan_training(tiny_recipe("model.sp_heads=5"), on_cpu(tiny_dataset, tmp_path / "r"))

    def test_unknown_backbone(self, tiny_dataset: Path, tmp_path: Path) -> None:
        with pytest.raises(
            ConfigError, match="model.backbone: unknown backbone 'convnext_tiniest'"
        ):
            plan_training(
                tiny_recipe("model.backbone='convnext_tiniest'"),
                on_cpu(tiny_dataset, tmp_path / "r"),
            )

    def test_plan_holds_the_model_config(self, tiny_dataset: Path, tmp_path: Path) -> None:
        plan = plan_training(tiny_recipe("model.sp_heads=4"), on_cpu(tiny_dataset, tmp_path / "r"))
        assert plan.model.modality_names == plan.modalities == ("rgb", "dsm", "sar")
        assert [m.bands for m in plan.model.modalities] == [3, 1, 1]
        assert (plan.model.num_classes, plan.model.backbone, plan.model.sp_heads) == (
            3,
            "test_convnext",
            4,
        )

    def test_too_many_gpus(self, tiny_dataset: Path, tmp_path: Path) -> None:
        from sgma_cli.errors import DeviceError

        with pytest.raises(DeviceError, match="GPU"):
            plan_training(
                tiny_recipe(), TrainOptions(data_dir=tiny_dataset, run_dir=tmp_path / "r", gpus=64)
            )


class TestPretrained:
    def test_fitting_weights_pass(self, tmp_path: Path) -> None:
        import timm

        from sgma_cli.engine.train.plan import load_pretrained

        weights = tmp_path / "convnext.pth"
        source = timm.create_model("test_convnext").state_dict()
        torch.save(source, weights)
        state = load_pretrained(weights, "test_convnext")
        assert state.keys() == source.keys()
        torch.testing.assert_close(state["stem.0.weight"], source["stem.0.weight"])
        with pytest.raises(
            ConfigError, match="convnext.pth: model.pretrained does not fit backbone 'test_resnet'"
        ):
            load_pretrained(weights, "test_resnet")


class TestResumeGuards:
    def test_resume_needs_the_same_setup(self, tiny_dataset: Path, tmp_path: Path) -> None:
        run = tmp_path / "run"
        train(tiny_recipe(), on_cpu(tiny_dataset, run))
        plan_training(tiny_recipe(), on_cpu(tiny_dataset, run, resume=True))  # same settings: fine
        with pytest.raises(CheckpointError, match="used 1 images per step .* would use 2"):
            plan_training(tiny_recipe("data.batch_size=2"), on_cpu(tiny_dataset, run, resume=True))
        with pytest.raises(CheckpointError, match="train.seed = 0; resume with the same seed"):
            plan_training(tiny_recipe("train.seed=5"), on_cpu(tiny_dataset, run, resume=True))
        with pytest.raises(CheckpointError, match=r"model settings \['head_dim'\] differ"):
            plan_training(tiny_recipe("model.head_dim=16"), on_cpu(tiny_dataset, run, resume=True))
        # a checkpoint written before a model key existed reads it as its default
        last = run / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(last, with_train_state=True)
        older = {k: v for k, v in ckpt.meta.model.items() if k != "prototypes"}
        meta = ckpt.meta.model_copy(update={"model": older})
        save_checkpoint(last, Checkpoint(meta, ckpt.model, ckpt.train))
        plan_training(tiny_recipe(), on_cpu(tiny_dataset, run, resume=True))
