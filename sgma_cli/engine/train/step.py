"""One training forward and its loss: SGF + MAS (Algorithm 1 lines 1-27), DDP-exact.

:class:`TrainForward` wraps :meth:`SGMA.forward_train` in a module, because DDP hooks
``forward``. The MAS draws come from per-sample uniforms ``mas_u`` ``(B, S)`` (from
:class:`~sgma_cli.engine.train.randomness.SeededSamples`), so a sample draws the same modality
whatever batch or rank it lands in (a shared ``torch.Generator`` draws differently for a
batch of 2b than for two batches of b); with ``mas_granularity="batch"`` the rank-shared
``batch_u`` draws once from the distribution averaged over the global batch.

The loss is ``λ_SGF·CE(SGF) + λ_MAS·CE(MAS)``, each a mean over the pixels that are
labelled and seen by the branch's modalities. The mean's denominator is the pixel count
of the GLOBAL batch (all-reduced), and DDP averages gradients over ranks, so the loss is
scaled by the world size: N processes × batch b step exactly like one process × N·b.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgma_cli.model.sgma import SGMA

__all__ = ["StepOutput", "TrainForward", "branch_loss", "joint_loss"]

#: ``reduce(tensor) -> tensor`` summing over ranks (identity on one process).
Reduce = Callable[[Tensor], Tensor]


@dataclass
class StepOutput:
    """Training forward output.

    Attributes:
        logits_sgf: ``(B, K, H, W)``.
        logits_mas: ``(B, K, H, W)`` or ``None`` without MAS.
        valid_sgf: bool ``(B, H, W)``.
        valid_mas: bool ``(B, H, W)`` or ``None``.
        mas_probs: ``(S, B, M)`` MAS probabilities ``s_m^i`` (``None`` without MAS).
    """

    logits_sgf: Tensor
    logits_mas: Tensor | None
    valid_sgf: Tensor
    valid_mas: Tensor | None
    mas_probs: Tensor | None


class TrainForward(nn.Module):
    """The training forward as a module, so DDP can wrap it (DDP hooks ``forward``).

    Args:
        model: the SGMA model (its parameters are this module's).
        mas: run the MAS branch.
    """

    def __init__(self, model: SGMA, mas: bool = True) -> None:
        super().__init__()
        self.model = model
        self.mas = mas

    def forward(
        self,
        images: Mapping[str, Tensor],
        mask: Tensor,
        present: Tensor,
        mas_u: Tensor,
        batch_u: Tensor | None = None,
        reduce: Reduce | None = None,
    ) -> StepOutput:
        """SGF (and MAS) logits.

        Args:
            images: ``{name: (B, C_m, H, W)}`` normalised images.
            mask: bool ``(B, M, H, W)`` availability.
            present: bool ``(B, M)`` SGF subset per sample (modality dropout).
            mas_u: ``(B, S)`` uniforms for the per-sample MAS draw.
            batch_u: ``(S,)`` uniforms shared by all ranks for ``mas_granularity="batch"``.
            reduce: sum over ranks, for the global batch-mean distribution.
        """
        if not self.mas:
            out = self.model(images, mask, present)
            return StepOutput(out.logits, None, out.valid, None, None)
        if self.model.mas_granularity == "batch":
            if batch_u is None:
                raise ValueError("mas_granularity='batch' needs batch_u, one uniform per scale")
            uniforms = batch_u[:, None].expand(-1, mas_u.shape[0])
        else:
            uniforms = mas_u.T
        out = self.model.forward_train(images, mask, present, uniforms=uniforms, reduce=reduce)
        return StepOutput(
            out.logits_sgf, out.logits_mas, out.valid_sgf, out.valid_mas, out.mas_probs
        )


def branch_loss(
    logits: Tensor,
    label: Tensor,
    valid: Tensor,
    ignore_index: int,
    reduce: Reduce,
    world_size: int,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy summed over the labelled, seen pixels, divided by the global count.

    Args:
        logits: ``(B, K, H, W)``.
        label: int64 ``(B, H, W)``.
        valid: bool ``(B, H, W)``: pixels some used modality saw.
        ignore_index: label value that is not scored.
        reduce: sum over ranks.
        world_size: processes (DDP averages gradients, so the loss is scaled by it).

    Returns:
        The loss to back-propagate (scaled) and the global mean loss value (detached).
    """
    target = torch.where(valid, label, torch.full_like(label, ignore_index))
    summed = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    count = reduce((target != ignore_index).sum().to(torch.float64).reshape(1))
    denominator = count.clamp(min=1).to(summed.dtype)[0]
    loss = summed * world_size / denominator
    value = reduce((summed.detach() / denominator).reshape(1).double())[0]
    return loss, value


def joint_loss(
    out: StepOutput,
    label: Tensor,
    ignore_index: int,
    lambda_sgf: float,
    lambda_mas: float,
    reduce: Reduce,
    world_size: int,
) -> tuple[Tensor, dict[str, float]]:
    """``λ_SGF·CE(SGF) + λ_MAS·CE(MAS)`` (paper Sec. III-E), each branch by :func:`branch_loss`.

    Args:
        out: the training forward's output (no MAS branch: the SGF term alone).
        label: int64 ``(B, H, W)``.
        ignore_index: label value that is not scored.
        lambda_sgf: weight of the SGF branch (paper: 2).
        lambda_mas: weight of the MAS branch (paper: 1).
        reduce: sum over ranks.
        world_size: processes.

    Returns:
        The loss to back-propagate (scaled like :func:`branch_loss`) and the logged global
        means: ``loss_sgf``, ``loss_mas`` (with MAS) and their weighted sum ``loss``.
    """
    loss_sgf, value_sgf = branch_loss(
        out.logits_sgf, label, out.valid_sgf, ignore_index, reduce, world_size
    )
    loss = lambda_sgf * loss_sgf
    values = {"loss_sgf": float(value_sgf)}
    if out.logits_mas is not None and out.valid_mas is not None:
        loss_mas, value_mas = branch_loss(
            out.logits_mas, label, out.valid_mas, ignore_index, reduce, world_size
        )
        loss = loss + lambda_mas * loss_mas
        values["loss_mas"] = float(value_mas)
    values["loss"] = lambda_sgf * values["loss_sgf"] + lambda_mas * values.get("loss_mas", 0.0)
    return loss, values
