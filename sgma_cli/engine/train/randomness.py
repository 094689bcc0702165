"""Reproducible, resumable randomness for training: the sample stream and the RNG states.

Every random choice made for a training sample (its augmentation, its modality-dropout
subset and the uniforms MAS turns into a modality per scale) is a pure function of
``(run seed, epoch, dataset index)``. The sampler yields ``(epoch, index)`` keys and
:class:`SeededSamples` derives the sample's generator from them, so

* the same sample is treated the same on 1 process or N (DDP equivalence), with any
  number of loader workers;
* resuming mid-epoch only needs the epoch and the number of batches already consumed:
  :class:`ResumableSampler` skips them.

The remaining global RNGs (python ``random``, numpy, torch CPU and CUDA, used e.g. by
dropout) are captured as tensors and plain types so ``torch.load(weights_only=True)``
reads them back.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "sample_seed",
    "ResumableSampler",
    "ShardSampler",
    "SeededSamples",
    "capture_rng",
    "restore_rng",
]

_STREAM_AUGMENT, _STREAM_DROPOUT, _STREAM_MAS = 1, 2, 3


def sample_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for one sample and one use (``stream``), independent of the others."""
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffled, sharded training order that can start mid-epoch.

    Every epoch draws one permutation from ``(seed, epoch)``, keeps the largest multiple
    of the global batch (``batch_size × world_size``, the rest is dropped), and gives
    rank ``r`` the items ``r, r + W, r + 2W, …``: step ``k`` of all ranks together covers
    exactly the items one process with batch ``batch_size × W`` would see.

    Args:
        length: dataset size.
        batch_size: per-process batch.
        seed: run seed.
        rank: this process.
        world_size: processes.
        shuffle: shuffle each epoch.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.skip_batches = 0

    @property
    def batches_per_epoch(self) -> int:
        """Per-process batches in one epoch."""
        return self.length // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's permutation; drop the first ``skip_batches`` batches (resume)."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.skip_batches, 0) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(
                self.length, generator=torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
            )
        else:
            order = torch.arange(self.length)
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:usable][self.rank :: self.world_size].tolist()
        for index in mine[self.skip_batches * self.batch_size :]:
            yield (self.epoch, int(index))


class ShardSampler(Sampler[int]):
    """Evaluation order: every item once over all ranks (no padding, no duplicates)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class SeededSamples(Dataset):
    """Training samples keyed by ``(epoch, index)`` with their per-sample randomness.

    Adds to each sample of ``base``: ``"present"`` bool ``(M,)`` (modality dropout: each
    modality dropped with probability ``modality_dropout``, at least one kept) and
    ``"mas_u"`` float ``(S,)`` uniforms from which MAS draws its modality per scale.

    Args:
        base: a dataset whose ``transform`` (if any) has a ``reseed(int)`` method.
        seed: run seed.
        num_modalities: ``M``.
        num_scales: ``S``.
        modality_dropout: drop probability per modality (0: all present).
    """

    def __init__(
        self,
        base: Any,
        seed: int,
        num_modalities: int,
        num_scales: int = 4,
        modality_dropout: float = 0.0,
    ) -> None:
        self.base = base
        self.seed = seed
        self.num_modalities = num_modalities
        self.num_scales = num_scales
        self.modality_dropout = modality_dropout

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        reseed: Callable[[int], None] | None = getattr(
            getattr(self.base, "transform", None), "reseed", None
        )
        if reseed is not None:
            reseed(sample_seed(self.seed, epoch, index, _STREAM_AUGMENT))
        sample = self.base[index]
        present = np.ones(self.num_modalities, dtype=bool)
        if self.modality_dropout > 0:
            rng = np.random.default_rng(sample_seed(self.seed, epoch, index, _STREAM_DROPOUT))
            present = rng.random(self.num_modalities) >= self.modality_dropout
            if not present.any():
                present[rng.integers(self.num_modalities)] = True
        mas = np.random.default_rng(sample_seed(self.seed, epoch, index, _STREAM_MAS)).random(
            self.num_scales
        )
        sample["present"] = torch.from_numpy(present)
        sample["mas_u"] = torch.from_numpy(mas.astype(np.float64))
        return sample


def capture_rng() -> dict[str, Any]:
    """The global RNG states as tensors and plain types (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if (
        state.get("cuda")
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
