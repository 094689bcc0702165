"""Published dataset layouts: ISPRS Potsdam, DFC2023 track 2, DELIVER.

Folder names are matched case-insensitively; every choice is recorded in
:attr:`~sgma_cli.data.plan.Plan.notes` so the plan says which folder was taken for what.
Official splits come from the Potsdam tile lists and from ``train``/``val``/``test``
parent folders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sgma_cli.data.labels import LabelSource, label_source_for, read_coco_json
from sgma_cli.data.palettes import DELIVER, DFC2023, POTSDAM
from sgma_cli.data.plan import RASTER_EXT, ModalitySource, Plan, Scene, scene_key
from sgma_cli.data.synthetic import SAMPLE_MARKER
from sgma_cli.errors import UsageError

__all__ = [
    "PRESETS",
    "PRESET_READERS",
    "POTSDAM_TRAIN",
    "POTSDAM_TEST",
    "potsdam",
    "dfc2023",
    "deliver",
]

#: Potsdam official split (24 training / 14 test tiles, ISPRS benchmark).
POTSDAM_TRAIN = {
    f"{a}_{b}"
    for a, b in [
        (2, 10),
        (2, 11),
        (2, 12),
        (3, 10),
        (3, 11),
        (3, 12),
        (4, 10),
        (4, 11),
        (4, 12),
        (5, 10),
        (5, 11),
        (5, 12),
        (6, 7),
        (6, 8),
        (6, 9),
        (6, 10),
        (6, 11),
        (6, 12),
        (7, 7),
        (7, 8),
        (7, 9),
        (7, 10),
        (7, 11),
        (7, 12),
    ]
}
POTSDAM_TEST = {
    f"{a}_{b}"
    for a, b in [
        (2, 13),
        (2, 14),
        (3, 13),
        (3, 14),
        (4, 13),
        (4, 14),
        (4, 15),
        (5, 13),
        (5, 14),
        (5, 15),
        (6, 13),
        (6, 14),
        (6, 15),
        (7, 13),
    ]
}

#: Tile size and stride of each preset (the papers' settings).
PRESETS: dict[str, tuple[int, int]] = {
    "potsdam": (512, 256),
    "dfc2023": (512, 512),
    "deliver": (1024, 1024),
}


def _dirs(src: Path, depth: int = 3) -> list[Path]:
    out, frontier = [], [src]
    for _ in range(depth):
        nxt = [
            d
            for f in frontier
            for d in sorted(f.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        ]
        out += nxt
        frontier = nxt
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_EXT)


def _split_of(path: Path, src: Path) -> str | None:
    for part in path.relative_to(src).parts:
        low = part.lower()
        if low in {"train", "training"}:
            return "train"
        if low in {"val", "valid", "validation"}:
            return "val"
        if low in {"test", "testing"}:
            return "test"
    return None


def potsdam(src: Path, label_field: str) -> Plan:
    dirs = {d.name.lower(): d for d in _dirs(src, 2)}
    notes: list[str] = []

    def pick(*names: str) -> Path | None:
        for n in names:
            for key, d in dirs.items():
                if key == n.lower():
                    return d
        return None

    rgb_dir, rgbir_dir, irrg_dir = pick("2_Ortho_RGB"), pick("4_Ortho_RGBIR"), pick("3_Ortho_IRRG")
    dsm_dir = pick("1_DSM_normalisation", "1_DSM_normalization", "1_DSM")
    label_dir = pick("5_Labels_all", "5_Labels_for_participants", "5_Labels_all_noBoundary")
    if rgb_dir is None and rgbir_dir is None:
        raise UsageError("potsdam preset: no 2_Ortho_RGB or 4_Ortho_RGBIR folder found", src)
    sid = re.compile(r"(\d+)_(\d+)")

    def by_scene(folder: Path | None) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in _files(folder) if folder else []:
            m = sid.search(p.stem)
            if m:
                out.setdefault(f"{int(m.group(1))}_{int(m.group(2))}", p)
        return out

    sources: dict[str, tuple[dict[str, Path], tuple[int, ...] | None]] = {}
    if rgb_dir is not None:
        sources["rgb"] = (by_scene(rgb_dir), None)
        notes.append(f"rgb <- {rgb_dir.relative_to(src)}")
    else:
        sources["rgb"] = (by_scene(rgbir_dir), (1, 2, 3))
        notes.append(f"rgb <- {rgbir_dir.relative_to(src)} bands 1-3")  # type: ignore[union-attr]
    if rgbir_dir is not None:
        sources["nir"] = (by_scene(rgbir_dir), (4,))
        notes.append(f"nir <- {rgbir_dir.relative_to(src)} band 4")
    elif irrg_dir is not None:
        sources["nir"] = (by_scene(irrg_dir), (1,))
        notes.append(f"nir <- {irrg_dir.relative_to(src)} band 1")
    if dsm_dir is not None:
        sources["dsm"] = (by_scene(dsm_dir), (1,))
        notes.append(f"dsm <- {dsm_dir.relative_to(src)}")
    labels = by_scene(label_dir)
    if label_dir is not None:
        notes.append(f"labels <- {label_dir.relative_to(src)} (Potsdam colours)")
    scenes = []
    for key in sorted(sources["rgb"][0], key=lambda k: tuple(int(x) for x in k.split("_"))):
        mods = {
            n: ModalitySource(n, files[key], bands, same_grid_as_reference=(n != "rgb"))
            for n, (files, bands) in sources.items()
            if key in files
        }
        split = "train" if key in POTSDAM_TRAIN else "test" if key in POTSDAM_TEST else None
        lab = label_source_for(labels[key], label_field, POTSDAM) if key in labels else None
        scenes.append(Scene(f"potsdam_{key}", mods, lab, split))
    if not scenes:
        raise UsageError(
            f"potsdam preset: no tiles named like top_potsdam_2_10_* in {rgb_dir or rgbir_dir}", src
        )
    return Plan(
        src,
        "potsdam",
        scenes,
        list(sources),
        optical={"rgb", "nir"},
        palette=POTSDAM,
        notes=notes,
        tile=PRESETS["potsdam"],
    )


def _grouped(
    src: Path, roles: dict[str, tuple[str, ...]]
) -> tuple[dict[str, list[Path]], list[str]]:
    """Folders per role: a folder is taken for a role when its name contains a role token."""
    found: dict[str, list[Path]] = {r: [] for r in roles}
    notes = []
    for d in _dirs(src, 4):
        low = d.name.lower()
        for role, tokens in roles.items():
            if any(low == t or low.startswith(t) or low.endswith(t) for t in tokens) and _files(d):
                found[role].append(d)
                notes.append(f"{role} <- {d.relative_to(src)}")
                break
    return found, notes


def dfc2023(src: Path, label_field: str) -> Plan:
    found, notes = _grouped(
        src, {"rgb": ("rgb",), "sar": ("sar",), "dsm": ("dsm", "height", "ndsm")}
    )
    if not found["rgb"]:
        raise UsageError("dfc2023 preset: no rgb folder found", src)
    coco = [p for p in sorted(src.rglob("*.json")) if p.name != SAMPLE_MARKER]
    scenes = []
    for rgb_dir in found["rgb"]:
        for p in _files(rgb_dir):
            mods = {"rgb": ModalitySource("rgb", p)}
            for role in ("sar", "dsm"):
                for d in found[role]:
                    if d.parent == rgb_dir.parent:
                        twin = next(
                            (q for q in _files(d) if q.stem.lower() == p.stem.lower()), None
                        )
                        if twin:
                            mods[role] = ModalitySource(role, twin)
            scenes.append(Scene(p.stem, mods, None, _split_of(p, src)))
    if coco:
        notes.append(
            f"labels <- {', '.join(str(c.relative_to(src)) for c in coco)} (MS-COCO buildings)"
        )
        labelled = set()
        for c in coco:
            data = read_coco_json(c)
            labelled |= {
                Path(str(im.get("file_name", ""))).stem.lower() for im in data.get("images", [])
            }
        source = LabelSource(tuple(coco), "coco", label_field)
        scenes = [
            Scene(s.name, s.modalities, source if s.name.lower() in labelled else None, s.split)
            for s in scenes
        ]
    return Plan(
        src,
        "dfc2023",
        scenes,
        ["rgb", "sar", "dsm"],
        optical={"rgb"},
        palette=DFC2023,
        notes=notes,
        tile=PRESETS["dfc2023"],
    )


def deliver(src: Path, label_field: str) -> Plan:
    roles = {
        "rgb": ("img", "rgb"),
        "depth": ("depth",),
        "event": ("event",),
        "lidar": ("lidar",),
        "labels": ("semantic",),
    }
    tops = {d.name.lower(): d for d in sorted(src.iterdir()) if d.is_dir()}
    chosen = {r: next((tops[t] for t in ts if t in tops), None) for r, ts in roles.items()}
    if chosen["rgb"] is None:
        raise UsageError("deliver preset: no img/ folder found", src)
    notes = [f"{r} <- {d.name}/" for r, d in chosen.items() if d is not None]
    tokens = {
        "rgb": "rgb",
        "depth": "depth",
        "event": "event",
        "lidar": "lidar",
        "labels": "semantic",
    }
    index = {
        r: {
            (scene_key(p, tokens[r]), p.parent.relative_to(d)): p
            for p in sorted(d.rglob("*"))
            if p.suffix.lower() in RASTER_EXT
        }
        for r, d in chosen.items()
        if d is not None
    }
    value_map = {0: 255, **{k + 1: k for k in range(len(DELIVER))}}
    scenes = []
    for (key, rel), p in sorted(index["rgb"].items()):
        mods = {
            r: ModalitySource(r, index[r][(key, rel)])
            for r in ("rgb", "depth", "event", "lidar")
            if r in index and (key, rel) in index[r]
        }
        lab = index.get("labels", {}).get((key, rel))
        label = (
            LabelSource((lab,), "index", label_field, value_map=tuple(sorted(value_map.items())))
            if lab
            else None
        )
        scenes.append(
            Scene(f"{'_'.join(rel.parts)}_{key}".strip("_"), mods, label, _split_of(p, src))
        )
    names = [r for r in ("rgb", "depth", "event", "lidar") if chosen.get(r) is not None]
    return Plan(
        src,
        "deliver",
        scenes,
        names,
        optical={"rgb"},
        palette=DELIVER,
        notes=notes,
        tile=PRESETS["deliver"],
    )


#: ``--preset`` name -> reader ``(src, label_field) -> Plan``.
PRESET_READERS: dict[str, Callable[[Path, str], Plan]] = {
    "potsdam": potsdam,
    "dfc2023": dfc2023,
    "deliver": deliver,
}
