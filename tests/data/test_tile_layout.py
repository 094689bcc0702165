"""Tests for sgma_cli.data.tile_layout."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from sgma_cli.data.tile_layout import (
    assign_splits,
    axis_starts,
    blocks,
    parse_split,
    tile_count,
    tile_windows,
)
from sgma_cli.errors import UsageError


class TestTiles:
    def test_edge_tile_flush(self) -> None:
        assert axis_starts(100, 32, 32) == [0, 32, 64, 68]
        assert axis_starts(96, 32, 16) == [0, 16, 32, 48, 64]
        with pytest.raises(ValueError, match="larger"):
            axis_starts(20, 32, 32)

    @pytest.mark.parametrize(
        ("w", "h", "tile", "stride"), [(100, 70, 32, 32), (96, 96, 32, 16), (64, 40, 40, 7)]
    )
    def test_cover_and_cores_partition(self, w: int, h: int, tile: int, stride: int) -> None:
        cover = np.zeros((h, w), int)
        owned = np.zeros((h, w), int)
        for spec in tile_windows(Window(0, 0, w, h), tile, stride):
            r, c = int(spec.window.row_off), int(spec.window.col_off)
            assert spec.window.width == spec.window.height == tile
            cover[r : r + tile, c : c + tile] += 1
            k = spec.core
            owned[
                r + int(k.row_off) : r + int(k.row_off + k.height),
                c + int(k.col_off) : c + int(k.col_off + k.width),
            ] += 1
        assert (cover >= 1).all()  # no pixel lost
        assert (owned == 1).all()  # statistics count every pixel once

    @pytest.mark.parametrize(
        ("w", "h", "tile", "stride"),
        [(100, 70, 32, 32), (96, 96, 32, 16), (64, 40, 40, 7), (5, 9, 1, 3), (17, 8, 8, 8)],
    )
    def test_count_without_listing(self, w: int, h: int, tile: int, stride: int) -> None:
        assert tile_count(w, h, tile, stride) == len(tile_windows(Window(0, 0, w, h), tile, stride))
        assert tile_count(10**5, 10**5, 512, 256) == 390**2  # 389 strides + the edge tile

    def test_blocks(self) -> None:
        bl = blocks(1024, 1024, 128, 64)
        assert len(bl) == 16 and all(b.width >= 192 for b in bl)
        assert len(blocks(1024, 1024, 256, 128)) == 4
        assert len(blocks(1024, 1024, 256, 256)) == 16
        assert sum(b.width * b.height for b in blocks(300, 200, 64)) == 300 * 200


class TestSplits:
    def test_parse(self) -> None:
        assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
        for bad in ("0.8,0.1", "0.5,0.5,0.5", "a,b,c", "0,0,0", "1.2,-0.1,-0.1"):
            with pytest.raises(UsageError, match="--split"):
                parse_split(bad)

    def test_parse_without_training_share(self) -> None:
        assert parse_split("0,0,1") == (0.0, 0.0, 1.0)
        assert parse_split("0,0.5,0.5") == (0.0, 0.5, 0.5)

    def test_assign_without_training_share(self) -> None:
        assert assign_splits([1.0] * 5, (0.0, 0.0, 1.0), seed=3) == ["test"] * 5
        out = assign_splits([1.0] * 16, (0.0, 0.5, 0.5), seed=0)
        assert out.count("val") == 8 and out.count("test") == 8 and "train" not in out
        assert assign_splits([1.0, 1.0], (0.0, 0.5, 0.5)).count("val") == 1

    def test_assign_keeps_the_training_share_order(self) -> None:
        # with a training share, train takes the rest exactly as before (same units, same seed)
        out = assign_splits([float(i + 1) for i in range(10)], (0.6, 0.2, 0.2), seed=4)
        assert out == [
            "test", "test", "val", "train", "train", "train", "train", "test", "train", "val"
        ]  # fmt: skip

    def test_assign(self) -> None:
        out = assign_splits([1.0] * 16, (0.8, 0.1, 0.1), seed=0)
        assert out.count("val") == 2 and out.count("test") == 2 and out.count("train") == 12
        assert out == assign_splits([1.0] * 16, (0.8, 0.1, 0.1), seed=0)
        assert assign_splits([1.0] * 3, (0.8, 0.1, 0.1)).count("train") == 1
        assert assign_splits([1.0], (1.0, 0.0, 0.0)) == ["train"]
        with pytest.raises(UsageError, match="cannot split 2"):
            assign_splits([1.0, 1.0], (0.8, 0.1, 0.1))
