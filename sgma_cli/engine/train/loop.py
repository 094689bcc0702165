"""The training loop of one rank: data, model, AdamW + warm-up/poly, validation, checkpoints.

Called by :mod:`sgma_cli.engine.train.job` once the job is validated. Per optimizer step:
``train.accumulate`` micro-batches (DDP gradient sync only on the last), the SGF + MAS
loss of :mod:`sgma_cli.engine.train.step` under bf16 autocast on CUDA (fp32 on CPU unless
``train.precision = "bf16"``), optional gradient clipping, then the learning rate of the
step. Every ``train.checkpoint_every`` steps and at each epoch end rank 0 writes
``checkpoints/last.pt`` with everything needed to continue bit for bit: weights,
optimizer, step, epoch and position in the epoch, and the RNG states of every rank.
Validation (every ``train.val_every`` epochs) scores all modality subsets on the ``val``
split, sharded over ranks and all-reduced; the best Average mIoU goes to ``best.pt``. Each
checkpoint's ``meta.metrics`` are the scores of its own weights: ``last.pt`` carries the
last validation's (``val_average``, ``val_top1``, ``val_last1``, ``miou_<subset>``),
``best.pt`` the best one's. A write error (disk full, I/O error, read-only folder) stops
the run with one :class:`~sgma_cli.errors.OutputError` line; every file is replaced
atomically, so ``--resume`` continues from the last complete ``last.pt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from sgma_cli.config.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    ModalityNorm,
    load_checkpoint,
    save_checkpoint,
)
from sgma_cli.config.dataset import load_manifest
from sgma_cli.data.atomic import remove_stale_temps, write_errors
from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.data.transforms import AugmentConfig, JointAugment
from sgma_cli.engine.device import autocast
from sgma_cli.engine.distributed import (
    DistContext,
    all_reduce_sum,
    gather_objects,
    init_process,
    shutdown,
    sync_batchnorm,
)
from sgma_cli.engine.evaluate.scoring import evaluate_subsets
from sgma_cli.engine.speed import speed_up
from sgma_cli.engine.subsets import subset_label
from sgma_cli.engine.train.plan import TrainPlan, load_pretrained, write_recipe
from sgma_cli.engine.train.randomness import (
    ResumableSampler,
    SeededSamples,
    ShardSampler,
    capture_rng,
    restore_rng,
)
from sgma_cli.engine.train.run_log import RunLog, write_plots
from sgma_cli.engine.train.schedule import WarmupPoly
from sgma_cli.engine.train.step import TrainForward, joint_loss
from sgma_cli.engine.weights import build_model
from sgma_cli.errors import ConfigError

__all__ = ["TrainEvent", "TrainResult", "ProgressCallback", "run_loop"]

NUM_SCALES = 4


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports to its progress callback (rank 0 only).

    ``kind``: ``start`` (totals known), ``step`` (after each optimizer step: ``values``
    holds loss, loss_sgf, loss_mas, lr, samples_per_s), ``val_progress`` (during a
    validation, ``values``: done, total batches), ``val`` (a validation's scores, as the
    ``val`` rows of metrics.csv; ``values``: average, top1, last1 and ``miou_<subset>``),
    ``checkpoint`` (``message``: path), ``info`` (``message``), ``end``.
    """

    kind: Literal["start", "step", "val_progress", "val", "checkpoint", "info", "note", "end"]
    epoch: int
    step: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    values: Mapping[str, float] = field(default_factory=dict)
    message: str = ""


ProgressCallback = Callable[[TrainEvent], None]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced (meaningful on rank 0).

    Attributes:
        run_dir: the run folder.
        step: optimizer steps done.
        epoch: epochs reached (1-based; partial epochs count).
        total_steps: steps planned.
        best: ``{"average", "top1", "last1", "epoch", "step"}`` of the best validation, or empty.
        last_val: mIoU per subset label at the last validation.
        best_checkpoint: ``best.pt`` (``None`` without validation).
        last_checkpoint: ``last.pt``.
        plots: PNG files written.
        seconds: wall time of this invocation.
        resumed_from: the step resumed from, or ``None``.
        world_size: processes.
        device: ``cpu`` or ``cuda``.
        final_loss: mean loss over the last logging window.
    """

    run_dir: Path
    step: int
    epoch: int
    total_steps: int
    best: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None
    world_size: int = 1
    device: str = "cpu"
    final_loss: float = math.nan


def run_loop(
    plan: TrainPlan, rank: int, world_size: int, local_rank: int, progress: ProgressCallback | None
) -> TrainResult:
    """Run one rank of ``plan`` to the end; see the module docstring."""
    ctx = init_process(rank, world_size, local_rank, plan.device_type)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if plan.recipe.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        with warnings.catch_warnings():
            # DDP's hint about depthwise-conv gradient strides: harmless, not actionable
            warnings.filterwarnings(
                "ignore", message="Grad strides do not match bucket view strides"
            )
            return _Loop(plan, ctx, progress).run()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        shutdown(ctx)


class _Loop:
    """State of one rank's run; split in methods only for readability."""

    def __init__(
        self, plan: TrainPlan, ctx: DistContext, progress: ProgressCallback | None
    ) -> None:
        self.plan, self.ctx, self.progress = plan, ctx, progress
        r = self.recipe = plan.recipe
        self.started = time.perf_counter()
        self.manifest = manifest = load_manifest(plan.data_dir)
        self.seed = r.train.seed
        random.seed(self.seed + ctx.rank)
        np.random.seed(self.seed + ctx.rank)
        # data
        entries = [manifest.modality(n) for n in plan.modalities]
        band_range = {
            e.name: (e.stats.p2, e.stats.p98) for e in entries if e.optical and e.stats is not None
        }
        d = r.data
        config = AugmentConfig(
            crop_size=d.crop_size,
            scale=d.scale,
            hflip=d.hflip,
            vflip=d.vflip,
            rotate90=d.rotate90,
            photometric=d.photometric,
        )
        augment = JointAugment(
            [(e.name, e.bands, e.optical) for e in entries],
            config,
            band_range=band_range,
            seed=self.seed,
        )
        base = TileDataset(
            plan.data_dir, "train", modalities=plan.modalities, transform=augment, manifest=manifest
        )
        samples = SeededSamples(
            base, self.seed, len(plan.modalities), NUM_SCALES, r.train.modality_dropout
        )
        self.sampler = ResumableSampler(
            len(samples), r.data.batch_size, self.seed, ctx.rank, ctx.world_size
        )
        cuda = ctx.device.type == "cuda"
        workers = r.data.num_workers
        self.loader = DataLoader(
            samples,
            batch_size=r.data.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )
        val = TileDataset(plan.data_dir, "val", modalities=plan.modalities, manifest=manifest)
        self.val_loader = None
        if len(val) and r.train.val_every:
            self.val_loader = DataLoader(
                val,
                batch_size=r.data.val_batch_size,
                sampler=ShardSampler(len(val), ctx.rank, ctx.world_size),
                num_workers=min(workers, 2),
                pin_memory=cuda,
            )
        # model
        self.config = plan.model
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        weights = Path(r.model.pretrained).expanduser() if r.model.pretrained else None
        state = load_pretrained(weights, r.model.backbone) if weights is not None else None
        try:
            model = build_model(self.config, backbone_weights=state)
        except ValueError as err:  # the plan built this config already: only weights can fail
            raise ConfigError(f"model.pretrained: {err}", weights) from None
        torch.manual_seed(self.seed + 1_000_003 * ctx.rank)  # dropout streams differ per rank
        self.model = sync_batchnorm(model.to(ctx.device), ctx)
        self.compiled = speed_up(self.model, ctx.device, r.train.compile, training=True)
        forward: torch.nn.Module = TrainForward(self.model, mas=r.train.mas)
        if ctx.distributed:
            forward = DistributedDataParallel(
                forward,
                device_ids=[ctx.local_rank] if cuda else None,
                find_unused_parameters=r.train.modality_dropout > 0,
            )
        self.forward = forward
        o = r.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
        # schedule
        self.steps_per_epoch = self.sampler.batches_per_epoch // r.train.accumulate
        full = r.schedule.epochs * self.steps_per_epoch
        self.total_steps = min(full, r.schedule.max_steps) if r.schedule.max_steps else full
        self.schedule = WarmupPoly(
            base_lr=o.lr,
            total_steps=full,
            warmup_steps=round(r.schedule.warmup_epochs * self.steps_per_epoch),
            warmup_ratio=r.schedule.warmup_ratio,
            power=r.schedule.power,
            min_lr=r.schedule.min_lr,
        )
        self.step = 0
        self.best: dict[str, float] = {}  # summary, epoch and step of the best validation
        self.best_val: dict[str, float] = {}  # mIoU per subset label at the best validation
        self.last_summary: dict[str, float] = {}  # average, top1, last1 of the last one
        self.last_val: dict[str, float] = {}
        self.resumed_from: int | None = None
        if plan.resume:
            self._restore()
        self.log: RunLog | None = None
        if ctx.is_main:
            for path in (plan.last_checkpoint, plan.best_checkpoint):
                remove_stale_temps(path)  # left by a killed run
            with self._writing(plan.run_dir / "recipe.toml"):
                write_recipe(plan)
            with self._writing(plan.run_dir / "metrics.csv"):
                self.log = RunLog(
                    plan.run_dir, plan.modalities, plan.subsets, NUM_SCALES, self.resumed_from
                )
        self.window: dict[str, float] = {}
        self.final_loss = math.nan

    # ------------------------------------------------------------------ events
    def _emit(
        self, kind: Any, values: Mapping[str, float] | None = None, message: str = ""
    ) -> None:
        if self.progress is None:
            return
        spe = max(self.steps_per_epoch, 1)
        epoch = self.step // spe + 1 if kind == "start" else max(self._epoch_reached(), 1)
        epoch = min(epoch, self.recipe.schedule.epochs)
        self.progress(
            TrainEvent(
                kind,
                epoch,
                self.step,
                self.total_steps,
                self.recipe.schedule.epochs,
                self.steps_per_epoch,
                dict(values or {}),
                message,
            )
        )

    # ------------------------------------------------------------- checkpoints
    def _writing(self, path: Path, *, torch_save: bool = False) -> Any:
        """Write errors on ``path`` -> one :class:`OutputError` line saying how to go on."""
        again = (
            "continue with sgma train --resume"
            if self.plan.last_checkpoint.exists()
            else "run the command again"
        )
        return write_errors(path, kinds=(RuntimeError,) if torch_save else (), again=again)

    def _save(self, path: Path, checkpoint: Checkpoint) -> Path:
        """``save_checkpoint`` (atomic); ``torch.save`` reports a full disk as RuntimeError."""
        with self._writing(path, torch_save=True):
            return save_checkpoint(path, checkpoint)

    def _meta(self, which: Literal["last", "best"] = "last") -> CheckpointMeta:
        """The checkpoint metadata; ``metrics`` are the last validation's scores for
        ``last.pt`` and the best validation's for ``best.pt`` (each file its own weights')."""
        m = self.manifest
        norms = []
        for name in self.plan.modalities:
            e = m.modality(name)
            mean, std = (
                (e.stats.mean, e.stats.std)
                if e.stats is not None
                else ([0.0] * e.bands, [1.0] * e.bands)
            )
            norms.append(
                ModalityNorm(name=name, bands=e.bands, mean=mean, std=std, optical=e.optical)
            )
        summary, per_subset = (
            (self.best, self.best_val) if which == "best" else (self.last_summary, self.last_val)
        )
        metrics = {f"val_{k}": v for k, v in summary.items() if k in ("average", "top1", "last1")}
        metrics.update({f"miou_{k}": v for k, v in per_subset.items()})
        return CheckpointMeta(
            model=self.config.to_dict(),
            classes=m.classes,
            ignore_index=m.ignore_index,
            modalities=norms,
            crs=m.crs,
            resolution=m.resolution,
            tile_size=m.tile_size,
            recipe=self.recipe.model_dump(mode="json"),
            epoch=self._epoch_reached(),
            step=self.step,
            metrics=metrics,
        )

    def _epoch_reached(self) -> int:
        return -(-self.step // max(self.steps_per_epoch, 1))

    def _save_last(self) -> None:
        rngs = gather_objects(capture_rng(), self.ctx)  # a collective: every rank calls it
        if not self.ctx.is_main:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {**self.schedule.state_dict(), "step": self.step},
            "step": self.step,
            "epoch": self.step // max(self.steps_per_epoch, 1),
            "batch_in_epoch": (self.step % max(self.steps_per_epoch, 1))
            * self.recipe.train.accumulate,
            "world_size": self.ctx.world_size,
            "seed": self.seed,
            "rng": rngs,
            "best": dict(self.best),
            "best_val": dict(self.best_val),
            "last_summary": dict(self.last_summary),
            "last_val": dict(self.last_val),
        }
        path = self._save(
            self.plan.last_checkpoint,
            Checkpoint(self._meta("last"), self.model.state_dict(), state),
        )
        self._emit("checkpoint", message=str(path))

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.plan.last_checkpoint, with_train_state=True)
        state = ckpt.train or {}
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = self.resumed_from = int(state["step"])
        self.best = {k: float(v) for k, v in state.get("best", {}).items()}
        self.last_val = {k: float(v) for k, v in state.get("last_val", {}).items()}
        # absent from checkpoints written before last.pt and best.pt kept their own scores
        self.best_val = {k: float(v) for k, v in state.get("best_val", {}).items()}
        self.last_summary = {k: float(v) for k, v in state.get("last_summary", {}).items()}
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            restore_rng(rngs[self.ctx.rank])
        before = state.get("world_size")
        self._resume_note = (
            ""
            if before == self.ctx.world_size
            else (
                f"resumed with {self.ctx.world_size} process(es) instead of {before}: "
                "the data order changes, the run is no longer bit-for-bit reproducible"
            )
        )

    # -------------------------------------------------------------- one step
    def _reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor, self.ctx)

    def _micro_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        dev, r = self.ctx.device, self.recipe
        images = {n: x.to(dev, non_blocking=True) for n, x in batch["image"].items()}
        mask = batch["mask"].to(dev, non_blocking=True)
        label = batch["label"].to(dev, non_blocking=True)
        present = batch["present"].to(dev, non_blocking=True)
        batch_u = None
        if self.config.mas_granularity == "batch":
            batch_u = torch.from_numpy(
                np.random.default_rng([self.seed, self.step, 99]).random(NUM_SCALES)
            )
        with autocast(dev, r.train.precision):
            out = self.forward(images, mask, present, batch["mas_u"], batch_u, self._reduce)
        loss, values = joint_loss(
            out,
            label,
            self.manifest.ignore_index,
            r.train.lambda_sgf,
            r.train.lambda_mas,
            self._reduce,
            self.ctx.world_size,
        )
        (loss / r.train.accumulate).backward()
        if out.mas_probs is not None:
            S, B, M = out.mas_probs.shape
            sums = self._reduce(
                torch.cat(
                    [
                        out.mas_probs.detach().float().sum(dim=1).flatten(),
                        torch.tensor([float(B)], device=dev),
                    ]
                )
            )
            means = (sums[:-1] / sums[-1]).reshape(S, M).tolist()
            for i in range(S):
                for j, name in enumerate(self.plan.modalities):
                    values[f"mas_s{i + 1}_{name}"] = means[i][j]
        return values

    def _optimizer_step(self) -> float:
        lr = self.schedule.apply(self.optimizer, self.step)
        if self.recipe.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return lr

    # ------------------------------------------------------------ validation
    def _validate(self) -> None:
        if self.val_loader is None:
            return

        def report(done: int, total: int) -> None:
            self._emit("val_progress", {"done": float(done), "total": float(total)})

        result = evaluate_subsets(
            self.model,
            self.val_loader,
            list(self.plan.subsets),
            device=self.ctx.device,
            ignore_index=self.manifest.ignore_index,
            precision=self.recipe.train.precision,
            progress=report,
        ).all_reduce()
        self.last_val = {
            subset_label(s): float(m.miou) for s, m in zip(result.subsets, result.metrics)
        }
        summary = {
            "average": result.summary.average,
            "top1": result.summary.top1,
            "last1": result.summary.last1,
        }
        epoch = self._epoch_reached()
        previous = self.best.get("average", -math.inf)
        # a NaN average never wins, and a NaN best (no class scored yet) is beaten by any number
        improved = summary["average"] == summary["average"] and (
            summary["average"] > previous or previous != previous
        )
        self.last_summary = dict(summary)
        if improved:
            self.best = {**summary, "epoch": float(epoch), "step": float(self.step)}
            self.best_val = dict(self.last_val)
        if self.ctx.is_main and self.log is not None:
            with self._writing(self.plan.run_dir / "metrics.csv"):
                self.log.log_val(epoch, self.step, summary, self.last_val)
            if improved:
                self._save(
                    self.plan.best_checkpoint,
                    Checkpoint(self._meta("best"), self.model.state_dict()),
                )
        self._emit("val", {**summary, **{f"miou_{k}": v for k, v in self.last_val.items()}})

    # ------------------------------------------------------------------ loop
    def _log_window(self, values: Mapping[str, float], samples_per_s: float) -> None:
        for k, v in values.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.window["_n"] = self.window.get("_n", 0.0) + 1
        self.window["_rate"] = samples_per_s
        r = self.recipe.train
        if self.step % r.log_every and self.step != self.total_steps:
            return
        n = self.window.pop("_n")
        rate = self.window.pop("_rate")
        mean = {k: v / n for k, v in self.window.items()}
        self.final_loss = mean.get("loss", math.nan)
        if self.log is not None:
            row = {k: mean[k] for k in ("loss", "loss_sgf", "loss_mas") if k in mean}
            row.update(lr=self.schedule.lr(self.step - 1), samples_per_s=rate)
            with self._writing(self.plan.run_dir / "metrics.csv"):
                self.log.log_train(
                    self._epoch_reached(),
                    self.step,
                    row,
                    {k: v for k, v in mean.items() if k.startswith("mas_")},
                )
        self.window = {}

    def run(self) -> TrainResult:
        r, spe = self.recipe, self.steps_per_epoch
        per_step = r.data.batch_size * self.ctx.world_size * r.train.accumulate
        self._emit("start", {"samples_per_step": float(per_step)})
        if getattr(self, "_resume_note", ""):
            self._emit("info", message=self._resume_note)
        epoch, skip = self.step // spe, (self.step % spe) * r.train.accumulate
        self.forward.train()
        while self.step < self.total_steps:
            self.sampler.set_epoch(epoch, skip)
            left, micro, tick = spe * r.train.accumulate - skip, 0, time.perf_counter()
            totals: dict[str, float] = {}
            for batch in self.loader:
                if left == 0:
                    break
                left -= 1
                micro += 1
                last = micro == r.train.accumulate
                no_sync = (
                    self.forward.no_sync()
                    if isinstance(self.forward, DistributedDataParallel) and not last
                    else contextlib.nullcontext()
                )
                with no_sync:
                    micro_values = self._micro_step(batch)
                totals = (
                    micro_values
                    if micro == 1
                    else {k: totals[k] + v for k, v in micro_values.items()}
                )
                if not last:
                    continue
                micro = 0
                values = {
                    k: v / r.train.accumulate for k, v in totals.items()
                }  # mean over the micro-batches
                values["lr"] = self._optimizer_step()
                now = time.perf_counter()
                rate = per_step / max(now - tick, 1e-9)
                tick = now
                self._log_window(values, rate)
                self._emit("step", {**values, "samples_per_s": rate})
                if self.compiled is not None and self.compiled.first_batch_s is None:
                    self.compiled.first_batch_done()
                    self._emit("note", message=self.compiled.describe())
                if (
                    self.step % r.train.checkpoint_every == 0
                    and self.step % spe
                    and self.step < self.total_steps
                ):
                    self._save_last()
                if self.step >= self.total_steps:
                    break
            epoch_number = self._epoch_reached()
            due = r.train.val_every and (
                epoch_number % r.train.val_every == 0 or self.step >= self.total_steps
            )
            if due:
                self._validate()
            self._save_last()
            epoch, skip = epoch + 1, 0
        return self._finish()

    def _best_is_last(self) -> bool:
        """No validation scored (no val split, ``val_every = 0``, no class scored): best.pt := last.

        ``sgma evaluate RUN/checkpoints/best.pt`` is the documented next step, so the run
        still leaves that file, with a warning saying it holds the last weights.
        """
        if self.best:
            return False
        if self.ctx.is_main:
            why = (
                "train.val_every = 0"
                if not self.recipe.train.val_every
                else "the dataset has no val tiles"
                if self.val_loader is None
                else "no validation scored a class"
            )
            self._save(
                self.plan.best_checkpoint, Checkpoint(self._meta("last"), self.model.state_dict())
            )
            self._emit(
                "info",
                message=f"no validation ({why}): {self.plan.best_checkpoint.name} holds the last "
                f"weights (step {self.step}), not the best validated ones",
            )
        return True

    def _finish(self) -> TrainResult:
        plots: list[Path] = []
        best_is_last = self._best_is_last()
        if self.ctx.is_main and self.log is not None:
            with self._writing(self.plan.run_dir / "tb"):
                self.log.close()
            with self._writing(self.plan.run_dir):  # the PNG plots
                plots = write_plots(self.plan.run_dir)
            summary = {
                "step": self.step,
                "epoch": self._epoch_reached(),
                "total_steps": self.total_steps,
                "best": self.best,
                "best_is_last": best_is_last,
                "last_val": self.last_val,
                "final_loss": self.final_loss,
                "world_size": self.ctx.world_size,
                "device": self.ctx.device.type,
            }
            tmp = self.plan.run_dir / ".summary.json.tmp"
            try:  # summary.json is written last: it marks a finished run
                with self._writing(self.plan.run_dir / "summary.json"):
                    tmp.write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
                    os.replace(tmp, self.plan.run_dir / "summary.json")
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        result = TrainResult(
            run_dir=self.plan.run_dir,
            step=self.step,
            epoch=self._epoch_reached(),
            total_steps=self.total_steps,
            best=dict(self.best),
            last_val=dict(self.last_val),
            best_checkpoint=self.plan.best_checkpoint
            if self.plan.best_checkpoint.exists()
            else None,
            last_checkpoint=self.plan.last_checkpoint,
            plots=plots,
            seconds=time.perf_counter() - self.started,
            resumed_from=self.resumed_from,
            world_size=self.ctx.world_size,
            device=self.ctx.device.type,
            final_loss=self.final_loss,
        )
        self._emit("end")
        return result


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
