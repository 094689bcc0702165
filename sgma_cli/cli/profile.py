"""Count parameters and compute (MACs) of an SGMA model per component, like Table IX.

No weights file is needed: the model is built on PyTorch's meta device. MACs are
multiply-accumulates (1 MAC = 2 FLOPs) of one forward with every modality present.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sgma_cli.cli.console import console, err_console
from sgma_cli.cli.options import AsJson, Compile, Device, parse_modalities
from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.engine.profile import ProfileReport


class Fusion(str, Enum):
    """Fusion kinds: the paper's SGF or the baselines."""

    sgf = "sgf"
    sum = "sum"
    mean = "mean"


class Stem(str, Enum):
    """How bands reach the shared encoder."""

    repeat = "repeat"
    learned = "learned"


def _m(value: int) -> str:
    return f"{value / 1e6:,.2f}"


def _g(value: int) -> str:
    return f"{value / 1e9:,.2f}"


def _table(report: ProfileReport) -> Table:
    from sgma_cli.engine.profile import FUSION_PARTS

    cfg = report.config
    names = ", ".join(m["name"] for m in cfg["modalities"])
    table = Table(
        title=f"{cfg['backbone']} · {cfg['fusion']} · M = {len(cfg['modalities'])} ({names}) · "
        f"K = {cfg['num_classes']} · {cfg['size']}²",
        caption="MACs: multiply-accumulates of one forward, all modalities present "
        "(1 MAC = 2 FLOPs)",
    )
    table.add_column("component")
    table.add_column("params (M)", justify="right")
    table.add_column("MACs (G)", justify="right")
    p, c = report.params, report.macs
    table.add_row("backbone (shared)", _m(p["backbone"]), _g(c["backbone"]))
    if p["stems"]:
        table.add_row("modality stems", _m(p["stems"]), _g(c["stems"]))
    table.add_row("fusion", _m(p["fusion"]), _g(c["fusion"]), style="bold")
    if cfg["fusion"] == "sgf":
        labels = {"mp": "MP (per modality)", "csf": "CSF + prototypes", "sp": "SP", "rp": "RP"}
        for part in FUSION_PARTS:
            table.add_row(
                f"  {labels[part]}",
                _m(p["fusion_parts"][part]),
                _g(c["fusion_parts"][part]),
                style="dim",
            )
    table.add_row(f"head (all-MLP, E = {cfg['head_dim']})", _m(p["head"]), _g(c["head"]))
    table.add_section()
    table.add_row("total", _m(p["total"]), _g(c["total"]), style="bold")
    return table


def _latency_table(report: ProfileReport) -> Table:
    from sgma_cli.engine.profile import LATENCY_STAGES

    lat = report.latency
    assert lat is not None
    labels = {
        "encode": "encode (stems, backbone, SGF encode)",
        "fuse": "fuse (SP, RP, all modalities)",
        "head": "head",
        "forward": "forward",
    }
    caption = f"batch 1, median of 5; backbone fed {lat.encode_strategy.replace('_', ' ')}"
    if lat.compile_s is not None:
        caption += f"; first compiled forward {lat.compile_s:,.1f} s (compiling included)"
    table = Table(title=f"latency on {report.device}", caption=caption)
    table.add_column("stage")
    table.add_column("eager (ms)", justify="right")
    if lat.compiled is not None:
        table.add_column("compiled (ms)", justify="right")
        table.add_column("speed-up", justify="right")
    for stage in LATENCY_STAGES:
        row = [labels[stage], f"{lat.eager[stage]:,.1f}"]
        if lat.compiled is not None:
            fast = lat.compiled[stage]
            row += [f"{fast:,.1f}", f"{lat.eager[stage] / max(fast, 1e-9):.2f}x"]
        if stage == "forward":
            table.add_section()
        table.add_row(*row, style="bold" if stage == "forward" else None)
    return table


def command(
    *,
    backbone: Annotated[
        str, typer.Option(help="timm backbone shared by all modalities.")
    ] = "pvt_v2_b2",
    modalities: Annotated[
        str,
        typer.Option(help="A count (3) or names with optional bands (rgb,dsm,nir or rgb:3,sar:2)."),
    ] = "3",
    num_classes: Annotated[int, typer.Option(min=2, help="Segmentation classes K.")] = 6,
    size: Annotated[int, typer.Option(help="Square input size in pixels, a multiple of 32.")] = 512,
    fusion: Annotated[
        Fusion, typer.Option(help="SGF (the paper) or a sum/mean baseline.")
    ] = Fusion.sgf,
    stem: Annotated[Stem, typer.Option(help="Band-to-RGB stem per modality.")] = Stem.repeat,
    head_dim: Annotated[int, typer.Option(min=1, help="All-MLP decoder width E.")] = 256,
    sp_heads: Annotated[int, typer.Option(min=1, help="Spatial Perceptron heads.")] = 8,
    rp_heads: Annotated[int, typer.Option(min=1, help="Robustness Perceptron heads.")] = 4,
    latency: Annotated[
        bool, typer.Option("--latency", help="Also time one forward (warm-up excluded).")
    ] = False,
    device: Device = "auto",
    compile_model: Compile = None,
    as_json: AsJson = False,
) -> None:
    """Count parameters and compute (MACs) of an SGMA model per component, like Table IX."""
    # --device matters only with --latency
    from sgma_cli.config.model import SGMAConfig
    from sgma_cli.engine.profile import profile_model

    specs = parse_modalities(modalities)
    try:
        config = SGMAConfig(
            modalities=tuple(specs),
            num_classes=num_classes,
            backbone=backbone,
            fusion=fusion.value,  # type: ignore[arg-type]
            stem=stem.value,  # type: ignore[arg-type]
            sp_heads=sp_heads,
            rp_heads=rp_heads,
            head_dim=head_dim,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if compile_model and not latency:
        raise UsageError("--compile times the compiled model: add --latency")
    report = profile_model(config, size=size, latency=latency, device=device, compile=compile_model)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    console.print(_table(report))
    if report.latency is not None:
        console.print(_latency_table(report))
    elif not as_json:
        err_console.print("[dim]add --latency to time a forward on this machine[/]")
