"""Train SGMA (Semantic-Guided Fusion + Modality-Aware Sampling) on a dataset from `sgma prepare`.

Reads a recipe (recipes/*.toml), checks it against the dataset, and trains on the CPU, one
GPU or N GPUs (data-parallel). The run folder gets the resolved recipe, metrics.csv,
TensorBoard events, checkpoints/best.pt + last.pt, PNG plots and summary.json.

Examples:
  sgma train recipes/sample.toml --data demo/data --out demo/run
  sgma train recipes/potsdam.toml --set optim.lr=1e-4 --set data.batch_size=4 --print
  sgma train recipes/potsdam.toml --gpus 4 --out runs/potsdam
  sgma train recipes/potsdam.toml --out runs/potsdam --resume
  torchrun --nnodes 2 --nproc-per-node 4 ... -m sgma_cli train recipes/potsdam.toml
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from sgma_cli.cli.console import console, err_console, warn
from sgma_cli.config.recipe import load_recipe, recipe_to_toml

if TYPE_CHECKING:
    from sgma_cli.engine.train import TrainEvent, TrainResult

__all__ = ["command"]


class DeviceChoice(str, Enum):
    """Where to train."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _pct(value: float) -> str:
    return "–" if value != value else f"{100 * value:.2f}"


class _ProgressView:
    """Renders :class:`TrainEvent` s as a rich progress bar on stderr (rank 0 only)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.val_task: TaskID | None = None
        self.per_step = 1.0

    def __enter__(self) -> Callable[[TrainEvent], None]:
        self.progress.start()
        return self.on_event

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, event: TrainEvent) -> None:
        p = self.progress
        epoch = f"{event.epoch}/{event.epochs}"
        if event.kind == "start":
            self.per_step = max(event.values.get("samples_per_step", 1.0), 1.0)
            self.task = p.add_task(
                "train",
                total=event.total_steps,
                completed=event.step,
                epoch=epoch,
                loss="–",
                lr="–",
                rate="",
            )
            if event.step:
                p.console.print(
                    f"resuming at step {event.step} (epoch {event.epoch})", style="yellow"
                )
        elif event.kind == "step" and self.task is not None:
            v = event.values
            rate = v.get("samples_per_s", math.nan) / self.per_step
            p.update(
                self.task,
                completed=event.step,
                epoch=epoch,
                loss=f"{v.get('loss', math.nan):.4f}",
                lr=f"{v.get('lr', math.nan):.2e}",
                rate=f"{rate:.2f} it/s" if rate == rate else "",
            )
        elif event.kind == "validate":
            total = int(event.values.get("total", 0)) or None
            if self.val_task is None:
                self.val_task = p.add_task(
                    "val", total=total, epoch=f"{event.epoch} val", loss="–", lr="–", rate=""
                )
            p.update(self.val_task, completed=int(event.values.get("done", 0)))
        elif event.kind == "val":
            if self.val_task is not None:
                p.remove_task(self.val_task)
                self.val_task = None
            v = event.values
            p.console.print(
                f"epoch {event.epoch:>3} step {event.step:>6}  val mIoU  Average [bold]{_pct(v['average'])}[/]  "
                f"Top-1 {_pct(v['top1'])}  Last-1 {_pct(v['last1'])}"
            )
        elif event.kind == "info":
            p.console.print(Text.assemble(("warning: ", "yellow"), event.message))


def _summary(result: TrainResult) -> None:
    table = Table(
        title=f"sgma train: {result.run_dir}",
        show_header=False,
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    table.add_column(style="bold")
    table.add_column()
    minutes = result.seconds / 60
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from is not None else ""
    table.add_row("steps", f"{result.step} / {result.total_steps}, epoch {result.epoch}{resumed}")
    table.add_row("processes", f"{result.world_size} × {result.device}")
    table.add_row("time", f"{minutes:.1f} min")
    table.add_row("loss", f"{result.final_loss:.4f} (mean of the last logging window)")
    if result.best:
        b = result.best
        table.add_row(
            "best val mIoU",
            f"Average {_pct(b['average'])}  Top-1 {_pct(b['top1'])}  Last-1 {_pct(b['last1'])}  (epoch {int(b['epoch'])})",
        )
    console.print(table)
    if result.last_val:
        subsets = Table(box=None, pad_edge=False)
        subsets.add_column("modality subset (last validation)")
        subsets.add_column("mIoU %", justify="right")
        for label, value in sorted(
            result.last_val.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else math.inf
        ):
            subsets.add_row(label, _pct(value))
        console.print(subsets)
    files = Table(show_header=False, box=None, pad_edge=False)
    files.add_column(style="dim")
    files.add_column()
    if result.best_checkpoint is not None:
        files.add_row("best", str(result.best_checkpoint))
    if result.last_checkpoint is not None:
        files.add_row("last", str(result.last_checkpoint))
    files.add_row("metrics", str(result.run_dir / "metrics.csv"))
    for plot in result.plots:
        files.add_row("plot", str(plot))
    files.add_row("tensorboard", f"tensorboard --logdir {result.run_dir / 'tb'}")
    console.print(files)
    if result.best_checkpoint is not None:
        console.print(f"next: sgma evaluate {result.best_checkpoint}", style="dim")


def command(
    recipe: Annotated[
        Path,
        typer.Argument(
            help="Recipe TOML (see recipes/).", exists=True, dir_okay=False, readable=True
        ),
    ],
    *,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset folder (default: data.dir of the recipe)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<recipe name>).")
    ] = None,
    gpus: Annotated[
        int, typer.Option("--gpus", help="Data-parallel GPU processes (NCCL).", min=0)
    ] = 0,
    device: Annotated[
        DeviceChoice, typer.Option("--device", help="Device without --gpus.")
    ] = DeviceChoice.auto,
    nproc: Annotated[
        int,
        typer.Option("--nproc", help="Data-parallel processes on --device (gloo on cpu).", min=1),
    ] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from checkpoints/last.pt.")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe key, e.g. --set optim.lr=1e-4 (repeatable)."),
    ] = None,
    print_recipe: Annotated[
        bool, typer.Option("--print", help="Print the resolved recipe and exit.")
    ] = False,
) -> None:
    """Train SGMA on a prepared dataset."""
    from sgma_cli.engine.distributed import torchrun_env
    from sgma_cli.engine.train import train

    resolved = load_recipe(recipe, list(overrides or []))
    if data is not None:
        resolved = resolved.model_copy(
            update={"data": resolved.data.model_copy(update={"dir": str(data)})}
        )
    if print_recipe:
        console.print(recipe_to_toml(resolved), markup=False, highlight=False, end="")
        return
    env = torchrun_env()
    main = env is None or env[0] == 0
    if not main:
        train(
            resolved,
            data_dir=data,
            run_dir=out,
            device=device.value,
            gpus=gpus,
            nproc=nproc,
            resume=resume,
        )
        return
    if env is not None and (gpus or nproc > 1):
        warn("started by torchrun: --gpus/--nproc are ignored, the torchrun group is used")
    view = _ProgressView()
    with view as progress:
        result = train(
            resolved,
            data_dir=data,
            run_dir=out,
            device=device.value,
            gpus=0 if env else gpus,
            nproc=1 if env else nproc,
            resume=resume,
            progress=progress,
        )
    _summary(result)
