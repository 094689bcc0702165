"""Choosing the device and numeric precision for a job.

``auto`` picks CUDA when present, else the CPU. On CUDA, jobs run under bf16 autocast
(parameters stay float32); on the CPU they run in float32 unless bf16 is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from sgma_cli.errors import DeviceError

__all__ = ["resolve_device", "autocast", "check_gpu_count"]


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a usable ``torch.device``."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} asked for, but no CUDA GPU is available here; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise DeviceError(f"device type {device.type!r} is not supported; use cpu or cuda")
    return device


def check_gpu_count(requested: int) -> None:
    """Raise :class:`DeviceError` when more GPUs are requested than this machine has."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested > available:
        raise DeviceError(
            f"--gpus {requested} asked for, but this machine has {available} GPU(s)"
            + ("; for CPU processes use --device cpu --nproc N" if available == 0 else "")
        )


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """bf16 autocast on CUDA (``auto``/``bf16``), fp32 elsewhere unless ``bf16`` is asked for."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; use auto, bf16 or fp32")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        yield
