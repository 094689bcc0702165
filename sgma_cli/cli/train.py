"""Train SGMA (Semantic-Guided Fusion + Modality-Aware Sampling) on a dataset from `sgma prepare`.

Reads a recipe (recipes/*.toml), checks it against the dataset, and trains on the CPU, one
GPU or N GPUs (data-parallel). The run folder gets the resolved recipe, metrics.csv,
TensorBoard events, checkpoints/best.pt + last.pt, PNG plots and summary.json.

Examples:
  sgma train recipes/sample.toml --data demo/data --out demo/run
  sgma train recipes/potsdam.toml --set optim.lr=1e-4 --print
  sgma train recipes/potsdam.toml --gpus 4 --out runs/potsdam
  sgma train recipes/potsdam.toml --out runs/potsdam --resume
  torchrun --nproc-per-node 4 -m sgma_cli train recipes/potsdam.toml
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from sgma_cli.cli.console import console, warn
from sgma_cli.cli.options import Compile, DataDir, Device, Gpus, Nproc
from sgma_cli.cli.progress import Rate, progress_bar
from sgma_cli.config.recipe import load_recipe, recipe_to_toml
from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.engine.train import TrainEvent, TrainResult

__all__ = ["command"]


def _pct(value: float) -> str:
    return "–" if value != value else f"{100 * value:.2f}"


class _ProgressView:
    """Renders :class:`TrainEvent` s as a rich progress bar on stderr (rank 0 only)."""

    def __init__(self) -> None:
        self.progress = progress_bar(
            Rate("it", per_second=lambda task: task.fields.get("rate")),
            "loss [cyan]{task.fields[loss]}",
            "lr {task.fields[lr]}",
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
        epoch = f"epoch {event.epoch}/{event.epochs}"
        if event.kind == "start":
            self.per_step = max(event.values.get("samples_per_step", 1.0), 1.0)
            self.task = p.add_task(
                epoch, total=event.total_steps, completed=event.step, loss="–", lr="–", rate=None
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
                description=epoch,
                loss=f"{v.get('loss', math.nan):.4f}",
                lr=f"{v.get('lr', math.nan):.2e}",
                rate=rate,
            )
        elif event.kind == "val_progress":
            total = int(event.values.get("total", 0)) or None
            if self.val_task is None:
                self.val_task = p.add_task(
                    f"epoch {event.epoch} val", total=total, loss="–", lr="–", rate=None
                )
            p.update(self.val_task, completed=int(event.values.get("done", 0)))
        elif event.kind == "val":
            if self.val_task is not None:
                p.remove_task(self.val_task)
                self.val_task = None
            v = event.values
            p.console.print(
                f"epoch {event.epoch:>3} step {event.step:>6}  val mIoU  "
                f"Average [bold]{_pct(v['average'])}[/]  Top-1 {_pct(v['top1'])}  "
                f"Last-1 {_pct(v['last1'])}"
            )
        elif event.kind == "info":
            p.console.print(Text.assemble(("warning: ", "yellow"), event.message))
        elif event.kind == "note":
            p.console.print(event.message, style="dim", soft_wrap=True)


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
            f"Average {_pct(b['average'])}  Top-1 {_pct(b['top1'])}  "
            f"Last-1 {_pct(b['last1'])}  (epoch {int(b['epoch'])})",
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
        console.print(f"next: sgma evaluate {result.best_checkpoint}", style="dim", soft_wrap=True)


def command(
    recipe: Annotated[
        Path,
        typer.Argument(
            help="Recipe TOML (see recipes/).",
            metavar="RECIPE",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    *,
    data: DataDir = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Run folder (default: runs/<recipe name>).", file_okay=False
        ),
    ] = None,
    gpus: Gpus = 0,
    device: Device = "auto",
    nproc: Nproc = 1,
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
    compile_model: Compile = None,
) -> None:
    """Train SGMA on a prepared dataset."""
    from sgma_cli.engine.distributed import torchrun_env
    from sgma_cli.engine.train import TrainOptions, train

    if ":" in device:
        raise UsageError(
            f"--device {device}: train places its processes itself; use --device cuda "
            f"(GPU 0), --gpus N, or CUDA_VISIBLE_DEVICES={device.partition(':')[2]}"
        )
    resolved = load_recipe(recipe, list(overrides or []))
    if data is not None:
        resolved = resolved.model_copy(
            update={"data": resolved.data.model_copy(update={"dir": str(data)})}
        )
    if compile_model is not None:  # the recipe key train.compile, recorded with the run
        resolved = resolved.model_copy(
            update={"train": resolved.train.model_copy(update={"compile": compile_model})}
        )
    if print_recipe:
        console.print(recipe_to_toml(resolved), markup=False, highlight=False, end="")
        return
    env = torchrun_env()
    main = env is None or env[0] == 0
    if not main:
        options = TrainOptions(
            data_dir=data, run_dir=out, device=device, gpus=gpus, nproc=nproc, resume=resume
        )
        train(resolved, options)
        return
    if env is not None and (gpus or nproc > 1):
        warn("started by torchrun: --gpus/--nproc are ignored, the torchrun group is used")
    view = _ProgressView()
    with view as progress:
        options = TrainOptions(
            data_dir=data,
            run_dir=out,
            device=device,
            gpus=0 if env else gpus,
            nproc=1 if env else nproc,
            resume=resume,
        )
        result = train(resolved, options, progress=progress)
    _summary(result)
