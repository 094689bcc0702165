"""Turn a folder of sensor rasters (+ labels) into aligned tiles for train, evaluate, predict.

Finds scenes and modalities (a `sgma sample` folder, <modality>.tif scene folders,
--preset potsdam|dfc2023|deliver, or --modality NAME=PATH_OR_GLOB), checks that DATA_DIR
can be written, prints the plan, warps every modality onto the reference grid window by
window, records per-modality availability masks (nodata, NaN, outside the swath),
rasterises labels, cuts tiles, splits them without overlap between splits and computes
training statistics. Writes DATA_DIR/tiles/, DATA_DIR/index.gpkg and
DATA_DIR/dataset.toml; a rerun resumes.

Examples:
  sgma prepare demo/scene --out demo/data
  sgma prepare ~/data/potsdam --preset potsdam --out data/potsdam --dry-run
  sgma prepare heldout/ --out data/heldout --split 0,0,1
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from sgma_cli.cli.console import console, warn
from sgma_cli.cli.options import Asset, LabelField, Seed, Stac
from sgma_cli.cli.progress import Rate, progress_bar
from sgma_cli.engine.prepare import PrepareOptions, PrepareReport, prepare

__all__ = ["command"]

MAX_ROWS = 30


class Preset(str, Enum):
    """Published dataset layouts."""

    potsdam = "potsdam"
    dfc2023 = "dfc2023"
    deliver = "deliver"


def _fmt(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _plan_table(report: PrepareReport) -> Table:
    scenes = {r.scene for r in report.rows}
    with_split = any(r.split for r in report.rows)
    title = (
        f"plan: {report.layout} layout, {len(scenes)} scene(s), reference {report.reference}, "
        f"{report.tiles_total} tiles of {report.tile} px (stride {report.stride}), "
        f"split {report.split_method}"
    )
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, title_justify="left"
    )
    columns = ["scene"] if len(scenes) > 1 else []
    columns += ["role", "file", "CRS", "pixels @ res", "extent ll/ur", "bands", "nodata"]
    columns += ["split"] if with_split else []
    for col in columns:
        table.add_column(
            col,
            overflow="fold",
            no_wrap=col not in {"file", "scene"},
            min_width=8 if col == "file" else None,
        )
    for row in report.rows[:MAX_ROWS]:
        res = (
            _fmt(row.resolution[0])
            if row.resolution[0] == row.resolution[1]
            else "x".join(map(_fmt, row.resolution))
        )
        vector = row.dtype == "vector"  # vector labels: features, no pixels
        cells = [row.scene] if len(scenes) > 1 else []
        cells += [
            row.role,
            row.path.name,
            row.crs,
            f"{row.size[0]} features" if vector else f"{row.size[0]}x{row.size[1]} @{res}",
            f"{row.bounds[0]:.0f} {row.bounds[1]:.0f}\n{row.bounds[2]:.0f} {row.bounds[3]:.0f}",
            "vector" if vector else f"{row.bands} {row.dtype}",
            "-" if row.nodata is None else _fmt(row.nodata),
        ]
        cells += [row.split or "-"] if with_split else []
        table.add_row(*cells)
    if len(report.rows) > MAX_ROWS:
        table.caption = f"... and {len(report.rows) - MAX_ROWS} more rasters"
    return table


def command(
    src_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder with the sensor rasters and labels.", metavar="SRC_DIR", file_okay=False
        ),
    ],
    *,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Dataset folder to write (DATA_DIR).", file_okay=False),
    ],
    preset: Annotated[
        Preset | None, typer.Option("--preset", help="Read a published layout.")
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            "--modality",
            "-m",
            help="NAME=PATH_OR_GLOB (a glob: one file per scene), or NAME=FOLDER|LIST|URL (tiles "
            "read as one raster); repeatable; defines the modalities.",
        ),
    ] = None,
    stac: Stac = None,
    asset: Asset = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Label raster or vector (path or glob).")
    ] = None,
    label_field: LabelField = "class",
    palette: Annotated[
        str | None,
        typer.Option(
            "--palette",
            help="potsdam|dfc2023|deliver, or a JSON file of class names and r,g,b colours "
            "(docs/prepare.md).",
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore", help="Label value/colour (#rrggbb) to map to ignore (255); repeatable."
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", help="Modality whose grid all others are warped onto (default: rgb)."
        ),
    ] = None,
    resolution: Annotated[
        float | None, typer.Option("--resolution", help="Target pixel size in CRS units.")
    ] = None,
    crs: Annotated[str | None, typer.Option("--crs", help="Target CRS, e.g. EPSG:32633.")] = None,
    resampling: Annotated[
        str, typer.Option("--resampling", help="Resampling of continuous bands (labels: nearest).")
    ] = "bilinear",
    tile: Annotated[
        int | None,
        typer.Option(
            "--tile",
            help="Tile side in pixels (default: the preset's or sample.json's, else 512).",
            min=8,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            help="Tile step in pixels (default: the preset's or sample.json's, else tile/2).",
            min=1,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="train,val,test fractions, any of them 0 (0,0,1: evaluation only; default: "
            "the official split, else 0.8,0.1,0.1).",
        ),
    ] = None,
    seed: Seed = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Delete an earlier result in DATA_DIR and start over."),
    ] = False,
) -> None:
    """Prepare a dataset from a folder of sensor rasters."""
    options = PrepareOptions(
        src=src_dir,
        out=out,
        preset=preset.value if preset else None,
        modality=tuple(modality or ()),
        stac=stac,
        asset=tuple(asset or ()),
        labels=labels,
        label_field=label_field,
        palette=palette,
        ignore=tuple(ignore or ()),
        reference=reference,
        resolution=resolution,
        crs=crs,
        resampling=resampling,
        tile=tile,
        stride=stride,
        split=split,
        seed=seed,
        dry_run=dry_run,
        overwrite=overwrite,
    )
    bar = progress_bar(Rate("tiles", digits=1), transient=False)
    task = bar.add_task("tiles", total=None)

    def on_plan(report: PrepareReport) -> None:
        console.print(_plan_table(report))
        for note in report.notes:
            console.print(f"  {note}")
        if not dry_run:
            bar.update(task, total=report.tiles_total)
            bar.start()

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    try:
        report = prepare(options, progress=progress, on_plan=on_plan, warn=warn)
    finally:
        bar.stop()
    if dry_run:
        console.print("dry run: nothing written")
        return
    mpix_s = report.megapixels / report.seconds if report.seconds else 0.0
    splits = ", ".join(
        f"{k} {report.splits[k]}" for k in ("train", "val", "test") if k in report.splits
    )
    console.print(
        f"wrote {report.out}: {report.tiles_written} new tiles, {report.tiles_resumed} kept "
        f"from an earlier run, {report.tiles_empty} empty skipped ({splits}); "
        f"{report.seconds:.1f} s, {mpix_s:.3g} MPix/s",
        soft_wrap=True,
    )
