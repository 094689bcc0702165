"""Write a checkpoint as one graph file that runs without sgma's model code.

ONNX (run by ONNX Runtime: QGIS plugins, serverless functions, edge boxes; needs the
package's onnx extra) or a torch.export ExportedProgram (.pt2). The
graph takes one normalised image per sensor and the per-pixel availability mask, and
returns logits (and with --robustness the robustness maps). By default it holds every
sensor of the checkpoint: feed a missing one as zeros with its mask False. The file
carries the classes, colours, sensors, bands, normalisation, resolution, tile size, sgma
version and the checkpoint's SHA-256, so sgma predict --model needs nothing else.

Examples:
  sgma export runs/sgma/best.pt --out model.onnx
  sgma export best.pt --modalities rgb,sar --size 512 --out rgb_sar.onnx
  sgma export best.pt --dynamic --robustness --out model.onnx
  sgma export best.pt --format exported-program --out model.pt2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sgma_cli.cli.console import console, err_console
from sgma_cli.errors import UsageError

__all__ = ["command"]


def command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint written by sgma train (.pt).", metavar="CKPT")
    ],
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="File to write (.onnx or .pt2).", show_default=False)
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="<onnx|exported-program>",
            help="onnx (ONNX Runtime) or exported-program (torch.export, .pt2).",
        ),
    ] = "onnx",
    modalities: Annotated[
        str | None,
        typer.Option(
            "--modalities",
            "-m",
            help="The graph's sensors, e.g. rgb,sar (default: all of the checkpoint's).",
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            min=32,
            show_default=False,
            help="Window side in pixels, a multiple of 32 (default: the checkpoint's tile "
            "size); with --dynamic only the traced size.",
        ),
    ] = None,
    dynamic: Annotated[
        bool,
        typer.Option("--dynamic", help="Any window height and width (multiples of 32)."),
    ] = False,
    robustness: Annotated[
        bool,
        typer.Option("--robustness", help="Also return the robustness maps (B, M, H, W)."),
    ] = False,
) -> None:
    """Write a checkpoint as an ONNX or ExportedProgram graph."""
    from sgma_cli.engine.export import ExportJob, run_export

    chosen = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    if modalities is not None and not chosen:
        raise UsageError("--modalities is empty; give sensor names such as rgb,sar")
    job = ExportJob(
        checkpoint=checkpoint,
        out=out,
        format=fmt,  # type: ignore[arg-type]  # checked by the job
        modalities=chosen,
        size=size,
        dynamic=dynamic,
        robustness=robustness,
    )
    with err_console.status("exporting", spinner="dots") as status:
        result = run_export(job, on_step=lambda step: status.update(step))
    meta = result.meta
    shape = "B x C x H x W" if meta.size is None else f"B x C x {meta.size} x {meta.size}"
    console.print(
        f"wrote {result.path} ({meta.graph_format}, {result.size_bytes / 1e6:.1f} MB)",
        soft_wrap=True,
    )
    console.print(f"   inputs: {', '.join(meta.inputs)} ({shape}; mask bool B x M x H x W)")
    console.print(f"  outputs: {', '.join(meta.outputs)}")
    console.print(
        f"  classes: {len(meta.meta.classes)}; checkpoint {meta.checkpoint} "
        f"(sha256 {meta.checkpoint_sha256[:12]}…)",
        soft_wrap=True,
    )
    console.print(
        f"  checked: max |logit difference| vs PyTorch {result.max_abs_diff:.1e}; "
        f"{result.seconds:.1f} s"
    )
