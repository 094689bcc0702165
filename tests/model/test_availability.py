"""Availability at feature scales: per modality, any pixel seen counts."""

from __future__ import annotations

import torch

from sgma_cli.model.availability import downsample_availability


def test_cell_counts_when_any_pixel_was_seen() -> None:
    mask = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    mask[0, 0, 0, 0] = True  # one pixel of the first 4x4 cell
    mask[0, 1, 4:, :] = True  # the bottom half
    down = downsample_availability(mask, (2, 2))
    assert down[0, 0].tolist() == [[True, False], [False, False]]
    assert down[0, 1].tolist() == [[False, False], [True, True]]


def test_each_modality_alone() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 3, 16, 16, generator=g) > 0.7
    together = downsample_availability(mask, (4, 4))
    alone = torch.cat(
        [downsample_availability(mask[:, m : m + 1], (4, 4)) for m in range(3)], dim=1
    )
    assert torch.equal(together, alone)


def test_same_size_is_identity() -> None:
    mask = torch.rand(1, 2, 4, 4) > 0.5
    assert torch.equal(downsample_availability(mask, (4, 4)), mask)
