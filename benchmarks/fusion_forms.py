"""Literal vs efficient SGF: MACs and time at 256² and 512², M = 3, K = 6, PVT-v2-b2 widths.

The literal form follows the paper's equations step by step (tests/model/_reference.py:
prototype queries repeated and projected at every pixel, standard multi-head attention
per pixel). The efficient form is sgma's model (prototype queries projected once per
sample, the K outputs averaged before the output projection). Both run on the same
random backbone-like features with the same weights, side by side in one run; the script
prints the ratios. Usage: ``python benchmarks/fusion_forms.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.model.sgf import SemanticGuidedFusion  # noqa: E402
from tests.model._reference import reference_sgf  # noqa: E402

CHANNELS = (64, 128, 320, 512)  # PVT-v2-b2
STRIDES = (4, 8, 16, 32)
M, K = 3, 6


def efficient(fusions, feats, available):
    with torch.no_grad():
        out = []
        for fusion, f, a in zip(fusions, feats, available):
            cache = fusion(f, (0, 1, 2), a)
            out.append(
                fusion.fuse(
                    cache, torch.ones(f.shape[0], M, dtype=torch.bool), tuple(f.shape[-2:])
                )[0]
            )
        return out


def literal(fusions, feats, available):
    return [
        reference_sgf(fusion, f, (0, 1, 2), a, [0, 1, 2])[0]
        for fusion, f, a in zip(fusions, feats, available)
    ]


def macs(fn, *args) -> float:
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 2


def seconds(fn, *args, repeats: int) -> float:
    fn(*args)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    torch.manual_seed(0)
    fusions = [SemanticGuidedFusion(c, M, K).eval() for c in CHANNELS]
    print(
        f"SGF forms, M = {M}, K = {K}, channels {CHANNELS}, batch 1, {torch.get_num_threads()} "
        f"CPU threads"
    )
    print(
        f"{'size':>6} {'literal GMACs':>14} {'efficient GMACs':>16} {'MACs ratio':>11} "
        f"{'literal ms':>11} {'efficient ms':>13} {'speed-up':>9} {'max |diff|':>11}"
    )
    for size in args.sizes:
        feats = [torch.randn(1, M, c, size // s, size // s) for c, s in zip(CHANNELS, STRIDES)]
        available = [torch.ones(1, M, size // s, size // s, dtype=torch.bool) for s in STRIDES]
        lit_macs, eff_macs = (
            macs(literal, fusions, feats, available),
            macs(efficient, fusions, feats, available),
        )
        lit_s = seconds(literal, fusions, feats, available, repeats=args.repeats)
        eff_s = seconds(efficient, fusions, feats, available, repeats=args.repeats)
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(
                literal(fusions, feats, available), efficient(fusions, feats, available)
            )
        )
        print(
            f"{size:>5}² {lit_macs / 1e9:>14.2f} {eff_macs / 1e9:>16.2f} "
            f"{lit_macs / eff_macs:>10.2f}x "
            f"{lit_s * 1e3:>11.0f} {eff_s * 1e3:>13.0f} {lit_s / eff_s:>8.2f}x {diff:>11.1e}"
        )


if __name__ == "__main__":
    main()
