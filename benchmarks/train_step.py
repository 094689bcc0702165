"""Cost of a training step: SGF + MAS vs ``sum`` fusion, and the loader vs the model.

1. Time per training step (forward + backward + AdamW) of SGMA (SGF + MAS branch, the loss
   of ``sgma train``) and of the ``sum`` baseline, same backbone, batch and crop, measured
   side by side in one run, next to the ratio of their multiply-adds (forward, counted
   with ``torch.utils.flop_counter.FlopCounterMode``, timm fused attention off so
   attention is counted). MAS reuses the backbone features, so it only
   adds fusion and head work: the goal is time ratio <= 1.1 x MACs ratio, and <= 1.35x
   at the default head (head_dim 256).
2. Loader throughput (``sgma train``'s dataset: tile reads, joint augmentation,
   normalisation, per-sample seeding; no model) vs the model's step rate in samples/s,
   for the sample recipe on the sample scene. Goal: loader >= 2x the model.

Run::

    .venv/bin/python benchmarks/train_step.py                       # CPU defaults
    .venv/bin/python benchmarks/train_step.py --compile --skip-loader  # eager and compiled
    .venv/bin/python benchmarks/train_step.py --backbone pvt_v2_b2 --size 512 --batch 8 \
        --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm.layers
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgma_cli.config.recipe import load_recipe  # noqa: E402
from sgma_cli.engine.device import autocast, resolve_device  # noqa: E402
from sgma_cli.engine.speed import compile_model, use_encode_strategy  # noqa: E402
from sgma_cli.engine.train.step import TrainForward, branch_loss  # noqa: E402
from sgma_cli.model.sgma import SGMA  # noqa: E402

MODALITIES = [("rgb", 3), ("dsm", 1), ("nir", 1)]


def _batch(B: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = {n: torch.randn(B, c, size, size, generator=g).to(device) for n, c in MODALITIES}
    return {
        "images": images,  # type: ignore[dict-item]
        "mask": torch.ones(B, len(MODALITIES), size, size, dtype=torch.bool, device=device),
        "present": torch.ones(B, len(MODALITIES), dtype=torch.bool, device=device),
        "mas_u": torch.rand(B, 4, generator=g, dtype=torch.float64),
        "label": torch.randint(0, 6, (B, size, size), generator=g).to(device),
    }


def _step(
    forward: TrainForward, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device
) -> None:
    with autocast(device, "auto"):
        out = forward(batch["images"], batch["mask"], batch["present"], batch["mas_u"])
    loss, _ = branch_loss(out.logits_sgf, batch["label"], out.valid_sgf, 255, lambda t: t, 1)
    loss = 2.0 * loss
    if out.logits_mas is not None and out.valid_mas is not None:
        loss = (
            loss
            + branch_loss(out.logits_mas, batch["label"], out.valid_mas, 255, lambda t: t, 1)[0]
        )
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _build(
    fusion: str, mas: bool, args: argparse.Namespace, device: torch.device, compiled: bool = False
) -> tuple[TrainForward, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = SGMA(MODALITIES, 6, args.backbone, fusion=fusion, head_dim=args.head_dim).to(device)  # type: ignore[arg-type]
    use_encode_strategy(model, device, training=True)  # as sgma train feeds the backbone
    if compiled:
        compile_model(model)
    return TrainForward(model, mas=mas), torch.optim.AdamW(model.parameters(), lr=1e-5)


def _macs(fusion: str, mas: bool, args: argparse.Namespace) -> float:
    """Forward multiply-adds of one training forward (both branches for SGF + MAS).

    Only the forward is counted: FlopCounterMode's ``convolution_backward`` formula ignores
    ``groups`` (a depthwise conv's backward is counted as a dense one, ~C times too much),
    and the backward costs about twice the forward for both models, so the ratio holds.
    """
    timm.layers.set_fused_attn(False)
    try:
        forward, _ = _build(fusion, mas, args, torch.device("cpu"))
        batch = _batch(1, args.size, torch.device("cpu"))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward(batch["images"], batch["mask"], batch["present"], batch["mas_u"])
        return counter.get_total_flops() / 2 * args.batch  # FLOPs = 2 x MACs
    finally:
        timm.layers.set_fused_attn(True)


def _time(
    fusion: str, mas: bool, args: argparse.Namespace, device: torch.device, compiled: bool
) -> list[float]:
    forward, optimizer = _build(fusion, mas, args, device, compiled)
    batch = _batch(args.batch, args.size, device)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        _step(forward, optimizer, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def step_cost(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    print(
        f"training step: {args.backbone}, {len(MODALITIES)} modalities, batch {args.batch}, "
        f"{args.size} px, "
        f"head_dim {args.head_dim}, {device}"
    )
    macs = {k: _macs(*k, args) for k in (("sum", False), ("sgf", True))}
    m_sum, m_sgma = macs[("sum", False)], macs[("sgf", True)]
    for compiled in (False, True) if args.compile else (False,):
        # interleave the timings so both see the same machine load
        runs: dict[tuple[str, bool], list[float]] = {("sum", False): [], ("sgf", True): []}
        for _ in range(args.rounds):
            for key in runs:
                runs[key] += _time(*key, args, device, compiled)
        t_sum = statistics.median(runs[("sum", False)])
        t_sgma = statistics.median(runs[("sgf", True)])
        print(f"  {'compiled' if compiled else 'eager'}:")
        print(f"  sum fusion     {t_sum * 1e3:9.1f} ms/step   {m_sum / 1e9:8.2f} GMACs (forward)")
        print(
            f"  SGF + MAS      {t_sgma * 1e3:9.1f} ms/step   {m_sgma / 1e9:8.2f} GMACs (forward, "
            f"both branches)"
        )
        time_ratio, macs_ratio = t_sgma / t_sum, m_sgma / m_sum
        print(
            f"  ratio          {time_ratio:9.3f} x (time)     {macs_ratio:8.3f} x (MACs)   "
            f"time/MACs = {time_ratio / macs_ratio:.3f} (goal <= 1.1)"
        )


def loader_vs_model(args: argparse.Namespace) -> None:
    from sgma_cli.engine.distributed import DistContext
    from sgma_cli.engine.train import TrainOptions, plan_training
    from sgma_cli.engine.train.loop import _Loop

    work = Path(tempfile.mkdtemp(prefix="sgma-bench-"))
    try:
        data = args.data
        if data is None:
            from sgma_cli.engine.prepare import PrepareOptions, prepare
            from sgma_cli.engine.sample_scene import sample

            sample(work / "scene", size=1024, seed=0)
            prepare(PrepareOptions(src=work / "scene", out=work / "data", tile=128, stride=128))
            data = work / "data"
        recipe = load_recipe(args.recipe, [f"data.num_workers={args.workers}"])
        plan = plan_training(
            recipe, TrainOptions(data_dir=data, run_dir=work / "run", device="cpu")
        )
        loop = _Loop(plan, DistContext(), None)
        print(
            f"\nloader vs model: {args.recipe.name} (crop {recipe.data.crop_size}, batch "
            f"{recipe.data.batch_size}, "
            f"{args.workers} loader worker(s)), {data}"
        )
        loop.sampler.set_epoch(0)
        n = 0
        start = time.perf_counter()
        for epoch in range(3):
            loop.sampler.set_epoch(epoch)
            for batch in loop.loader:
                n += batch["label"].shape[0]
        loader_rate = n / (time.perf_counter() - start)
        batches = [b for _, b in zip(range(4), loop.loader)]
        loop.forward.train()
        times = []
        for i, batch in enumerate(batches * 3):
            start = time.perf_counter()
            loop._micro_step(batch)
            loop._optimizer_step()
            if i:
                times.append(time.perf_counter() - start)
        model_rate = recipe.data.batch_size / statistics.median(times)
        print(f"  loader  {loader_rate:8.1f} samples/s")
        print(f"  model   {model_rate:8.1f} samples/s (train step)")
        print(f"  margin  {loader_rate / model_rate:8.2f} x (goal >= 2)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="pvt_v2_b2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, help="prepared sample dataset for the loader test")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "sample.toml")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="also time both models compiled (torch.compile)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    step_cost(args)
    if not args.skip_loader:
        loader_vs_model(args)


if __name__ == "__main__":
    main()
