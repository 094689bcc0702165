"""Check every input of a :class:`~sgma_cli.data.plan.Plan` and cut it into tiles.

Before ``sgma prepare`` writes anything it inspects every raster, builds each scene's
reference grid, checks CRS and overlap, reads all label values once (so unknown colours
stop the run up front), settles the class list and assigns every tile a split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.windows import Window

from sgma_cli.data.align import Grid, check_overlap, reference_grid
from sgma_cli.data.labels import parse_ignore, resolve_classes, scan_values
from sgma_cli.data.palettes import Palette, default_colors
from sgma_cli.data.plan import Plan, Scene
from sgma_cli.data.raster import RasterInfo, inspect_raster
from sgma_cli.data.tile_layout import (
    TileSpec,
    assign_splits,
    blocks,
    parse_split,
    tile_count,
    tile_windows,
)
from sgma_cli.errors import RasterError, UsageError

__all__ = ["PlanRow", "SceneJob", "inspect_plan", "resolve_palette", "cut_tiles"]


#: The largest class index (uint8 label tiles; 255 is ``ignore_index``).
MAX_CLASS = 254
#: More tiles than this in one dataset is refused before they are listed (each takes memory
#: in the plan and a folder on disk): a 10^5 x 10^5 px mosaic at tile 512, stride 256 is
#: 152,100 tiles; 2 million means a --tile/--stride or --resolution that was not meant.
MAX_TILES = 2_000_000


@dataclass(frozen=True)
class PlanRow:
    """One input raster of the plan (a row of the table ``prepare`` prints)."""

    scene: str
    role: str
    path: Path
    crs: str
    resolution: tuple[float, float]
    size: tuple[int, int]
    bounds: tuple[float, float, float, float]
    bands: int
    dtype: str
    nodata: float | None
    split: str


@dataclass
class SceneJob:
    """One scene ready to tile: its grid, raster headers and ``(tile_id, split, spec)`` list."""

    scene: Scene
    grid: Grid
    infos: dict[str, RasterInfo]
    tiles: list[tuple[str, str, TileSpec]]  # (tile_id, split, spec)


def resolve_palette(
    plan: Plan, palette: Palette | None, ignore: tuple[str, ...]
) -> tuple[Palette, dict[Path, tuple[str, dict[Any, int]]]]:
    """Scan every label source once; return the palette and per-source ``(kind, raw -> class)``.

    Without a palette: COCO categories (+ background), class indices ``class_0..class_max``
    or the sorted class names of vectors.

    Raises:
        UsageError: colour labels without a palette.
        RasterError: label values not in the palette (and not ignored), named.
    """
    scans = {}
    for scene in plan.scenes:
        if scene.labels is not None and scene.labels.path not in scans:
            scans[scene.labels.path] = (scene.labels, *scan_values(scene.labels)[:2])
    if palette is None:
        kinds = {k for _, k, _ in scans.values()}
        if kinds == {"coco"}:
            names = sorted({v for _, _, vs in scans.values() for v in vs})
            palette = list(zip(["background", *names], default_colors(len(names) + 1)))
        else:
            ign = parse_ignore(list(ignore), colour=False)
            values = {v for _, _, vs in scans.values() for v in vs if v not in ign}
            if any(k == "colour" for k in kinds):
                raise UsageError(
                    "colour labels need a palette: give --palette potsdam or a JSON file"
                )
            if values and all(isinstance(v, int) for v in values):
                if max(values) > MAX_CLASS:  # 255 is ignore_index: class indices end below
                    where = next(p for p, (_, _, vs) in scans.items() if max(values) in vs)
                    raise RasterError(
                        f"label value {max(values)} is not a class index (0-{MAX_CLASS}); "
                        "give --palette, or --ignore it",
                        where,
                    )
                n = max(values) + 1
                palette = list(zip([f"class_{i}" for i in range(n)], default_colors(n)))
            elif values:
                names = sorted(str(v) for v in values)
                palette = list(zip(names, default_colors(len(names))))
    if palette is not None and len(palette) > MAX_CLASS + 1:
        raise UsageError(
            f"{len(palette)} classes; sgma's label tiles hold at most {MAX_CLASS + 1} "
            "(8-bit, 255 = ignore)",
            next(iter(scans), plan.source),
        )
    maps: dict[Path, tuple[str, dict[Any, int]]] = {}
    for path, (source, kind, values) in scans.items():
        ign = parse_ignore(list(ignore), colour=kind == "colour")
        fixed = dict(source.value_map or ())
        mapping = resolve_classes(kind, {v for v in values if v not in fixed}, palette, ign, path)
        maps[path] = (kind, {**mapping, **fixed})
    if palette is None:
        palette = [("background", (0, 0, 0)), ("foreground", (255, 255, 255))]
    return palette, maps


def inspect_plan(
    plan: Plan,
    reference: str,
    resolution: float | None,
    crs: str | None,
    warn: Callable[[str], None],
) -> tuple[dict[str, SceneJob], list[PlanRow], dict[str, int]]:
    """Inspect every raster; return scene jobs, plan rows and bands per modality.

    Raises:
        RasterError: unreadable raster, missing reference, no overlap, CRS on some rasters
            only, band counts that differ between scenes.
    """
    jobs, rows, bands = {}, [], {}
    no_crs_warned = False
    for scene in plan.scenes:
        if reference not in scene.modalities:
            raise RasterError(
                f"scene {scene.name} has no {reference} raster (the reference modality); "
                "pick another with --reference",
                plan.source,
            )
        infos = {m: inspect_raster(src.path) for m, src in scene.modalities.items()}
        grid = reference_grid(infos[reference], resolution, crs)
        for m, src in scene.modalities.items():
            info = infos[m]
            if src.same_grid_as_reference and info.crs is None and grid.crs is not None:
                ref = infos[reference]
                if grid != ref.grid:
                    raise UsageError(
                        f"{m} has no CRS, so it can only be read on {reference}'s own grid; "
                        "drop --resolution/--crs",
                        info.path,
                    )
                if (info.width, info.height) != (ref.width, ref.height):
                    raise RasterError(
                        f"{m} has no CRS and {info.width}x{info.height} pixels; the reference "
                        f"{reference} has {ref.width}x{ref.height}",
                        info.path,
                    )
                warn(
                    f"{info.path.name}: no CRS; taken on the pixel grid of {ref.path.name} "
                    "(same size)"
                )
            else:
                check_overlap(info, grid, m, reference)
            n = len(src.bands) if src.bands else info.count
            if bands.setdefault(m, n) != n:
                raise RasterError(
                    f"{m} has {n} bands here but {bands[m]} in other scenes", info.path
                )
            rows.append(
                PlanRow(
                    scene.name,
                    m,
                    info.path,
                    info.crs_text,
                    info.resolution,
                    (info.width, info.height),
                    info.bounds,
                    n,
                    info.dtype,
                    info.nodata,
                    scene.split or "",
                )
            )
        if (
            scene.labels is not None
            and scene.labels.kind == "coco"
            and grid != infos[reference].grid
        ):
            raise UsageError(
                f"COCO labels are pixel coordinates of the {reference} images, so they need "
                f"{reference}'s own grid; drop --resolution/--crs",
                scene.labels.paths[0],
            )
        if grid.crs is None and not no_crs_warned:
            warn(
                "rasters without CRS: all modalities of a scene must share one pixel grid; "
                "outputs have no CRS"
            )
            no_crs_warned = True
        if scene.labels is not None and scene.labels.kind in ("raster", "index"):
            info = inspect_raster(scene.labels.path)
            ref = infos[reference]
            if (
                info.crs is None
                and grid.crs is not None
                and (info.width, info.height) == (ref.width, ref.height)
                and (grid.width, grid.height) == (ref.width, ref.height)
            ):
                warn(
                    f"{info.path.name}: no CRS; taken on the pixel grid of {ref.path.name} "
                    "(same size)"
                )
            else:
                check_overlap(info, grid, "labels", reference)
            rows.append(
                PlanRow(
                    scene.name,
                    "labels",
                    info.path,
                    info.crs_text,
                    info.resolution,
                    (info.width, info.height),
                    info.bounds,
                    info.count,
                    info.dtype,
                    info.nodata,
                    scene.split or "",
                )
            )
        if scene.labels is not None and scene.labels.kind == "vector":
            rows.append(_vector_row(scene.name, scene.labels.path, scene.split or ""))
        jobs[scene.name] = SceneJob(scene, grid, infos, [])
    return jobs, rows, bands


def _vector_row(scene: str, path: Path, split: str) -> PlanRow:
    """The plan row of vector labels, from the file's header: CRS, feature count, extent.

    ``size`` is ``(features, 0)``, ``dtype`` is ``"vector"`` and the resolution is 0.

    Raises:
        RasterError: the file is not a readable vector file.
    """
    import pyogrio
    from pyogrio.errors import DataSourceError

    try:
        info = pyogrio.read_info(path, force_feature_count=True, force_total_bounds=True)
    except (DataSourceError, OSError, ValueError) as err:
        raise RasterError(
            f"not a readable vector file ({str(err).splitlines()[0][:120]})", path
        ) from None
    if info.get("geometry_type") is None:
        raise RasterError(
            "has no geometry column: vector labels need polygons with a class field", path
        )
    bounds = tuple(float(b) for b in info.get("total_bounds") or (0.0, 0.0, 0.0, 0.0))
    return PlanRow(
        scene,
        "labels",
        path,
        str(info.get("crs") or "none"),
        (0.0, 0.0),
        (int(info.get("features", 0)), 0),
        (bounds[0], bounds[1], bounds[2], bounds[3]),
        1,
        "vector",
        None,
        split,
    )


def cut_tiles(
    jobs: dict[str, SceneJob], tile: int, stride: int, split: str | None, seed: int
) -> str:
    """Fill each job's tile list; return how splits were made (official/by scene/by spatial blocks).

    Raises:
        UsageError: tile larger than a scene, bad split, too few scenes/blocks for the split.
    """
    for job in jobs.values():
        g = job.grid
        if tile > g.width or tile > g.height:
            raise UsageError(
                f"--tile {tile} is larger than scene {job.scene.name} ({g.width}x{g.height} px "
                "on the reference grid); use a smaller --tile"
            )
    total = sum(tile_count(j.grid.width, j.grid.height, tile, stride) for j in jobs.values())
    if total > MAX_TILES:
        raise UsageError(
            f"--tile {tile} --stride {stride} cut the scenes into {total:,} tiles (more than "
            f"{MAX_TILES:,}); use a larger --tile or --stride, or a coarser --resolution"
        )
    official = all(j.scene.split for j in jobs.values()) and split is None
    fractions = parse_split(split or "0.8,0.1,0.1")
    names = list(jobs)
    if official:
        method, units = "official", [(n, None, jobs[n].scene.split) for n in names]
        if all(u[2] != "val" for u in units):
            method, units = _hold_out_val(jobs, units, tile, stride, seed)
    else:
        wanted = sum(f > 0 for f in fractions)
        if len(names) >= wanted and len(names) > 1 or wanted == 1:
            sizes = [jobs[n].grid.width * jobs[n].grid.height for n in names]
            method = "by scene"
            units = [(n, None, s) for n, s in zip(names, assign_splits(sizes, fractions, seed))]
        else:
            # fewer scenes than splits to fill: whole scenes cannot give every split its own
            method = "by spatial blocks" + (
                f" ({len(names)} scenes for {wanted} splits)" if len(names) > 1 else ""
            )
            units = []
            for n in names:
                bl = blocks(jobs[n].grid.width, jobs[n].grid.height, tile, stride)
                splits = assign_splits([b.width * b.height for b in bl], fractions, seed)
                units += [(n, b, s) for b, s in zip(bl, splits)]
    for scene_name, area, unit_split in units:
        g = jobs[scene_name].grid
        for spec in tile_windows(area or Window(0, 0, g.width, g.height), tile, stride):
            tid = f"{scene_name}_r{int(spec.window.row_off):05d}_c{int(spec.window.col_off):05d}"
            jobs[scene_name].tiles.append((tid, unit_split or "train", spec))
    return method


#: Share of the training area an official split without ``val`` (Potsdam) gives to ``val``.
VAL_HOLDOUT = 0.1


def _hold_out_val(
    jobs: dict[str, SceneJob],
    units: list[tuple[str, Window | None, str | None]],
    tile: int,
    stride: int,
    seed: int,
) -> tuple[str, list[tuple[str, Window | None, str | None]]]:
    """An official split without ``val`` (Potsdam: train/test): hold out training data for it.

    About :data:`VAL_HOLDOUT` of the training area (at least one unit) goes to ``val``:
    whole training scenes when there are two or more, else spatial blocks of the one
    training scene. Without room for that (one block), the split stays as it is.

    Returns:
        The split method for the plan and the units with ``val`` assigned.
    """
    train = [n for n, _, s in units if s == "train"]
    kept = [u for u in units if u[2] != "train"]
    fractions = (1 - VAL_HOLDOUT, VAL_HOLDOUT, 0.0)
    if len(train) >= 2:
        sizes = [jobs[n].grid.width * jobs[n].grid.height for n in train]
        splits = assign_splits(sizes, fractions, seed)
        held = [n for n, s in zip(train, splits) if s == "val"]
        method = (
            f"official + val held out: {len(held)} of {len(train)} training scenes "
            f"({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
        )
        return method, kept + [(n, None, s) for n, s in zip(train, splits)]
    if len(train) == 1:
        g = jobs[train[0]].grid
        bl = blocks(g.width, g.height, tile, stride)
        if len(bl) >= 2:
            splits = assign_splits([b.width * b.height for b in bl], fractions, seed)
            held = sum(s == "val" for s in splits)
            method = (
                f"official + val held out: {held} of {len(bl)} spatial blocks of "
                f"training scene {train[0]}"
            )
            return method, kept + [(train[0], b, s) for b, s in zip(bl, splits)]
    return "official (no val split)", units
