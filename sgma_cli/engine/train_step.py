"""One training forward and its loss: SGF + MAS (Algorithm 1 lines 1-27), DDP-exact.

The forward follows :meth:`SGMA.forward_train` step by step (encode once, fuse the SGF
subset, MAS probabilities from the SGF robustness maps, one sampled modality per scale and
sample, both branches through the head as one batch), with two differences:

* the MAS draw turns per-sample uniforms ``mas_u`` ``(B, S)`` (from
  :class:`~sgma_cli.engine.train_state.SeededSamples`) into a modality by inverse CDF,
  so a sample draws the same modality whatever batch or rank it lands in (a shared
  ``torch.Generator`` draws differently for a batch of 2b than for two batches of b);
  with ``mas_granularity="batch"`` the distribution is averaged over the global batch;
* under modality dropout the MAS distribution only covers the modalities present in the
  SGF branch (``forward_train`` uses availability alone, so a dropped modality with
  robustness 0 would get ``1/eps`` weight).

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

from sgma_cli.model.mas import mas_probabilities
from sgma_cli.model.sgma import SGMA

__all__ = ["StepOutput", "TrainForward", "inverse_cdf", "branch_loss"]

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


def inverse_cdf(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Index per row of ``probs`` ``(B, M)`` drawn with ``uniforms`` ``(B,)`` in [0, 1).

    Zero-probability entries are never chosen (the CDF does not step there).
    """
    cdf = probs.detach().double().cumsum(dim=1)  # (B, M)
    target = uniforms.to(cdf) * cdf[:, -1]
    index = torch.arange(probs.shape[1], device=probs.device)
    last_positive = torch.where(probs.detach() > 0, index, torch.zeros_like(index)).amax(dim=1)  # u == 1 guard
    return torch.minimum((cdf <= target[:, None]).sum(dim=1), last_positive)


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
        model = self.model
        enc = model.encode(images, mask)
        sgf = model.fuse(enc, present)
        if not self.mas:
            (logits,) = model.decode([sgf], enc.image_size)
            return StepOutput(logits, None, sgf.valid, None, None)
        idx = list(enc.modalities)
        B, M = mask.shape[:2]
        used = present.to(torch.bool)[:, idx]  # (B, M_e)
        probs, choices = [], []
        for scale, (cache, size, r) in enumerate(zip(enc.scales, enc.sizes, sgf.robustness)):
            available = cache["available"].unflatten(2, size) & used[:, :, None, None]  # (B, M_e, h, w)
            p = torch.zeros(B, M, device=r.device)
            p[:, idx] = mas_probabilities(r[:, idx].detach(), available)
            probs.append(p)
            if model.mas_granularity == "batch":
                total = p.sum(dim=0, keepdim=True)
                count = torch.tensor([float(B)], device=p.device)
                if reduce is not None:
                    total, count = reduce(total.clone()), reduce(count)
                if batch_u is None:
                    raise ValueError("mas_granularity='batch' needs batch_u, one uniform per scale")
                choice = inverse_cdf(total / count, batch_u[scale : scale + 1]).expand(B)
            else:
                choice = inverse_cdf(p, mas_u[:, scale])
            choices.append(choice.to(p.device))
        mas = model.fuse(enc, F.one_hot(torch.stack(choices), M).bool())  # (S, B, M) subsets
        logits_sgf, logits_mas = model.decode([sgf, mas], enc.image_size)
        return StepOutput(logits_sgf, logits_mas, sgf.valid, mas.valid, torch.stack(probs))


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
