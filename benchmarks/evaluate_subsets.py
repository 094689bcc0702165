"""What evaluating all 2^M - 1 modality subsets costs, relative to one full-modality pass.

Same tiles, same model (M = 3: rgb, dsm, sar; K = 6), one run, three ways:

* full:   one forward with all modalities (the unit: ratios are divided by it);
* cached: ``sgma_cli.engine.evaluate.scoring.evaluate_subsets`` on all 7 subsets (one ``encode``
          per batch, then ``fuse`` + head per subset, several subsets per head call);
* naive:  one full forward per subset, feeding only that subset's images.

Each path includes argmax and confusion-matrix accumulation. Ratios are medians over
``--repeats`` rounds that time the three paths back to back, on process CPU time (robust
to other load on a shared machine when run with 1 thread; wall time printed beside).
Next to them, the ideal ratio the MACs imply,
``(encode of M modalities + 7 x (fuse + head)) / (encode + fuse + head)``, counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions only, as
``sgma profile``; fused attention is switched off so timm's attention is countable), and
how the head width ``head_dim`` moves that ideal.

Goal (issue 6): cached <= 1.15 x ideal, and naive / cached >= 0.9 x (naive MACs / cached MACs).

Usage: ``.venv/bin/python benchmarks/evaluate_subsets.py [--backbone pvt_v2_b0] [--size 256]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm.layers
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.config.model import ModalitySpec, SGMAConfig  # noqa: E402
from sgma_cli.engine.evaluate.scoring import evaluate_subsets  # noqa: E402
from sgma_cli.engine.metrics import confusion_matrix  # noqa: E402
from sgma_cli.engine.speed import compile_model, use_encode_strategy  # noqa: E402
from sgma_cli.engine.subsets import all_subsets  # noqa: E402
from sgma_cli.engine.weights import build_model  # noqa: E402
from sgma_cli.model.sgma import SGMA  # noqa: E402

MODALITIES = (ModalitySpec("rgb", 3), ModalitySpec("dsm", 1), ModalitySpec("sar", 1))
K = 6
CPU = torch.device("cpu")


def make_batches(n: int, batch: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random normalised tiles; SAR covers the left 60 % of every second tile."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        images = {m.name: torch.randn(batch, m.bands, size, size, generator=g) for m in MODALITIES}
        mask = torch.ones(batch, len(MODALITIES), size, size, dtype=torch.bool)
        if i % 2:
            mask[:, 2, :, int(0.6 * size) :] = False
        label = torch.randint(0, K, (batch, size, size), generator=g)
        out.append({"image": images, "mask": mask, "label": label})
    return out


def build(backbone: str, head_dim: int, seed: int = 0) -> SGMA:
    torch.manual_seed(seed)
    config = SGMAConfig(modalities=MODALITIES, num_classes=K, backbone=backbone, head_dim=head_dim)
    return build_model(config).eval()  # type: ignore[return-value]


def full_pass(model: SGMA, batches: list[dict[str, Any]]) -> None:
    for b in batches:
        out = model(b["image"], b["mask"])
        confusion_matrix(out.logits.argmax(1), b["label"], K, 255, out.valid)


def naive(model: SGMA, batches: list[dict[str, Any]], subsets: list[tuple[str, ...]]) -> None:
    for s in subsets:
        for b in batches:
            out = model({n: b["image"][n] for n in s}, b["mask"])
            confusion_matrix(out.logits.argmax(1), b["label"], K, 255, out.valid)


def cached(model: SGMA, batches: list[dict[str, Any]], subsets: list[tuple[str, ...]]) -> None:
    evaluate_subsets(model, batches, subsets, device=CPU, precision="fp32")


def flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def mac_ratios(
    model: SGMA, batch: dict[str, Any], subsets: list[tuple[str, ...]]
) -> dict[str, float]:
    """Ideal (cached) and naive cost over one full pass, from counted FLOPs, plus the parts."""
    images, mask = batch["image"], batch["mask"]
    with torch.no_grad():
        enc = model.encode(images, mask)
        fused = {s: model.fuse(enc, list(s)) for s in subsets}
    encode = flops(lambda: model.encode(images, mask))
    backbone_one = flops(
        lambda: model.backbone(torch.randn(images["rgb"].shape[0], 3, *images["rgb"].shape[-2:]))
    )
    fuse = {s: flops(lambda s=s: model.fuse(enc, list(s))) for s in subsets}
    head = flops(lambda: model.decode([fused[subsets[0]]], enc.image_size))
    encode_of = {
        s: flops(lambda s=s: model.encode({n: images[n] for n in s}, mask)) for s in subsets
    }
    full = encode + fuse[subsets[0]] + head
    ideal = encode + sum(fuse.values()) + len(subsets) * head
    naive_macs = sum(encode_of[s] + fuse[s] + head for s in subsets)
    return {
        "ideal": ideal / full,
        "naive": naive_macs / full,
        "backbone_share": len(MODALITIES) * backbone_one / full,
        "encode_share": encode / full,
        "fuse_share": fuse[subsets[0]] / full,
        "head_share": head / full,
        "full_gmacs": full / 2e9,
    }


def _encode_as(model: SGMA, strategy: str, images: dict[str, Any], mask: Any) -> None:
    """One encode with the backbone fed ``strategy``; the model's own strategy is kept."""
    kept = model.encode_strategy
    model.encode_strategy = strategy  # type: ignore[assignment]
    try:
        model.encode(images, mask)
    finally:
        model.encode_strategy = kept


def time_shares(model: SGMA, batch: dict[str, Any], repeats: int) -> dict[str, float]:
    """CPU-time share of each part of one full pass (encode, fuse, head, argmax + confusion),
    and the time of a packed encode over a per-modality one."""
    images, mask, label = batch["image"], batch["mask"], batch["label"]
    with torch.no_grad():
        enc = model.encode(images, mask)
        fused = model.fuse(enc, None)
        (logits,) = model.decode([fused], enc.image_size)
        parts: dict[str, Callable[[], Any]] = {
            "encode": lambda: model.encode(images, mask),
            "fuse": lambda: model.fuse(enc, None),
            "head": lambda: model.decode([fused], enc.image_size),
            "metrics": lambda: confusion_matrix(logits.argmax(1), label, K, 255, fused.valid),
            "packed": lambda: _encode_as(model, "packed", images, mask),
            "per_modality": lambda: _encode_as(model, "per_modality", images, mask),
        }
        took = {k: [] for k in parts}
        for _ in range(repeats):
            for k, fn in parts.items():
                start = time.process_time()
                fn()
                took[k].append(time.process_time() - start)
    med = {k: statistics.median(v) for k, v in took.items()}
    packed, per_modality = med.pop("packed"), med.pop("per_modality")
    total = sum(med.values())
    return {**{k: v / total for k, v in med.items()}, "packed_over_singles": packed / per_modality}


def time_paths(
    runs: dict[str, Callable[[], None]], repeats: int
) -> tuple[dict[str, dict[str, float]], float]:
    """Median ratios to ``full`` per clock (cpu, wall) over ``repeats`` rounds; best full wall s.

    Each round times the paths back to back and keeps their ratios to "full"; the median
    over rounds resists other load on a shared machine. Process CPU time is the primary
    clock (with 1 thread it counts this process's work only); wall time beside it.
    """
    ratios: dict[str, dict[str, list[float]]] = {
        clock: {k: [] for k in runs if k != "full"} for clock in ("cpu", "wall")
    }
    full_times: list[float] = []
    with torch.no_grad():
        for fn in runs.values():  # warm-up (and, compiled, the compilation)
            fn()
        for _ in range(repeats):
            took: dict[str, dict[str, float]] = {"cpu": {}, "wall": {}}
            for name, fn in runs.items():
                cpu, wall = time.process_time(), time.perf_counter()
                fn()
                took["cpu"][name] = time.process_time() - cpu
                took["wall"][name] = time.perf_counter() - wall
            full_times.append(took["wall"]["full"])
            for clock, per in ratios.items():
                for name in per:
                    per[name].append(took[clock][name] / took[clock]["full"])
    med = {clock: {k: statistics.median(v) for k, v in r.items()} for clock, r in ratios.items()}
    return med, min(full_times)


def fuse_seconds(
    model: SGMA, batch: dict[str, Any], subsets: list[tuple[str, ...]], n: int
) -> float:
    """Median CPU seconds of fusing all ``subsets`` of one encoded batch."""
    with torch.no_grad():
        enc = model.encode(batch["image"], batch["mask"])
        for s in subsets:  # warm-up
            model.fuse(enc, list(s))
        took = []
        for _ in range(n):
            start = time.process_time()
            for s in subsets:
                model.fuse(enc, list(s))
            took.append(time.process_time() - start)
    return statistics.median(took)


def main() -> None:  # noqa: PLR0915 - one report, printed in order
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="pvt_v2_b0")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (ratios are what matter)"
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="eager only (skip the compiled round)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subsets = all_subsets([m.name for m in MODALITIES])
    batches = make_batches(args.batches, args.batch, args.size)

    fused_attn = timm.layers.use_fused_attn()
    timm.layers.set_fused_attn(
        False
    )  # count timm attention matmuls (FlopCounterMode misses fused SDPA on CPU)
    macs = mac_ratios(build(args.backbone, args.head_dim), batches[0], subsets)
    widths = {e: mac_ratios(build(args.backbone, e), batches[0], subsets) for e in (128, 256, 768)}
    timm.layers.set_fused_attn(fused_attn)

    model = build(args.backbone, args.head_dim)
    use_encode_strategy(model, CPU)
    runs: dict[str, Callable[[], None]] = {
        "full": lambda: full_pass(model, batches),
        "cached": lambda: cached(model, batches, subsets),
        "naive": lambda: naive(model, batches, subsets),
    }
    shares = time_shares(model, batches[0], args.repeats)
    results = {"eager": time_paths(runs, args.repeats)}
    fuse_s = {"eager": fuse_seconds(model, batches[0], subsets, args.repeats)}
    compile_s = None
    if not args.no_compile:
        start = time.perf_counter()
        compile_model(model)
        with torch.no_grad():
            full_pass(model, batches[:1])
        compile_s = time.perf_counter() - start
        results["compiled"] = time_paths(runs, args.repeats)
        fuse_s["compiled"] = fuse_seconds(model, batches[0], subsets, args.repeats)

    print(
        f"evaluate_subsets benchmark: {args.backbone}, M = 3, K = {K}, {args.batches} x "
        f"{args.batch} tiles of {args.size}², head_dim {args.head_dim}, {args.threads} "
        f"thread(s), backbone fed {model.encode_strategy}, median of {args.repeats} rounds"
    )
    print(
        f"one full pass: {results['eager'][1] * 1e3:.0f} ms wall eager"
        + (f", {results['compiled'][1] * 1e3:.0f} ms compiled" if "compiled" in results else "")
        + f" ({macs['full_gmacs']:.2f} GMACs per batch)"
    )
    if compile_s is not None:
        print(f"first compiled pass (compilation included): {compile_s:.1f} s")
    print(
        f"  shares of a full pass (MACs): backbone x3 {macs['backbone_share']:.1%}, encode "
        f"(stems+backbone+SGF encode) "
        f"{macs['encode_share']:.1%}, fuse {macs['fuse_share']:.1%}, head {macs['head_share']:.1%}"
    )
    print(f"ideal from MACs (encode + 7 x (fuse + head)) / full = {macs['ideal']:.2f}")
    print(f"naive from MACs (7 subset forwards) / full          = {macs['naive']:.2f}")
    mac_speedup = macs["naive"] / macs["ideal"]
    print(f"{'figure (CPU time; wall in brackets)':<44} " + "  ".join(f"{k:>14}" for k in results))
    rows = {
        "all 7 subsets cached / full pass": lambda m: (m["cpu"]["cached"], m["wall"]["cached"]),
        "all 7 subsets naive / full pass": lambda m: (m["cpu"]["naive"], m["wall"]["naive"]),
        "cached / ideal (goal <= 1.15)": lambda m: (
            m["cpu"]["cached"] / macs["ideal"],
            m["wall"]["cached"] / macs["ideal"],
        ),
        f"naive / cached, share of MACs {mac_speedup:.2f}x (goal >= 0.90)": lambda m: (
            m["cpu"]["naive"] / m["cpu"]["cached"] / mac_speedup,
            m["wall"]["naive"] / m["wall"]["cached"] / mac_speedup,
        ),
    }
    for label, fn in rows.items():
        cells = [fn(med) for med, _ in results.values()]
        print(f"{label:<44} " + "  ".join(f"{a:>6.2f} ({b:>4.2f})" for a, b in cells))
    if "compiled" in fuse_s:
        print(
            f"fuse of all 7 subsets of one batch: eager {fuse_s['eager'] * 1e3:.0f} ms, compiled "
            f"{fuse_s['compiled'] * 1e3:.0f} ms: {fuse_s['eager'] / fuse_s['compiled']:.2f}x "
            f"(goal >= 1.5x)"
        )
    print("where an eager full pass spends its time (CPU time) vs its MACs:")
    print(
        f"  encode {shares['encode']:.1%} (MACs {macs['encode_share']:.1%}), fuse "
        f"{shares['fuse']:.1%} "
        f"(MACs {macs['fuse_share']:.1%}), head {shares['head']:.1%} (MACs "
        f"{macs['head_share']:.1%}), "
        f"argmax+confusion {shares['metrics']:.1%} (MACs 0)"
    )
    per_subset = 1 - shares["encode"]
    print(
        f"  -> per-subset work is {per_subset:.1%} of a full pass in time but "
        f"{macs['fuse_share'] + macs['head_share']:.1%} in MACs; time-based ideal "
        f"{shares['encode'] + len(subsets) * per_subset:.2f}"
    )
    print(
        f"  encode packed in one backbone batch / one backbone call per modality (same MACs, "
        f"same numbers): {shares['packed_over_singles']:.2f}"
    )
    print("head width and the ideal ratio (MACs):")
    for e, r in widths.items():
        print(
            f"  head_dim {e:>3}: head {r['head_share']:.1%} of a full pass, ideal "
            f"{r['ideal']:.2f}, naive {r['naive']:.2f}, "
            f"naive/ideal {r['naive'] / r['ideal']:.2f}"
        )


if __name__ == "__main__":
    main()
