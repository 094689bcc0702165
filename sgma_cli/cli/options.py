"""Options that several commands share, each declared once, and option value parsers.

An option two commands take is one ``Annotated`` alias here: one flag, one type, one set
of bounds and one help text (the idea of rasterio's ``rio/options.py``). A command writes
``device: Device = "auto"``; the default stays in the signature, as Typer requires, and
``tests/cli/test_options.py`` checks that every command gives an alias the same default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.config.model import ModalitySpec
    from sgma_cli.data.stac import StacSources

__all__ = [
    "Asset",
    "AsJson",
    "BatchSize",
    "Compile",
    "DataDir",
    "Device",
    "Gpus",
    "KNOWN_BANDS",
    "LabelField",
    "Nproc",
    "Overlap",
    "Seed",
    "Stac",
    "Window",
    "parse_device",
    "parse_modalities",
    "stac_option",
]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (any case) -> lower case.

    Whether the device exists here is the engine's question (``engine/device.py``); this
    only refuses what can never be a device, while Typer parses the command line.
    """
    value = text.strip().lower()
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{text!r}: use auto, cpu, cuda or cuda:N")
    return value


Device = Annotated[
    str,
    typer.Option(
        "--device",
        parser=parse_device,
        metavar="<auto|cpu|cuda|cuda:N>",
        help="Where to run: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or "
        "cuda:N.",
    ),
]
Gpus = Annotated[
    int,
    typer.Option(
        "--gpus",
        min=0,
        help="Spread the work over N GPUs, one process each (0: one process on --device).",
    ),
]
Nproc = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Processes on --device that share the work (on the CPU; GPUs: --gpus).",
    ),
]
Compile = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        show_default=False,
        help="Compile the model with torch.compile (default: on CUDA; the first run compiles "
        "for minutes, later runs reuse the kernel cache).",
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Tiles or windows per forward pass.")
]
Window = Annotated[
    int | None,
    typer.Option(
        "--window",
        min=32,
        show_default=False,
        help="Sliding-window side in pixels, a multiple of 32 (default: the checkpoint's "
        "tile size).",
    ),
]
Overlap = Annotated[
    float,
    typer.Option(
        "--overlap", min=0.0, max=0.9, help="Fraction of a window shared with its neighbours."
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data",
        file_okay=False,
        show_default=False,
        help="Dataset folder from sgma prepare (default: the recipe's data.dir, or the "
        "checkpoint's dataset).",
    ),
]
LabelField = Annotated[str, typer.Option("--label-field", help="Class attribute of vector labels.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")
]
Seed = Annotated[
    int, typer.Option("--seed", help="Random seed: the same seed gives the same result.")
]
Stac = Annotated[
    str | None,
    typer.Option(
        "--stac",
        metavar="ITEMS",
        show_default=False,
        help="STAC ItemCollection, item, catalog or collection (file or URL); --asset maps its "
        "asset keys to sensors.",
    ),
]
Asset = Annotated[
    list[str] | None,
    typer.Option(
        "--asset",
        metavar="NAME=KEY",
        show_default=False,
        help="Sensor NAME from STAC asset KEY, e.g. rgb=visual (repeatable; with --stac).",
    ),
]


def stac_option(stac: str | None, asset: list[str] | None) -> StacSources | None:
    """Read ``--stac`` with its ``--asset`` pairs and print the items (the plan's part).

    Returns ``None`` without ``--stac``. Raises :class:`UsageError` for ``--asset`` without
    ``--stac`` (and the other way round); STAC errors come from
    :func:`sgma_cli.data.stac.read_stac`.
    """
    if stac is None:
        if asset:
            raise UsageError("--asset maps STAC asset keys: give --stac ITEMS too")
        return None
    from sgma_cli.cli.console import err_console
    from sgma_cli.data.stac import parse_asset_option, read_stac

    found = read_stac(stac, parse_asset_option(asset or []))
    err_console.print(f"stac: {len(found.items)} item(s) from {found.href}", soft_wrap=True)
    for item in found.items:
        err_console.print(f"  {item.describe()}", style="dim", soft_wrap=True)
    for name, source in found.sources.items():
        err_console.print(f"  {name}: {source.label}", style="dim", soft_wrap=True)
    return found


#: Band counts assumed for common sensor names when ``--modalities`` gives none.
KNOWN_BANDS = {
    "rgb": 3,
    "irrg": 3,
    "rgbir": 4,
    "dsm": 1,
    "ndsm": 1,
    "nir": 1,
    "sar": 2,
    "depth": 1,
    "event": 1,
    "lidar": 1,
}
_DEFAULT_NAMES = ("rgb", "dsm", "nir", "sar", "depth", "event", "lidar")


def parse_modalities(text: str) -> list[ModalitySpec]:
    """``"3"`` or ``"rgb,dsm,nir"`` or ``"rgb:3,sar:2"`` -> modality specs.

    A number N gives the first N of rgb, dsm, nir, sar, depth, event, lidar. A name
    without ``:bands`` takes its usual band count (1 if the name is not a known sensor).
    """
    from sgma_cli.config.model import ModalitySpec

    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= len(_DEFAULT_NAMES):
            raise UsageError(
                f"--modalities {count}: give between 1 and {len(_DEFAULT_NAMES)} modalities"
            )
        return [ModalitySpec(n, KNOWN_BANDS[n]) for n in _DEFAULT_NAMES[:count]]
    specs: list[ModalitySpec] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, bands = item.partition(":")
        try:
            count = int(bands) if bands else KNOWN_BANDS.get(name.lower(), 1)
            specs.append(ModalitySpec(name, count))
        except ValueError as err:
            raise UsageError(f"--modalities {item!r}: {err}") from None
    if not specs:
        raise UsageError("--modalities is empty; give a count (3) or names (rgb,dsm,nir)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--modalities names a modality twice: {names}")
    return specs
