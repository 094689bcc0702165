"""Find what is what in a source folder: scenes x modalities (+ labels) -> a :class:`Plan`.

Four ways in, tried in this order:

1. ``--modality NAME=PATH_OR_GLOB`` (repeatable) and ``--labels PATH_OR_GLOB``;
2. ``--preset potsdam|dfc2023|deliver``: the published folder layouts, folder names
   matched case-insensitively, each choice recorded in :attr:`Plan.notes`;
3. a folder written by ``sgma sample`` (it holds ``sample.json``);
4. scene folders of ``<modality>.tif`` files (+ ``labels.tif``/``labels.gpkg``): the
   folder itself or each of its sub-folders, the layout ``sgma predict`` also reads.

Only paths are found here (presets: :mod:`sgma_cli.data.presets`); :mod:`sgma_cli.data.raster`
inspects them.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from sgma_cli.config._base import path_inside
from sgma_cli.data.labels import label_source_for
from sgma_cli.data.palettes import POTSDAM, Palette
from sgma_cli.data.plan import NAME_RE, OPTICAL, ModalitySource, Plan, Scene, scene_key
from sgma_cli.data.presets import PRESET_READERS, PRESETS
from sgma_cli.data.sources import LIST_SUFFIXES, RasterSource, is_url, resolve_source
from sgma_cli.data.synthetic import SAMPLE_MARKER
from sgma_cli.errors import RasterError, UsageError

__all__ = ["ModalitySource", "Scene", "Plan", "PRESETS", "discover", "parse_modality_option"]


def parse_modality_option(text: str) -> tuple[str, str]:
    """``"dsm=path/*.tif"`` -> ``("dsm", "path/*.tif")``; bad syntax raises :class:`UsageError`."""
    name, sep, where = text.partition("=")
    name = name.strip()
    if not sep or not where.strip():
        raise UsageError(f"--modality {text!r}: expected NAME=PATH_OR_GLOB, e.g. dsm=dsm/*.tif")
    if not NAME_RE.match(name):
        raise UsageError(f"--modality {text!r}: name {name!r} may hold only letters, digits and _")
    return name, where.strip()


def _expand(src: Path, pattern: str, what: str) -> list[Path]:
    base = Path(pattern)
    candidates = [base] if base.is_absolute() else [src / base, base]
    for cand in candidates:
        hits = sorted(Path(p) for p in glob.glob(str(cand), recursive=True))
        hits = [p for p in hits if p.is_file()]
        if hits:
            return hits
    raise UsageError(
        f"{what} {pattern!r}: no file matches (looked in {src} and the current folder)"
    )


def _is_mosaic(src: Path, where: str) -> bool:
    """A URL, a folder, a list file or an ``s3://``-style address: one raster of many tiles.

    A glob keeps its meaning of one file per scene (files matched across modalities).
    """
    if is_url(where):
        return True
    path = Path(where) if Path(where).is_absolute() else src / where
    if not path.exists():
        path = Path(where)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in LIST_SUFFIXES)


def _from_options(
    src: Path,
    modality: list[str],
    labels: str | None,
    label_field: str,
    palette: Palette | None,
    sources: dict[str, RasterSource] | None = None,
) -> Plan:
    parsed = [parse_modality_option(m) for m in modality]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise UsageError(f"--modality names repeat: {names}")
    mosaics: dict[str, Path | RasterSource] = dict(sources or {})
    for n, where in parsed:
        if _is_mosaic(src, where):
            base = src if (src / where).exists() else Path.cwd()
            mosaics[n] = resolve_source(where, base)
    files: dict[str, list[Path | RasterSource]] = {}
    for n, where in parsed:
        files[n] = [mosaics[n]] if n in mosaics else list(_expand(src, where, f"--modality {n}"))
    for n, source in mosaics.items():
        files.setdefault(n, [source])
    names = list(files)
    label_files = _expand(src, labels, "--labels") if labels else []
    if all(len(f) == 1 for f in files.values()) and len(label_files) <= 1:
        scene = Scene(
            name=src.name or "scene",
            modalities={n: ModalitySource(n, f[0]) for n, f in files.items()},
            labels=label_source_for(label_files[0], label_field, palette) if label_files else None,
        )
        return Plan(src, "options", [scene], names, optical={n for n in names if n in OPTICAL})
    # a modality given as one file while others match several covers every scene (like one
    # label vector for all scenes, e.g. a SAR mosaic beside per-scene orthophotos)
    several = any(len(f) > 1 for f in files.values())
    shared = {n: f[0] for n, f in files.items() if len(f) == 1 and several}
    per_scene = [n for n in names if n not in shared]
    keyed = {n: {scene_key(Path(str(p)), n): p for p in files[n]} for n in per_scene}
    scene_keys = sorted(keyed[per_scene[0]])
    unmatched = [n for n in per_scene if not set(keyed[n]) & set(scene_keys)]
    if unmatched:
        raise UsageError(
            f"--modality {unmatched[0]}: no file name matches a scene of --modality "
            f"{per_scene[0]} ({', '.join(scene_keys[:5])}); name the files alike"
        )
    shared_label = label_files[0] if len(label_files) == 1 else None
    label_keys = {scene_key(p, "label"): p for p in label_files} if shared_label is None else {}
    label_keys.update(
        {scene_key(p, "labels"): p for p in label_files} if shared_label is None else {}
    )
    scenes = []
    for key in scene_keys:
        mods = {
            n: ModalitySource(n, shared[n] if n in shared else keyed[n][key])
            for n in names
            if n in shared or key in keyed[n]
        }
        lab = shared_label or label_keys.get(key)
        scenes.append(
            Scene(key, mods, label_source_for(lab, label_field, palette) if lab else None)
        )
    return Plan(src, "options", scenes, names, optical={n for n in names if n in OPTICAL})


def _scene_folder(folder: Path, label_field: str, palette: Palette | None) -> Scene | None:
    rasters = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in {".tif", ".tiff"}
    )
    label = next((p for p in rasters if p.stem.lower() in {"labels", "label"}), None)
    if label is None:
        label = next(
            (
                p
                for ext in (".gpkg", ".geojson", ".shp")
                for p in [folder / f"labels{ext}"]
                if p.exists()
            ),
            None,
        )
    mods = {
        p.stem: ModalitySource(p.stem, p)
        for p in rasters
        if p.stem.lower() not in {"labels", "label", "mask"}
    }
    bad = [m for m in mods if not NAME_RE.match(m)]
    if bad:
        raise UsageError(
            f"file names {bad} are not modality names (letters, digits, _); use --modality", folder
        )
    if not mods:
        return None
    return Scene(
        folder.name, mods, label_source_for(label, label_field, palette) if label else None
    )


def _sample_tiling(meta: dict[str, object]) -> tuple[int, int] | None:
    """The marker's ``tile`` and ``stride``; ``None`` for markers written before they existed."""
    tile, stride = meta.get("tile"), meta.get("stride")
    if tile is None and stride is None:
        return None
    if not (isinstance(tile, int) and isinstance(stride, int) and 0 < stride <= tile):
        raise ValueError(
            f"tile {tile!r} and stride {stride!r} must be integers, 0 < stride <= tile"
        )
    return tile, stride


def _from_folders(src: Path, label_field: str, palette: Palette | None) -> Plan:
    marker = src / SAMPLE_MARKER
    if marker.exists():
        try:
            meta = json.loads(marker.read_text())
            mods = {}
            for n, f in meta["modalities"].items():
                if not NAME_RE.match(str(n)):  # names become tile file names
                    raise RasterError(f"modality name {str(n)[:40]!r} is not a name", marker)
                mods[n] = ModalitySource(n, path_inside(src, f, marker, RasterError, "file"))
            label = (
                label_source_for(
                    path_inside(src, meta["labels"], marker, RasterError, "labels file"),
                    label_field,
                    palette or POTSDAM,
                )
                if meta.get("labels")
                else None
            )
            tiling = _sample_tiling(meta)
        except RasterError:  # a path leading outside the folder, an unreadable label file
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise RasterError(f"not an sgma sample marker ({err})", marker) from None
        scene = Scene(src.name or "scene", mods, label)
        return Plan(
            src,
            "sample",
            [scene],
            list(mods),
            optical={"rgb"},
            palette=palette or POTSDAM,
            notes=[f"sgma sample scene (seed {meta.get('seed')}, size {meta.get('size')})"],
            tile=tiling,
        )
    scene = _scene_folder(src, label_field, palette)
    scenes = (
        [scene]
        if scene
        else [
            s
            for d in sorted(src.iterdir())
            if d.is_dir() and not d.name.startswith(".")
            for s in [_scene_folder(d, label_field, palette)]
            if s
        ]
    )
    if not scenes:
        raise UsageError(
            "no rasters found: expected <modality>.tif files here or in sub-folders; "
            "or use --preset or --modality NAME=PATH",
            src,
        )
    names: list[str] = []
    for s in scenes:
        names += [m for m in s.modalities if m not in names]
    if "rgb" in names:
        names.remove("rgb")
        names.insert(0, "rgb")
    return Plan(
        src, "folders", scenes, names, optical={n for n in names if n in OPTICAL}, palette=palette
    )


def discover(
    src: Path,
    preset: str | None = None,
    modality: list[str] | None = None,
    labels: str | None = None,
    label_field: str = "class",
    palette: Palette | None = None,
    sources: dict[str, RasterSource] | None = None,
) -> Plan:
    """Find scenes, modalities and labels under ``src``.

    Args:
        src: the source folder.
        preset: ``potsdam``, ``dfc2023``, ``deliver`` or ``None``.
        modality: ``NAME=WHERE`` entries; when given, they define the modalities. WHERE is
            a file or glob (one file per scene), or one raster of many tiles: a folder, a
            list file or a URL (:func:`~sgma_cli.data.sources.resolve_source`).
        labels: label raster/vector path or glob (with ``modality``, or to override).
        label_field: class attribute of vector labels.
        palette: class palette from ``--palette`` (overrides the layout's).
        sources: sensors read elsewhere (``--stac``), each one raster covering every scene;
            ``--modality`` wins for a name given in both.

    Raises:
        UsageError: empty or missing folder, unknown preset, bad option syntax.
    """
    src = Path(src)
    if not src.is_dir():
        raise UsageError("source folder not found", src)
    if not any(src.iterdir()):
        raise UsageError("source folder is empty", src)
    if modality or sources:
        plan = _from_options(src, list(modality or []), labels, label_field, palette, sources)
    elif preset:
        if preset.lower() not in PRESET_READERS:
            raise UsageError(f"unknown --preset {preset!r}; use one of {', '.join(PRESET_READERS)}")
        plan = PRESET_READERS[preset.lower()](src, label_field)
        if palette is not None:
            plan.palette = palette
    else:
        plan = _from_folders(src, label_field, palette)
    if labels and not modality:
        files = _expand(src, labels, "--labels")
        if len(files) != 1:
            raise UsageError(
                f"--labels {labels!r} matches {len(files)} files; with a preset give one file"
            )
        plan.scenes = [
            Scene(
                s.name, s.modalities, label_source_for(files[0], label_field, plan.palette), s.split
            )
            for s in plan.scenes
        ]
    if not plan.scenes:
        raise UsageError(f"{plan.layout} layout: no scenes found", src)
    return plan
