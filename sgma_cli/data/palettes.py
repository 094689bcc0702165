"""Class lists and display colours of the datasets ``sgma prepare`` knows.

The ISPRS Potsdam scheme (Rottensteiner et al., 2012) is also the scheme of
``sgma sample``; DFC2023 track 2 labels buildings only (Persello et al., 2023);
DELIVER has 25 CARLA classes (Zhang et al., CVPR 2023, "CMNeXt"). A palette is an
ordered list of ``(name, (r, g, b))``: the index in the list is the class index.
"""

from __future__ import annotations

import json
from pathlib import Path

from sgma_cli.errors import UsageError

__all__ = ["Palette", "POTSDAM", "DFC2023", "DELIVER", "PALETTES", "load_palette", "default_colors"]

Palette = list[tuple[str, tuple[int, int, int]]]

POTSDAM: Palette = [
    ("impervious_surfaces", (255, 255, 255)),
    ("building", (0, 0, 255)),
    ("low_vegetation", (0, 255, 255)),
    ("tree", (0, 255, 0)),
    ("car", (255, 255, 0)),
    ("clutter", (255, 0, 0)),
]

DFC2023: Palette = [("background", (0, 0, 0)), ("building", (255, 0, 0))]

_DELIVER_NAMES = (
    "building fence other pedestrian pole roadline road sidewalk vegetation cars wall "
    "trafficsign sky ground bridge railtrack groundrail trafficlight static dynamic water "
    "terrain twowheeler bus truck"
).split()


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct, deterministic display colours (golden-ratio hue walk)."""
    colors = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        k = [(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6]
        rgb = tuple(int(round(255 * (1 - 0.8 * max(0.0, min(x, 4 - x, 1.0))))) for x in k)
        colors.append((rgb[0], rgb[1], rgb[2]))
    return colors


DELIVER: Palette = list(zip(_DELIVER_NAMES, default_colors(len(_DELIVER_NAMES))))

PALETTES: dict[str, Palette] = {"potsdam": POTSDAM, "dfc2023": DFC2023, "deliver": DELIVER}


def load_palette(spec: str) -> Palette:
    """A palette by preset name (``potsdam``) or from a JSON file.

    The file holds ``[["name", [r, g, b]], ...]`` or ``{"name": [r, g, b], ...}`` in
    class-index order.

    Raises:
        UsageError: unknown name, unreadable file or malformed entries.
    """
    if spec.lower() in PALETTES:
        return list(PALETTES[spec.lower()])
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--palette {spec!r} is neither a known palette ({', '.join(PALETTES)}) nor a JSON file"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read palette: {err.strerror}", path) from None
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deeply
        reason = " ".join(str(err).split())[:120] or "nested too deeply"
        raise UsageError(f"cannot read palette: {reason}", path) from None
    items = list(raw.items()) if isinstance(raw, dict) else raw
    palette: Palette = []
    try:
        for name, color in items:
            palette.append((str(name), _rgb(color)))
    except (TypeError, ValueError):
        raise UsageError(
            'palette entries must be ["name", [r, g, b]] with r, g, b whole numbers 0-255', path
        ) from None
    if len(palette) < 2:
        raise UsageError(f"palette needs at least 2 classes, got {len(palette)}", path)
    names = [n for n, _ in palette]
    if not all(n.strip() for n in names) or len(set(names)) != len(names):
        raise UsageError("palette class names must be non-empty and distinct", path)
    return palette


def _rgb(color: object) -> tuple[int, int, int]:
    """``[r, g, b]`` of whole numbers 0-255 (``ValueError``/``TypeError`` otherwise)."""
    if not isinstance(color, list | tuple) or len(color) != 3:
        raise ValueError(color)
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in color):
        raise TypeError(color)
    if not all(0 <= c <= 255 and c == int(c) for c in color):  # NaN, inf, 1.5, 300: refused
        raise ValueError(color)
    r, g, b = (int(c) for c in color)
    return (r, g, b)
