"""Parameters, compute and latency of an SGMA model, per component (paper Table IX).

Parameters and multiply-accumulates (MACs) are counted on the ``meta`` device, so even
PVT-v2-b2 at 512² needs no memory and no weights file. MACs come from
``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs = 2 x MACs) with fused
attention switched off, because on the CPU it counts nothing for fused
``scaled_dot_product_attention``. Elementwise operations are not counted, as in the
paper's figures. Ops are attributed to components by module path: the SGF modules are
built so that each multiply happens inside exactly one of MP, CSF, SP or RP.

Latency (``--latency``) is measured per stage of a forward (encode, fuse, head) with the
model as the jobs run it on that device (:mod:`sgma_cli.engine.speed`: encode strategy),
and with ``compile`` also compiled, side by side: the stages show where time and MACs part
ways (fuse is memory-bound: a few % of the MACs, a larger share of the time).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import timm.layers
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sgma_cli.config.model import SGMAConfig
from sgma_cli.engine.device import resolve_device
from sgma_cli.engine.speed import CompileChoice, maybe_compile, use_encode_strategy
from sgma_cli.engine.weights import build_model
from sgma_cli.errors import ConfigError, UsageError
from sgma_cli.model.sgma import SGMA

__all__ = [
    "FUSION_PARTS",
    "LATENCY_STAGES",
    "Latency",
    "ProfileReport",
    "count_macs",
    "measure_latency",
    "profile_model",
]

#: The parts of SGF, in the paper's order.
FUSION_PARTS = ("mp", "csf", "sp", "rp")
_PART_OF = {"projectors": "mp", "csf": "csf", "sp": "sp", "rp": "rp"}
# Top-level calls of each part inside a fusion module: encode-time (projectors.m, csf,
# sp.kv, rp.kv) and fuse-time (sp, rp) calls are disjoint, so their counts add up.
_PART_KEY = re.compile(r"^SGMA\.fusions\.\d+\.(projectors\.\d+|csf|sp|sp\.kv|rp|rp\.kv)$")
#: The stages of a forward that ``--latency`` times, then the whole forward.
LATENCY_STAGES = ("encode", "fuse", "head", "forward")


@dataclass
class Latency:
    """Milliseconds per stage of one forward (batch 1), eager and optionally compiled.

    Attributes:
        eager: ms per stage of :data:`LATENCY_STAGES`.
        compiled: the same with ``torch.compile``, or ``None``.
        compile_s: seconds of the first compiled forward (compilation included).
        encode_strategy: how the backbone was fed (``packed`` or ``per_modality``).
    """

    eager: dict[str, float]
    compiled: dict[str, float] | None = None
    compile_s: float | None = None
    encode_strategy: str = "packed"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        out: dict[str, Any] = {"eager_ms": self.eager, "encode_strategy": self.encode_strategy}
        if self.compiled is not None:
            out.update(compiled_ms=self.compiled, compile_s=self.compile_s)
        return out


@dataclass
class ProfileReport:
    """What ``sgma profile`` prints; ``to_dict`` is the ``--json`` schema."""

    params: dict[str, Any]
    macs: dict[str, Any]
    config: dict[str, Any]
    latency: Latency | None = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        """Milliseconds of one eager forward, when measured."""
        return None if self.latency is None else self.latency.eager["forward"]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``latency_ms`` and ``latency`` only when measured)."""
        out: dict[str, Any] = {"params": self.params, "macs": self.macs, "config": self.config}
        if self.latency is not None:
            out["latency_ms"] = self.latency_ms
            out["latency"] = self.latency.to_dict()
            out["device"] = self.device
        return out


@contextlib.contextmanager
def _unfused_attention() -> Iterator[None]:
    """Build timm attention without fused SDPA, so its matmuls are countable."""
    previous = timm.layers.use_fused_attn()
    timm.layers.set_fused_attn(False)
    try:
        yield
    finally:
        timm.layers.set_fused_attn(previous)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _param_counts(model: SGMA) -> dict[str, Any]:
    parts = dict.fromkeys(FUSION_PARTS, 0)
    for fusion in model.fusions:
        for child_name, child in fusion.named_children():
            parts[_PART_OF[child_name]] += _count(child)
    counts = {
        "backbone": _count(model.backbone),
        "fusion": _count(model.fusions),
        "fusion_parts": parts,
        "head": _count(model.head),
        "stems": _count(model.stems),
    }
    counts["total"] = _count(model)
    return counts


def count_macs(model: SGMA, images: dict[str, torch.Tensor]) -> dict[str, Any]:
    """MACs of one inference forward, split into backbone, fusion (and its parts), head."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    parts = dict.fromkeys(FUSION_PARTS, 0)
    for name, value in flops.items():
        match = _PART_KEY.match(name)
        if match:
            parts[_PART_OF[match.group(1).split(".")[0]]] += value // 2
    stems = sum(v for k, v in flops.items() if re.match(r"^SGMA\.stems\.[^.]+$", k)) // 2
    return {
        "backbone": flops.get("SGMA.backbone", 0) // 2,
        "fusion": sum(parts.values()),
        "fusion_parts": parts,
        "head": flops.get("SGMA.head", 0) // 2,
        "stems": stems,
        "total": flops.get("Global", 0) // 2,
    }


def _build(config: SGMAConfig, device: torch.device | str) -> SGMA:
    try:
        return build_model(config, device=device).eval()  # type: ignore[return-value]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _inputs(
    config: SGMAConfig, size: int, device: torch.device | str, batch: int = 1
) -> dict[str, torch.Tensor]:
    return {
        m.name: torch.randn(batch, m.bands, size, size, device=device) for m in config.modalities
    }


def _stage_ms(
    model: SGMA, images: dict[str, torch.Tensor], device: torch.device, warmup: int, repeats: int
) -> tuple[dict[str, float], float]:
    """Median ms per stage over ``repeats`` forwards, and seconds of the first forward."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def clock() -> float:
        sync()
        return time.perf_counter()

    took: dict[str, list[float]] = {stage: [] for stage in LATENCY_STAGES}
    first = 0.0
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = clock()
            enc = model.encode(images)
            t1 = clock()
            fused = model.fuse(enc)
            t2 = clock()
            model.decode([fused], enc.image_size)
            t3 = clock()
            if i == 0:
                first = t3 - t0
            if i >= warmup:
                for stage, ms in zip(LATENCY_STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    took[stage].append(ms * 1e3)
    return {stage: statistics.median(v) for stage, v in took.items()}, first


def measure_latency(
    config: SGMAConfig,
    size: int,
    device: torch.device,
    *,
    compile: CompileChoice = False,
    warmup: int = 2,
    repeats: int = 5,
) -> Latency:
    """Time encode, fuse and head of one forward (batch 1, all modalities), eager and compiled.

    The model (seed 0) feeds its backbone the device's way (encode strategy); when
    ``compile`` asks for it on ``device`` (``None``: on CUDA) it is then compiled in place
    and timed again.
    """
    torch.manual_seed(0)
    model = _build(config, device)
    use_encode_strategy(model, device)
    images = _inputs(config, size, device)
    eager, _ = _stage_ms(model, images, device, warmup, repeats)
    latency = Latency(eager=eager, encode_strategy=model.encode_strategy)
    if maybe_compile(model, compile, device) is not None:
        latency.compiled, latency.compile_s = _stage_ms(model, images, device, warmup, repeats)
    return latency


def profile_model(
    config: SGMAConfig,
    size: int = 512,
    latency: bool = False,
    device: str = "auto",
    warmup: int = 2,
    repeats: int = 5,
    compile: CompileChoice = False,
) -> ProfileReport:
    """Count parameters and MACs with all modalities present; optionally time a forward.

    Args:
        config: the model to profile.
        size: square input size in pixels (multiple of 32).
        latency: also measure milliseconds per stage on ``device`` (warm-up excluded).
        device: where to measure latency (counting always runs on ``meta``).
        warmup: untimed forwards before timing.
        repeats: timed forwards (medians).
        compile: with ``latency``, also time the compiled model (``None``: on CUDA).
    """
    if size <= 0 or size % 32:
        raise UsageError(
            f"--size {size} must be a positive multiple of 32 (the backbone's coarsest stride)"
        )
    with _unfused_attention():
        model = _build(config, "meta")
        macs = count_macs(model, _inputs(config, size, "meta"))
    params = _param_counts(model)
    report = ProfileReport(params=params, macs=macs, config={**config.to_dict(), "size": size})
    if latency:
        dev = resolve_device(device)
        report.latency = measure_latency(
            config,
            size,
            dev,
            compile=compile,
            warmup=warmup,
            repeats=repeats,
        )
        report.device = str(dev)
    return report
