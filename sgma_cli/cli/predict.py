"""Segment a whole scene with whichever of the checkpoint's sensors you have.

Reads one raster per sensor (SCENE_DIR/<modality>.tif, as in the checkpoint, or
--modality NAME=PATH), aligns every window to one reference grid on the fly, blends
overlapping windows smoothly and writes a Cloud-Optimized GeoTIFF class map with the
class colours and names (nodata where no chosen sensor saw the ground). Optional:
class probabilities, confidence, per-sensor robustness maps and polygons (GeoPackage).

Examples:
  sgma predict demo/scene -c demo/run/checkpoints/best.pt -o map.tif
  sgma predict demo/scene -c best.pt -m dsm,sar -o dsm_sar.tif --robustness
  sgma predict -c best.pt --modality rgb=ortho.tif --modality sar=s1.tif
  sgma predict -c best.pt -m rgb,dsm --modality rgb='ortho/*.tif' \
      --modality dsm=https://host/dsm.tif
  sgma predict -c best.pt --stac items.json --asset rgb=visual --asset dsm=dsm
  sgma predict scene/ -c best.pt --gpus 4 --batch-size 16
  sgma predict demo/scene --model model.onnx -o map.tif   # ONNX Runtime
  sgma predict -c best.pt --modality rgb='ortho/*.tif' -o city/ --aoi aoi.gpkg
  sgma predict -c best.pt --modality rgb=s3://b/ortho.vrt -o city/ --ray auto

--out ending in .tif writes one GeoTIFF; any other --out is a folder and the region is
predicted in chunks (--chunk), resumably: a rerun skips the chunks already there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sgma_cli.cli.console import console, err_console
from sgma_cli.cli.options import (
    Asset,
    BatchSize,
    Compile,
    Device,
    Gpus,
    Nproc,
    Overlap,
    Stac,
    Window,
    stac_option,
)
from sgma_cli.cli.predict_region import crs_text, megapixels_per_second, print_predicted
from sgma_cli.cli.progress import Rate, progress_bar
from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.data.scene import Scene
    from sgma_cli.data.sources import RasterSource
    from sgma_cli.engine.predict.inference import Progress as PredictProgress
    from sgma_cli.engine.predict.job import PredictResult
    from sgma_cli.engine.predict.ray_executor import RayExecutor

__all__ = ["command"]


@contextmanager
def _progress_bar() -> Iterator[Callable[[PredictProgress], None]]:
    bar = progress_bar(Rate("MPix", per_second=megapixels_per_second), "windows")
    with bar:
        task = bar.add_task("predicting", total=None, mpix=0.0)

        def update(p: PredictProgress) -> None:
            bar.update(
                task, completed=p.windows_done, total=p.windows_total, mpix=p.megapixels_done
            )

        yield update


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``NAME=WHERE`` pairs; WHERE stays text (a file, glob, folder, list or URL)."""
    from sgma_cli.data.discovery import parse_modality_option

    files: dict[str, str] = {}
    for text in pairs:
        name, where = parse_modality_option(text)
        if name in files:
            raise UsageError(f"--modality {name!r} given twice")
        files[name] = where
    return files


def _ray_executor(
    address: str | None,
    cpus_per_worker: float,
    workers: int | None,
    device: str,
    *,
    region: bool,
) -> RayExecutor | None:
    """The Ray executor of ``--ray`` (None without it), its start and retries on stderr."""
    if address is None:
        if cpus_per_worker != 1.0 or workers is not None:
            raise UsageError("--cpus-per-worker and --ray-workers go with --ray")
        return None
    from sgma_cli.engine.predict.ray_executor import RayExecutor, require_ray

    require_ray()  # before anything else: without the extra, --ray is one line
    if not region:
        raise UsageError("--ray runs the chunks of a region: give --out DIR (a folder, no .tif)")
    if device.startswith("cuda:"):
        raise UsageError(
            f"--device {device} with --ray: Ray gives each worker its own GPU; "
            "use --device cuda (or auto)"
        )

    def started(executor: RayExecutor) -> None:
        where = "a local Ray cluster" if executor.cluster == "local" else executor.cluster
        gpus = f" and {executor.gpus_each:g} GPU" if executor.gpus_each else ""
        err_console.print(
            f"ray: {executor.actors} worker(s) of {executor.cpus_per_worker:g} CPU{gpus} "
            f"on {where}",
            soft_wrap=True,
        )

    def retried(task: object, attempt: int) -> None:
        name = getattr(task, "id", task)
        err_console.print(
            f"ray: chunk {name}: its worker died; running it again (attempt {attempt})",
            style="yellow",
            soft_wrap=True,
        )

    executor = RayExecutor(
        address,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=0.0 if device == "cpu" else (1.0 if device == "cuda" else None),
        on_start=started,
        on_retry=retried,
    )
    executor.check()  # an address where no Ray answers: one line before anything is written
    return executor


def _describe_scene(scene: Scene) -> None:
    g = scene.grid
    err_console.print(
        f"scene: {g.width} x {g.height} px at {g.resolution[0]:g} ({crs_text(g.crs)}), "
        f"sensors: {', '.join(scene.names)} (grid of {scene.reference})"
    )
    from sgma_cli.data.sources import RasterSource

    for sensor in scene.sensors:  # mosaics and URLs: say what is read
        if isinstance(sensor.path, RasterSource):
            err_console.print(f"  {sensor.name}: {sensor.path.label}", style="dim", soft_wrap=True)
    for note in scene.notes[1:]:
        err_console.print(f"  {note}", style="dim")


def _render(result: PredictResult) -> None:
    total = print_predicted(
        result.class_pixels,
        result.nodata_pixels,
        result.outputs,
        result.polygons,
        nodata_label="nodata (no sensor)",
    )
    rate = total / 1e6 / max(result.seconds, 1e-9)
    console.print(
        f"{result.windows} {result.notes[-1]}; {total / 1e6:.2f} MPix in {result.seconds:.1f} s "
        f"({rate:.2f} MPix/s)"
    )
    if result.compiled is not None:
        err_console.print(result.compiled.describe(), style="dim", soft_wrap=True)


def command(
    scene_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Folder with one raster per sensor, named as in the checkpoint (rgb.tif, "
            "dsm.tif, ...).",
            metavar="SCENE_DIR",
            show_default=False,
        ),
    ] = None,
    *,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", "-c", help="Trained sgma checkpoint (.pt); or give --model."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Instead of --checkpoint: a model written by sgma export (.onnx, run by ONNX "
            "Runtime; .pt2, run by torch.export).",
        ),
    ] = None,
    modalities: Annotated[
        str | None,
        typer.Option(
            "--modalities",
            "-m",
            help="Use only these sensors, e.g. rgb,sar (default: all present).",
        ),
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            "--modality",
            help="NAME=WHERE of one sensor: a raster, or tiles read as one (glob in quotes, "
            "folder, list file, .vrt), or a URL (https://, s3://, gs://); repeatable, wins "
            "over SCENE_DIR and --stac.",
        ),
    ] = None,
    stac: Stac = None,
    asset: Asset = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Class map GeoTIFF (default: ./<SCENE_DIR name>_prediction.tif); a path "
            "without .tif is a folder: the region is predicted in chunks, resumably.",
        ),
    ] = None,
    aoi: Annotated[
        str | None,
        typer.Option(
            "--aoi",
            help="Area to map: a GeoPackage/GeoJSON polygon file, or a box "
            "minx,miny,maxx,maxy[,CRS] (default: the reference sensor's coverage).",
        ),
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            "--like", help="Write on this raster's grid (CRS, transform, size), e.g. a map."
        ),
    ] = None,
    chunk: Annotated[
        int | None,
        typer.Option(
            "--chunk",
            help="Chunk side in pixels with --out DIR (default 4096, or 16 windows; rounded "
            "up to a multiple of the window stride).",
            show_default=False,
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option("--merge", help="With --out DIR: also write the mosaics as single COGs."),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="With --out DIR: start over if DIR holds a run with other options."
        ),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|local|HOST:PORT",
            help="With --out DIR: run the chunks on a Ray cluster. auto: RAY_ADDRESS, else the "
            "cluster `ray start` began on this machine, else a local one; local: a local one "
            "for this run; HOST:PORT: the head node. Needs pip install 'sgma-cli[ray]'.",
            show_default=False,
        ),
    ] = None,
    cpus_per_worker: Annotated[
        float,
        typer.Option(
            "--cpus-per-worker",
            min=0.01,
            help="With --ray: CPUs (and threads) of each worker; one worker per GPU on a "
            "cluster with GPUs, else one per this many CPUs.",
        ),
    ] = 1.0,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            "--ray-workers",
            min=1,
            help="With --ray: this many workers (default: as many as the cluster's nodes "
            "hold now; more wait for an autoscaler to add nodes).",
            show_default=False,
        ),
    ] = None,
    window: Window = None,
    overlap: Overlap = 0.25,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    gpus: Gpus = 0,
    nproc: Nproc = 1,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 autocast on CUDA), bf16 or fp32.")
    ] = "auto",
    probabilities: Annotated[
        bool,
        typer.Option(
            "--probabilities", help="Also write OUT.probabilities.tif (percent per class)."
        ),
    ] = False,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence", help="Also write OUT.confidence.tif (max probability, percent)."
        ),
    ] = False,
    robustness: Annotated[
        bool,
        typer.Option(
            "--robustness",
            help="Also write OUT.robustness.tif (RP weight per used sensor, percent).",
        ),
    ] = False,
    vectorize: Annotated[
        Path | None, typer.Option(help="Also write class polygons to this GeoPackage.")
    ] = None,
    min_area: Annotated[
        float,
        typer.Option("--min-area", help="Smallest polygon for --vectorize, in CRS units² (m²)."),
    ] = 0.0,
    resolution: Annotated[
        str,
        typer.Option(
            help="Output pixel size: checkpoint (the training resolution), native (finest "
            "sensor) or a number."
        ),
    ] = "checkpoint",
    extent: Annotated[
        str,
        typer.Option(
            help="reference (the finest sensor's footprint) or union (all chosen sensors)."
        ),
    ] = "reference",
    compile_model: Compile = None,
) -> None:
    """Segment a whole scene with whichever of the checkpoint's sensors you have."""
    from sgma_cli.engine.predict.job import PredictJob, run_predict

    files: dict[str, str | RasterSource] = dict(_parse_pairs(modality or []))
    found = stac_option(stac, asset)
    if found is not None:
        files = {**found.sources, **files}
    if extent not in ("reference", "union"):
        raise UsageError(f"--extent {extent!r}: use reference or union")
    if precision not in ("auto", "bf16", "fp32"):
        raise UsageError(f"--precision {precision!r}: use auto, bf16 or fp32")
    chosen = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    if modalities is not None and not chosen:
        raise UsageError("--modalities is empty; give sensor names such as rgb,sar")
    if out is None:
        out = Path(f"{(scene_dir.resolve().name if scene_dir else 'scene')}_prediction.tif")
    from sgma_cli.engine.predict.region import RegionJob, is_region_out

    region = is_region_out(out)
    if not region and (chunk is not None or merge or overwrite):
        raise UsageError("--chunk, --merge and --overwrite need --out DIR (a folder, no .tif)")
    executor = _ray_executor(ray, cpus_per_worker, ray_workers, device, region=region)
    job = (RegionJob if region else PredictJob)(
        checkpoint=checkpoint,
        scene_dir=scene_dir,
        out=out,
        files=files,
        modalities=chosen,
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        gpus=max(gpus, 1),  # 0 and 1 both mean one process on --device
        nproc=nproc,
        precision=precision,
        probabilities=probabilities,
        confidence=confidence,
        robustness=robustness,
        vectorize=vectorize,
        min_area=min_area,
        resolution=resolution,  # checked (and parsed) by the job
        extent=extent,  # type: ignore[arg-type]
        model=model,
        aoi=aoi,
        like=like,
        compile=compile_model,
    )
    if isinstance(job, RegionJob):
        from sgma_cli.cli.predict_region import run_region_command

        job.chunk, job.merge, job.overwrite = chunk, merge, overwrite
        run_region_command(job, executor)
        return
    with _progress_bar() as update:
        result = run_predict(job, progress=update, on_scene=_describe_scene)
    _render(result)
