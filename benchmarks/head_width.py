"""What the all-MLP head's width E costs, next to the backbone, in training and evaluation.

The head runs at 1/4 resolution, so its fuse layer costs 4·E²·(H/4)·(W/4) MACs. Training
runs it twice (SGF and MAS branches) and ``sgma evaluate`` once per modality subset
(2^M - 1), while the backbone runs once per modality either way. This script counts MACs
(PVT-v2-b2, M = 3, K = 6, 512², meta device, no weights) for E = 128 ... 768, times the
head and one single-modality backbone pass on this machine at ``--time-size``, and prints
the ratios that set sgma's default (E = 256). Usage: ``python benchmarks/head_width.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.config.model import ModalitySpec, SGMAConfig  # noqa: E402
from sgma_cli.engine.profile import profile_model  # noqa: E402
from sgma_cli.model.backbones import create_backbone  # noqa: E402
from sgma_cli.model.head import MLPDecoder  # noqa: E402

MODALITIES = (ModalitySpec("rgb", 3), ModalitySpec("dsm", 1), ModalitySpec("nir", 1))
WIDTHS = (128, 256, 512, 768)
CHANNELS = (64, 128, 320, 512)


def best_time(fn, repeats: int = 3) -> float:
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-size", type=int, default=256, help="input size for the CPU timings")
    args = parser.parse_args()
    s = args.time_size
    backbone = create_backbone("pvt_v2_b2").eval()
    x = torch.randn(1, 3, s, s)
    backbone_s = best_time(lambda: backbone(x))
    feats = [torch.randn(1, c, s // st, s // st) for c, st in zip(CHANNELS, (4, 8, 16, 32))]
    print(
        f"PVT-v2-b2, M = 3, K = 6. MACs at 512²; times at {s}² on {torch.get_num_threads()} "
        f"CPU threads"
    )
    print(
        f"{'E':>4} {'head params':>12} {'head GMACs':>11} {'head/backbone pass':>19} "
        f"{'train fwd (GMACs)':>18} {'eval 7 subsets / full':>22} {'head ms':>8} "
        f"{'time head/bb':>13}"
    )
    for width in WIDTHS:
        report = profile_model(SGMAConfig(MODALITIES, 6, "pvt_v2_b2", head_dim=width), size=512)
        bb, fu, hd = report.macs["backbone"], report.macs["fusion"], report.macs["head"]
        single = bb / 3
        train = bb + 2 * fu + 2 * hd  # SGF + MAS (the MAS fuse is about as costly as SGF's)
        full = bb + fu + hd
        evaluate = bb + 7 * (fu + hd)  # upper bound: fuse of every subset costs a full fuse
        head = MLPDecoder(CHANNELS, 6, width).eval()
        head_s = best_time(lambda head=head: head(feats))
        print(
            f"{width:>4} {report.params['head'] / 1e6:>11.2f}M {hd / 1e9:>11.2f} "
            f"{hd / single:>18.2f}x "
            f"{train / 1e9:>18.1f} {evaluate / full:>21.2f}x {head_s * 1e3:>8.1f} "
            f"{head_s / backbone_s:>12.2f}x"
        )
    print(f"backbone single pass at {s}²: {backbone_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
