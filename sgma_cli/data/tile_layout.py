"""Tile windows over a scene and leak-free train/val/test splits.

Tiles start every ``stride`` pixels; the last tile of a row or column is moved back to
end on the scene edge, so no pixel is lost and no tile is padded. Each tile also owns a
*core*, the pixels up to the next tile's start, and the cores partition the area: the
statistics count every pixel once even when tiles overlap.

With several scenes, whole scenes go to a split. With one scene, the scene is cut into
a grid of blocks (each at least one tile wide); blocks go to splits and are tiled on
their own, so no tile of one split overlaps a tile of another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from sgma_cli.errors import UsageError

__all__ = ["TileSpec", "axis_starts", "tile_windows", "blocks", "assign_splits", "parse_split"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class TileSpec:
    """One tile of a scene.

    Attributes:
        window: pixels of the scene's reference grid.
        core: the sub-window of ``window`` (tile coordinates) this tile owns for statistics.
        row: tile row in its block grid; col: tile column (for ids).
    """

    window: Window
    core: Window
    row: int
    col: int


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> fractions; they must be >= 0 and sum to 1 (within 1e-6).

    Any split may be 0, training included: ``0,0,1`` makes an evaluation-only dataset
    (``sgma train`` refuses a dataset without training tiles).

    Raises:
        UsageError: not three numbers, a negative one, or a sum other than 1.
    """
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--split {text!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(parts) != 3:
        raise UsageError(
            f"--split {text!r}: expected three fractions train,val,test, got {len(parts)}"
        )
    if not all(0 <= p <= 1 for p in parts) or abs(sum(parts) - 1) > 1e-6:  # NaN fails too
        raise UsageError(
            f"--split {text!r}: fractions must be >= 0 and sum to 1 (sum is {sum(parts):g})"
        )
    return (parts[0], parts[1], parts[2])


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis of ``length`` pixels; the last one ends on the edge."""
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the extent {length}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_count(width: int, height: int, tile: int, stride: int) -> int:
    """How many tiles :func:`tile_windows` gives for a ``width`` x ``height`` area, counted
    without listing them (an area of 10^5 x 10^5 px at stride 1 would need 10^10 entries)."""

    def along(length: int) -> int:
        return (length - tile) // stride + 1 + ((length - tile) % stride > 0)

    return along(width) * along(height)


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    ends = [*starts[1:], length]
    return [(0, min(e, s + tile) - s) for s, e in zip(starts, ends)]


def tile_windows(area: Window, tile: int, stride: int) -> list[TileSpec]:
    """Tiles covering ``area`` (a window of the scene) with their cores, row-major."""
    w, h = int(area.width), int(area.height)
    xs, ys = axis_starts(w, tile, stride), axis_starts(h, tile, stride)
    cx, cy = _cores(xs, tile, w), _cores(ys, tile, h)
    out = []
    for r, (y, (c0y, c1y)) in enumerate(zip(ys, cy)):
        for c, (x, (c0x, c1x)) in enumerate(zip(xs, cx)):
            out.append(
                TileSpec(
                    Window(int(area.col_off) + x, int(area.row_off) + y, tile, tile),
                    Window(c0x, c0y, c1x - c0x, c1y - c0y),
                    r,
                    c,
                )
            )
    return out


def _axis_blocks(length: int, n: int, minimum: int) -> list[tuple[int, int]]:
    n = max(1, min(n, length // minimum))
    edges = [round(i * length / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]


def blocks(
    width: int, height: int, tile: int, stride: int | None = None, per_axis: int = 4
) -> list[Window]:
    """A grid of up to ``per_axis`` x ``per_axis`` blocks for a spatial split.

    Blocks are at least ``tile + stride`` pixels wide and high when the scene allows two
    blocks per axis that size (so overlapping tiles still overlap inside a block), else at
    least ``tile``.
    """
    minimum = tile
    if stride is not None and stride < tile and min(width, height) >= 2 * (tile + stride):
        minimum = tile + stride
    return [
        Window(x0, y0, x1 - x0, y1 - y0)
        for y0, y1 in _axis_blocks(height, per_axis, minimum)
        for x0, x1 in _axis_blocks(width, per_axis, minimum)
    ]


def assign_splits(
    sizes: list[float], fractions: tuple[float, float, float], seed: int = 0
) -> list[str]:
    """Give each unit (scene or block, with its area) a split, in a seeded random order.

    Every split with a non-zero fraction gets at least one unit; the rest follow the
    fractions by area. The first split with a non-zero fraction (train, unless it is 0)
    takes what the others leave.

    Raises:
        UsageError: fewer units than splits with a non-zero fraction.
    """
    wanted = [s for s, f in zip(SPLIT_NAMES, fractions) if f > 0]
    if not wanted:
        raise ValueError(f"split fractions {fractions} are all 0")
    if len(sizes) < len(wanted):
        raise UsageError(
            f"cannot split {len(sizes)} scene(s)/block(s) into {', '.join(wanted)}: "
            "use a smaller --tile, more scenes, or --split 1,0,0"
        )
    order = np.random.default_rng(seed).permutation(len(sizes))
    total = float(sum(sizes))
    out = [""] * len(sizes)
    # the other splits first, by target area, at least one unit each; `rest` takes the rest
    rest = wanted[0]
    cursor = 0
    for name, frac in zip(SPLIT_NAMES[::-1], fractions[::-1]):
        if name == rest or frac == 0:
            continue
        taken = 0.0
        while cursor < len(order) - 1 and (
            taken == 0 or taken + sizes[order[cursor]] / 2 <= frac * total
        ):
            out[order[cursor]] = name
            taken += sizes[order[cursor]]
            cursor += 1
    for i in order[cursor:]:
        out[i] = rest
    return out
