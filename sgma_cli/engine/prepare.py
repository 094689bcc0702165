"""The ``prepare`` job: a folder of sensor rasters -> aligned, tiled, split training data.

Use from Python::

    from sgma_cli.engine.prepare import PrepareOptions, prepare
    options = PrepareOptions(src=Path("demo/scene"), out=Path("demo/data"), tile=128)
    report = prepare(options)

Steps: discover scenes x modalities, inspect every raster (nothing is written before all
inputs check out), build each scene's reference grid, scan label values, cut tiles and
splits, then per tile read every modality warped onto the grid, write the tile folder
atomically and update the training statistics. ``index.gpkg`` and ``dataset.toml`` are
written last: a folder with ``dataset.toml`` is finished. A rerun skips finished tiles
(reading them back for the statistics), so a run killed at any point and run again ends
with the same bytes as an uninterrupted one. A write error is one
:class:`~sgma_cli.errors.OutputError` line; a first run then removes what it wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from sgma_cli import __version__
from sgma_cli.config.dataset import (
    INDEX_NAME,
    MANIFEST_NAME,
    BandStats,
    ClassSpec,
    DatasetManifest,
    ModalityEntry,
    save_manifest,
    tile_dir,
)
from sgma_cli.data.align import RESAMPLING, AlignedReader
from sgma_cli.data.atomic import write_errors
from sgma_cli.data.discovery import Plan, discover
from sgma_cli.data.labels import LabelReader
from sgma_cli.data.palettes import PALETTES, Palette, load_palette
from sgma_cli.data.scene_jobs import PlanRow, SceneJob, cut_tiles, inspect_plan, resolve_palette
from sgma_cli.data.stac import StacSources, parse_asset_option, read_stac
from sgma_cli.data.stats import BandAccumulator, ClassCounter
from sgma_cli.data.tile_files import (
    TileData,
    check_output_dir,
    prepare_output_dir,
    read_tile,
    remove_outputs,
    write_index,
    write_tile,
)
from sgma_cli.data.tile_layout import TileSpec, parse_split
from sgma_cli.engine.locks import output_lock, refuse_if_locked
from sgma_cli.errors import RasterError, UsageError

__all__ = ["PrepareOptions", "PlanRow", "PrepareReport", "prepare"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PrepareOptions:
    """Everything ``sgma prepare`` can be told (see ``docs/prepare.md``)."""

    src: Path
    out: Path
    preset: str | None = None
    modality: tuple[str, ...] = ()
    stac: str | None = None
    asset: tuple[str, ...] = ()
    labels: str | None = None
    label_field: str = "class"
    palette: str | None = None
    ignore: tuple[str, ...] = ()
    reference: str | None = None
    resolution: float | None = None
    crs: str | None = None
    resampling: str = "bilinear"
    tile: int | None = None
    stride: int | None = None
    split: str | None = None
    seed: int = 0
    dry_run: bool = False
    overwrite: bool = False
    name: str | None = None


@dataclass
class PrepareReport:
    """What ``prepare`` found and did."""

    out: Path
    layout: str
    reference: str
    rows: list[PlanRow]
    notes: list[str]
    warnings: list[str]
    tiles_total: int
    tile: int
    stride: int
    split_method: str
    tiles_written: int = 0
    tiles_resumed: int = 0
    tiles_empty: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    megapixels: float = 0.0
    seconds: float = 0.0
    manifest: DatasetManifest | None = None


def _stac(options: PrepareOptions) -> StacSources | None:
    """``--stac`` with its ``--asset`` pairs: a mosaic per modality, or ``None``."""
    if options.stac is None:
        if options.asset:
            raise UsageError("--asset maps STAC asset keys: give --stac ITEMS too")
        return None
    return read_stac(options.stac, parse_asset_option(options.asset))


def _palette_option(options: PrepareOptions) -> Palette | None:
    """``--palette``: a known name, or a JSON file looked up in SRC_DIR first (as ``--labels``
    and ``--modality`` paths are), then in the current folder."""
    if not options.palette:
        return None
    spec, path = options.palette, Path(options.palette)
    if spec.lower() not in PALETTES and not path.is_absolute():
        in_src = Path(options.src) / path
        spec = str(in_src) if in_src.is_file() else spec
    return load_palette(spec)


def _palette_for(plan: Plan, options: PrepareOptions) -> Palette | None:
    return _palette_option(options) if options.palette else plan.palette


def _fingerprint(options: PrepareOptions, tile: int, stride: int) -> dict[str, Any]:
    keep = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(options).items()
        if k not in {"dry_run", "overwrite", "out"}
    }
    keep["src"] = str(Path(options.src).resolve())
    fp = {**keep, "tile": tile, "stride": stride, "format_version": 1}
    return json.loads(json.dumps(fp))  # tuples -> lists, as read back


@dataclass
class _Inputs:
    """What the planning step settled: everything the tile loop reads from."""

    plan: Plan
    jobs: dict[str, SceneJob]
    bands: dict[str, int]
    palette: Palette
    label_maps: dict[Path, tuple[str, dict[Any, int]]]
    reference: str


@dataclass
class _Outputs:
    """What the tile loop accumulates: statistics, class counts and the index rows."""

    accs: dict[str, BandAccumulator]
    counter: ClassCounter
    records: list[dict[str, object]] = field(default_factory=list)
    geoms: list[object] = field(default_factory=list)


def _tiling(options: PrepareOptions, plan: Plan) -> tuple[int, int]:
    """``--tile``/``--stride``, else the layout's (preset, sample marker), else 512 / tile/2."""
    default_tile, default_stride = plan.tile or (512, 256)
    tile = options.tile or default_tile
    stride = options.stride or (default_stride if options.tile is None else max(1, tile // 2))
    if tile <= 0 or stride <= 0 or stride > tile:
        raise UsageError(
            f"--tile and --stride must be > 0 with stride <= tile, got {tile} and {stride}"
        )
    return tile, stride


def prepare(
    options: PrepareOptions,
    progress: Progress | None = None,
    on_plan: Callable[[PrepareReport], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Run the whole job; see the module docstring.

    Args:
        options: the options.
        progress: called as ``progress(done, total)`` after each tile.
        on_plan: called once with the report (plan filled, nothing written yet).
        warn: called with each warning line.

    Returns:
        The report, with ``manifest`` set unless ``options.dry_run``.

    Raises:
        UsageError, RasterError: bad options or inputs, before anything is written; an
            output folder that cannot be written before the plan is made.
    """
    start = time.perf_counter()
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    if options.resampling not in RESAMPLING:
        raise UsageError(
            f"unknown --resampling {options.resampling!r}; use one of {', '.join(RESAMPLING)}"
        )
    if options.split is not None:
        parse_split(options.split)
    stac = _stac(options)
    plan = discover(
        options.src,
        options.preset,
        list(options.modality),
        options.labels,
        options.label_field,
        _palette_option(options),
        sources=stac.sources if stac is not None else None,
    )
    if stac is not None:
        plan.notes.append(f"stac: {len(stac.items)} item(s) from {stac.href}")
        plan.notes += [f"  {item.describe()}" for item in stac.items]
    tile, stride = _tiling(options, plan)
    reference = options.reference or ("rgb" if "rgb" in plan.modalities else plan.modalities[0])
    if reference not in plan.modalities:
        raise UsageError(
            f"--reference {reference!r} is not a modality here ({', '.join(plan.modalities)})"
        )
    out = Path(options.out)
    fingerprint = _fingerprint(options, tile, stride)
    if not options.dry_run:
        refuse_if_locked(out)  # another prepare writing there: say so before anything else
        check_output_dir(out, fingerprint, options.overwrite)
    jobs, rows, bands = inspect_plan(plan, reference, options.resolution, options.crs, _warn)
    palette, label_maps = resolve_palette(plan, _palette_for(plan, options), options.ignore)
    method = cut_tiles(jobs, tile, stride, options.split, options.seed)
    if options.split is not None and parse_split(options.split)[0] == 0:
        _warn(
            f"--split {options.split} makes no training tiles: the dataset is for evaluate "
            "only, and its band statistics are placeholders"
        )
    total = sum(len(j.tiles) for j in jobs.values())
    report = PrepareReport(
        out, plan.layout, reference, rows, plan.notes, warnings, total, tile, stride, method
    )
    if on_plan is not None:
        on_plan(report)
    if options.dry_run:
        report.seconds = time.perf_counter() - start
        return report

    with output_lock(out, "sgma prepare"):  # one writer per output folder
        created = not out.exists()
        fresh = prepare_output_dir(out, fingerprint, options.overwrite)
        inputs = _Inputs(plan, jobs, bands, palette, label_maps, reference)
        try:
            report.manifest = _run(inputs, options, report, progress)
        except Exception:  # an interrupt keeps the finished tiles: the rerun resumes from them
            if fresh:  # nothing partial: a failed first run removes what it wrote, re-raises
                with contextlib.suppress(OSError):  # best effort: a read-only folder keeps them
                    remove_outputs(out, remove_folder=created)
            raise
    report.seconds = time.perf_counter() - start
    return report


def _run(
    inputs: _Inputs, options: PrepareOptions, report: PrepareReport, progress: Progress | None
) -> DatasetManifest:
    """Write every tile, then ``index.gpkg`` and ``dataset.toml``; return the manifest."""
    names = inputs.plan.modalities
    outputs = _Outputs(
        {m: BandAccumulator(inputs.bands[m], seed=options.seed) for m in names},
        ClassCounter(len(inputs.palette)),
    )
    first_crs = next(iter(inputs.jobs.values())).grid.crs
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, report.tiles_total)

    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20, GDAL_NUM_THREADS=1):
        for job in inputs.jobs.values():
            _tile_scene(job, inputs, options, report, outputs, first_crs, tick)
    if not outputs.records:
        raise RasterError(
            "every tile is empty (all nodata or all ignore); nothing to prepare",
            inputs.plan.source,
        )
    write_index(Path(options.out) / INDEX_NAME, outputs.records, outputs.geoms, first_crs)
    manifest = _manifest(inputs, options, report, outputs)
    with write_errors(Path(options.out) / MANIFEST_NAME):
        save_manifest(manifest, Path(options.out))
    return manifest


def _tile_scene(  # noqa: PLR0913 - the loop's inputs, accumulators and tick are all it needs
    job: SceneJob,
    inputs: _Inputs,
    options: PrepareOptions,
    report: PrepareReport,
    outputs: _Outputs,
    first_crs: CRS | None,
    tick: Callable[[], None],
) -> None:
    """Write (or read back, when resuming) every tile of one scene and account for it."""
    out, names, palette = Path(options.out), inputs.plan.modalities, inputs.palette
    scene = job.scene
    readers: dict[str, AlignedReader] = {}
    labels = None
    try:  # opened one by one inside the try: if one fails, those already open are closed
        for m, src in scene.modalities.items():
            readers[m] = AlignedReader(
                job.infos[m],
                job.grid,
                options.resampling,
                bands=src.bands,
                same_grid=src.same_grid_as_reference and job.infos[m].crs is None,
            )
        if scene.labels is not None:
            kind, label_map = inputs.label_maps[scene.labels.path]
            background = 0 if kind == "coco" and palette[0][0].lower() == "background" else None
            labels = LabelReader(scene.labels, job.grid, label_map, kind, scene.name, background)
        for tid, split, spec in job.tiles:
            folder = tile_dir(out, split, tid)
            if folder.exists():
                data = read_tile(folder, names, int(spec.window.width), inputs.bands)
                report.tiles_resumed += 1
            else:
                data = _read(spec, job, names, inputs.bands, readers, labels)
                if data is None:
                    report.tiles_empty += 1
                    tick()
                    continue
                write_tile(folder, data, names)  # creates the split folder too
                report.tiles_written += 1
            report.splits[split] = report.splits.get(split, 0) + 1
            report.megapixels += spec.window.width * spec.window.height / 1e6
            hist = _account(data, spec, split, names, outputs.accs, outputs.counter)
            rec: dict[str, object] = {
                "tile_id": tid,
                "scene": scene.name,
                "split": split,
                "path": folder.relative_to(out).as_posix(),
            }
            rec.update({f"coverage_{m}": float(data.mask[i].mean()) for i, m in enumerate(names)})
            rec.update({f"pixels_{n}": int(h) for (n, _), h in zip(palette, hist)})
            outputs.records.append(rec)
            footprint = box(*job.grid.window_bounds(spec.window))
            if job.grid.crs is not None and first_crs is not None and job.grid.crs != first_crs:
                footprint = shape(transform_geom(job.grid.crs, first_crs, mapping(footprint)))
            outputs.geoms.append(footprint)
            tick()
    finally:
        for r in readers.values():
            r.close()
        if labels is not None:
            labels.close()


def _manifest(
    inputs: _Inputs, options: PrepareOptions, report: PrepareReport, outputs: _Outputs
) -> DatasetManifest:
    """``dataset.toml``'s content: grid, classes, modalities with statistics, provenance."""
    plan, names = inputs.plan, inputs.plan.modalities
    grids = [j.grid for j in inputs.jobs.values()]
    same = all(g.crs == grids[0].crs for g in grids) and grids[0].crs is not None
    crs_text = None
    if same and grids[0].crs is not None:
        epsg = grids[0].crs.to_epsg()
        crs_text = f"EPSG:{epsg}" if epsg else grids[0].crs.to_wkt()
    resolutions = {tuple(round(r, 9) for r in g.resolution) for g in grids}
    return DatasetManifest(
        name=options.name or Path(options.src).resolve().name,
        sgma_version=__version__,
        crs=crs_text,
        resolution=grids[0].resolution
        if len(resolutions) == 1 and grids[0].crs is not None
        else None,
        tile_size=report.tile,
        stride=report.stride,
        ignore_index=255,
        classes=[ClassSpec(name=n, color=c) for n, c in inputs.palette],
        modalities=[
            ModalityEntry(
                name=m,
                bands=inputs.bands[m],
                optical=m in plan.optical,
                stats=BandStats(**outputs.accs[m].result()),
                source=_source_text(plan, m),
                resampling=options.resampling,
            )
            for m in names
        ],
        splits={s: report.splits[s] for s in ("train", "val", "test") if s in report.splits},
        class_pixels=outputs.counter.result(),
        provenance={
            "source": str(Path(options.src).resolve()),
            "layout": plan.layout,
            "reference": inputs.reference,
            "split": report.split_method,
            "seed": str(options.seed),
            "tool": f"sgma prepare {__version__}",
            "notes": "; ".join(plan.notes),
        },
    )


def _source_text(plan: Plan, modality: str) -> str:
    paths = [s.modalities[modality].path for s in plan.scenes if modality in s.modalities]
    if not paths:
        return ""
    if len(paths) == 1:
        return str(paths[0])
    if not all(isinstance(p, Path) for p in paths):
        return ", ".join(str(p) for p in paths)
    return f"{os.path.commonpath([str(Path(p).parent) for p in paths])} ({len(paths)} files)"


def _read(
    spec: TileSpec,
    job: SceneJob,
    names: list[str],
    bands: dict[str, int],
    readers: dict[str, AlignedReader],
    labels: LabelReader | None,
) -> TileData | None:
    t = int(spec.window.width)
    images, masks = {}, []
    for m in names:
        if m in readers:
            data, valid = readers[m].read(spec.window)
        else:  # this scene lacks the sensor: a missing modality
            data, valid = np.full((bands[m], t, t), np.nan, np.float32), np.zeros((t, t), bool)
        images[m] = data
        masks.append(valid)
    mask = np.stack(masks).astype(np.uint8)
    label = labels.read(spec.window) if labels is not None else None
    if not mask.any() or (label is not None and (label == 255).all()):
        return None
    return TileData(images, mask, label, job.grid.crs, job.grid.window_transform(spec.window))


def _account(
    data: TileData,
    spec: TileSpec,
    split: str,
    names: list[str],
    accs: dict[str, BandAccumulator],
    counter: ClassCounter,
) -> np.ndarray:
    """Histogram of the whole tile; training statistics over the tile's core only."""
    c = spec.core
    core = (
        slice(int(c.row_off), int(c.row_off + c.height)),
        slice(int(c.col_off), int(c.col_off + c.width)),
    )
    full = (
        np.bincount(data.label.ravel(), minlength=256)[: len(counter.counts)]
        if data.label is not None
        else np.zeros(len(counter.counts), np.int64)
    )
    if split == "train":
        for i, m in enumerate(names):
            valid = data.mask[i][core].astype(bool)
            accs[m].update(data.images[m][(slice(None), *core)][:, valid])
        if data.label is not None:
            counter.update(data.label[core])
    return full
