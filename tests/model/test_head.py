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


def test_folded_equals_segformer_composition() -> None:
    torch.manual_seed(0)
    head = MLPDecoder([8, 16, 32, 64], num_classes=5, embed_dim=24).eval()
    with torch.no_grad():
        head.norm.running_mean.uniform_(-1, 1)
        head.norm.running_var.uniform_(0.5, 2)
    feats = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    torch.testing.assert_close(head(feats), head.forward_unfolded(feats), atol=1e-5, rtol=1e-5)


def test_folded_gradients_match() -> None:
    torch.manual_seed(0)
    head = MLPDecoder([8, 16, 32, 64], num_classes=3, embed_dim=12, dropout=0.0)
    feats = [torch.randn(2, c, 8 // 2**i, 8 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    head(feats).square().mean().backward()
    folded = {n: p.grad.clone() for n, p in head.named_parameters()}
    head.zero_grad()
    head.forward_unfolded(feats).square().mean().backward()
    for name, param in head.named_parameters():
        torch.testing.assert_close(folded[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)
