"""``sgma predict --out DIR``: the region mode's plan lines, chunk progress bar and summary.

The options live in :mod:`sgma_cli.cli.predict`; this module renders what
:func:`sgma_cli.engine.predict.region.run_region` reports: the plan before any chunk runs
(region size, chunks, chunks already done), a bar over the chunks of this run (MPix/s,
ETA, failures) and the summary table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Task
from rich.table import Table
from rich.text import Text

from sgma_cli.cli.console import console, err_console
from sgma_cli.cli.progress import Rate, progress_bar

if TYPE_CHECKING:
    from rasterio.crs import CRS

    from sgma_cli.engine.predict.executors import ChunkExecutor
    from sgma_cli.engine.predict.region import (
        RegionJob,
        RegionPlan,
        RegionProgress,
        RegionResult,
    )

__all__ = ["run_region_command", "print_predicted", "megapixels_per_second", "crs_text"]


def crs_text(crs: CRS | None) -> str:
    """A grid's CRS as a plan line shows it: ``EPSG:32633``, else its WKT/PROJ text."""
    if crs is None:
        return "no CRS"
    return f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_string()


def _describe_plan(plan: RegionPlan) -> None:
    g = plan.grid
    mpix = g.width * g.height / 1e6
    err_console.print(
        f"region: {g.width} x {g.height} px ({mpix:.1f} MPix) at {g.resolution[0]:g} "
        f"({crs_text(plan.grid.crs)}), sensors: {', '.join(plan.scene.names)} "
        f"(grid of {plan.scene.reference})"
    )
    todo = plan.chunks_total - plan.chunks_done
    err_console.print(
        f"chunks: {plan.chunks_total} of {plan.chunk} px, {plan.chunks_done} already done, "
        f"{todo} to compute -> {plan.out}",
        soft_wrap=True,
    )
    for note in plan.notes[1:]:
        err_console.print(f"  {note}", style="dim")


def megapixels_per_second(task: Task) -> float | None:
    """Megapixels per second of a bar: the task's ``mpix`` field over the elapsed time."""
    elapsed = task.finished_time if task.finished else task.elapsed
    mpix = task.fields.get("mpix", 0.0)
    return mpix / elapsed if elapsed and mpix else None


@contextmanager
def _chunk_bar() -> Iterator[Callable[[RegionProgress], None]]:
    bar = progress_bar(Rate("MPix", per_second=megapixels_per_second), "{task.fields[failures]}")
    with bar:
        task = bar.add_task("chunks", total=None, mpix=0.0, failures="")

        def update(p: RegionProgress) -> None:
            bar.update(
                task,
                completed=p.chunks_done + p.chunks_failed + p.running,
                total=p.chunks_total,
                mpix=p.megapixels_done,
                failures=(f"[red]failed {p.chunks_failed}[/]" if p.chunks_failed else "")
                + (f" retried {p.chunks_retried}" if p.chunks_retried else ""),
            )

        yield update


def print_predicted(
    class_pixels: Mapping[str, int],
    nodata_pixels: int,
    outputs: Mapping[str, Path],
    polygons: int | None,
    *,
    nodata_label: str = "nodata",
    width: int = 13,
) -> int:
    """The class table and the output files of a predict run (one map or a region); returns
    the pixel count of the map."""
    total = sum(class_pixels.values()) + nodata_pixels
    table = Table(title="Predicted classes", title_justify="left")
    table.add_column("class")
    table.add_column("pixels", justify="right")
    table.add_column("share", justify="right")
    for name, count in class_pixels.items():
        table.add_row(name, f"{count:,}", f"{100 * count / max(total, 1):.1f} %")
    if nodata_pixels:
        table.add_row(
            Text(nodata_label, style="dim"),
            f"{nodata_pixels:,}",
            f"{100 * nodata_pixels / max(total, 1):.1f} %",
        )
    console.print(table)
    for kind, path in outputs.items():
        extra = f" ({polygons} polygons)" if kind == "vectors" and polygons is not None else ""
        console.print(f"{kind:>{width}}: {path}{extra}", soft_wrap=True)
    return total


def _render(result: RegionResult) -> None:
    total = print_predicted(
        result.class_pixels, result.nodata_pixels, result.outputs, result.polygons, width=22
    )
    computed_mpix = total / 1e6 if not result.chunks_skipped else None
    rate = (
        f" ({computed_mpix / max(result.seconds, 1e-9):.3g} MPix/s)"
        if computed_mpix is not None
        else ""
    )
    console.print(
        f"{result.chunks_total} chunks: {result.chunks_computed} computed, "
        f"{result.chunks_skipped} done before; {total / 1e6:.2f} MPix in "
        f"{result.seconds:.1f} s{rate}"
    )


def run_region_command(job: RegionJob, executor: ChunkExecutor | None = None) -> None:
    """Run a region job with the plan, the chunk bar and the summary on the console."""
    from sgma_cli.engine.predict.region import run_region

    with _chunk_bar() as update:
        result = run_region(job, executor=executor, progress=update, on_plan=_describe_plan)
    _render(result)
