"""Data-parallel plumbing: process groups, launching N processes, collectives, synced batch norm.

Three ways to run ``train`` on several processes share one code path:

* ``--gpus N``: :func:`launch` runs rank 0 in the calling process (so its progress
  callback reaches the terminal) and spawns ranks 1..N-1; backend NCCL, one GPU each.
* ``--device cpu --nproc N``: the same with the gloo backend (how the tests run DDP).
* under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set):
  :func:`torchrun_env` reports it and each process joins that group (multi-node).

Batch norm (the head has one) must see the global batch for N processes × batch b to
equal 1 process × batch N·b. On CUDA that is ``nn.SyncBatchNorm``. PyTorch's SyncBatchNorm
refuses CPU tensors, so on gloo :class:`AllReduceBatchNorm` does the same thing with an
autograd-aware all-reduce of the per-channel sums (in float64).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from sgma_cli.errors import DeviceError

__all__ = [
    "DistContext",
    "torchrun_env",
    "init_process",
    "shutdown",
    "launch",
    "all_reduce_sum",
    "gather_objects",
    "AllReduceBatchNorm",
    "sync_batchnorm",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun, else ``None``."""
    if not all(k in os.environ for k in _TORCHRUN_VARS):
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def init_process(
    rank: int, world_size: int, local_rank: int, device_type: str, timeout_s: int = 1800
) -> DistContext:
    """Join the process group (if ``world_size > 1``) and pick this rank's device."""
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(rank, world_size, local_rank, device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child(worker: Callable[..., Any], rank: int, world_size: int, args: tuple[Any, ...]) -> None:
    worker(rank, world_size, *args)


def launch(
    worker: Callable[..., Any],
    world_size: int,
    args: tuple[Any, ...] = (),
    main: Callable[..., Any] | None = None,
) -> Any:
    """Run ``worker(rank, world_size, *args)`` on ``world_size`` local processes.

    Rank 0 runs here (as ``main(0, world_size, *args)`` when given, e.g. with a progress
    callback that cannot be pickled) and its return value is returned; ranks 1..N-1 are
    spawned (fresh interpreters, so ``worker`` and ``args`` must be picklable).

    Raises:
        DeviceError: a spawned rank exited with an error.
    """
    first = main if main is not None else worker
    if world_size == 1:
        return first(0, 1, *args)
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    context = mp.get_context("spawn")
    procs = [
        context.Process(target=_child, args=(worker, r, world_size, args))
        for r in range(1, world_size)
    ]
    try:
        for proc in procs:
            proc.start()
        result = first(0, world_size, *args)
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    failed = [r for r, p in enumerate(procs, start=1) if p.exitcode != 0]
    if failed:
        raise DeviceError(
            f"training process(es) of rank {failed} failed (see their messages above)"
        )
    return result


def all_reduce_sum(tensor: Tensor, ctx: DistContext) -> Tensor:
    """Sum over ranks (in place, no autograd); identity on one process."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is a sum over ranks too (each rank's output feeds its loss)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:  # noqa: D102
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # noqa: D102
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class AllReduceBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every rank (gloo/CPU).

    Same parameters and buffers as ``nn.BatchNorm2d`` (checkpoints load into either).
    Per-channel sum, sum of squares and count are all-reduced with autograd, so the
    backward pass is that of batch norm over the global batch.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> same shape."""
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        C = x.shape[1]
        x64 = x.double()
        count = torch.full((1,), x.numel() // C, dtype=torch.float64, device=x.device)
        stats = torch.cat([x64.sum(dim=(0, 2, 3)), (x64 * x64).sum(dim=(0, 2, 3)), count])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:C] / n
        var = (stats[C : 2 * C] / n - mean * mean).clamp(min=0)
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        ):
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(
                    momentum * mean.to(self.running_mean.dtype)
                )
                self.running_var.mul_(1 - momentum).add_(
                    momentum * unbiased.to(self.running_var.dtype)
                )
        out = (x64 - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        out = out.to(x.dtype)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def sync_batchnorm(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Make every BatchNorm2d see the global batch: SyncBatchNorm on CUDA, all-reduce on CPU."""
    if not ctx.distributed:
        return model
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_batchnorm(model)


def _swap_batchnorm(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        swapped = AllReduceBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            swapped.weight = module.weight
            swapped.bias = module.bias
        swapped.running_mean = module.running_mean
        swapped.running_var = module.running_var
        swapped.num_batches_tracked = module.num_batches_tracked
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        module.add_module(name, _swap_batchnorm(child))
    return module
