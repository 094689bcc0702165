"""The learning-rate schedule: linear warm-up, then polynomial decay, evaluated per step.

Paper Sec. IV-A4: "polynomial decay (power of 0.9) over 200 epochs. A 10-epoch warm-up at
10 % of the initial learning rate". We read it the way mmsegmentation's ``PolyLR`` with a
linear warm-up does: the poly factor ``(1 - t/T)^p`` is multiplied, during the first ``W``
steps, by a ramp from ``warmup_ratio`` to 1. The schedule is a pure function of the step,
so its whole state in a checkpoint is the step (no closures to pickle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["WarmupPoly"]


@dataclass(frozen=True, kw_only=True)
class WarmupPoly:
    """Learning rate as a function of the optimizer step (keyword arguments only).

    Args:
        base_lr: peak learning rate.
        total_steps: ``T``, steps of the whole run (the decay reaches ``min_lr`` there).
        warmup_steps: ``W``, steps of the linear ramp.
        warmup_ratio: learning-rate fraction at step 0.
        power: polynomial power.
        min_lr: floor of the decay.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_ratio: float = 0.1
    power: float = 0.9
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def lr(self, step: int) -> float:
        """Learning rate for the update made at ``step`` (0-based)."""
        t = min(max(step, 0), self.total_steps)
        poly = (1.0 - t / self.total_steps) ** self.power
        lr = (self.base_lr - self.min_lr) * poly + self.min_lr
        if step < self.warmup_steps:
            lr *= self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_steps
        return lr

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for ``step``; return it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, float | int | str]:
        """Plain-typed description (for the checkpoint and the run log)."""
        return {
            "name": "warmup_poly",
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "power": self.power,
            "min_lr": self.min_lr,
        }
