"""All-MLP decoder: 4 scales in, logits at the finest scale out."""

from __future__ import annotations

import torch

from sgma_cli.model.head import MLPDecoder


def test_shapes_and_width() -> None:
    head = MLPDecoder([8, 16, 32, 64], num_classes=5, embed_dim=24).eval()
    feats = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    assert head(feats).shape == (2, 5, 16, 16)
    assert head.fuse.in_channels == 4 * 24


def test_cost_grows_with_width() -> None:
    small = sum(p.numel() for p in MLPDecoder([64, 128, 320, 512], 6, 256).parameters())
    large = sum(p.numel() for p in MLPDecoder([64, 128, 320, 512], 6, 768).parameters())
    assert large > 5 * small
