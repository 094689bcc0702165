"""Write a synthetic multi-sensor scene (RGB, DSM, SAR GeoTIFFs + labels) to try sgma offline.

The scene follows the ISPRS Potsdam classes (impervious surfaces, building, low
vegetation, tree, car, clutter). Sensors sit on different grids (RGB 0.5 m and DSM 1 m
in EPSG:32633, SAR in EPSG:3857), the DSM has holes, the SAR swath ends mid-scene and a
haze patch hides part of the orthophoto, so only fusing sensors segments everything.

sample.json tells sgma prepare the files, the classes and a tile size that suits the
scene (128 px for the default size), so no options are needed:
  sgma prepare OUT_DIR --out DATA_DIR
  sgma train recipes/sample.toml --data DATA_DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sgma_cli.cli.console import console
from sgma_cli.cli.options import Seed
from sgma_cli.engine.sample_scene import sample

__all__ = ["command"]


def command(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder to write the scene into.", metavar="OUT_DIR")
    ],
    *,
    size: Annotated[
        int,
        typer.Option("--size", help="RGB side in pixels (0.5 m each), even, 64-16384."),
    ] = 1024,
    seed: Seed = 0,
    vectors: Annotated[
        bool, typer.Option("--vectors/--no-vectors", help="Also write labels.gpkg polygons.")
    ] = True,
) -> None:
    """Write a synthetic multi-sensor scene."""
    # size and OUT_DIR are checked by the job, so a bad one is one line (exit 2), not a usage box
    result = sample(out_dir, size=size, seed=seed, vectors=vectors)
    table = Table(title=f"sample scene in {result.out_dir} ({result.seconds:.1f} s)")
    table.add_column("role")
    table.add_column("file")
    for role, path in result.files.items():
        table.add_row(role, path.name)
    console.print(table)
    console.print(
        f"next: sgma prepare {result.out_dir} --out DATA_DIR, "
        "then sgma train recipes/sample.toml --data DATA_DIR"
    )
