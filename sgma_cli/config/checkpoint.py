"""The checkpoint file: the one schema for what ``train`` writes and the others read.

A checkpoint is one ``.pt`` file holding only tensors and plain Python types, read with
``torch.load(weights_only=True)`` so that loading never executes code::

    {"meta": CheckpointMeta as a dict of builtins,
     "model": model state dict,
     "train": optional resume state (optimizer, scheduler, step/epoch, sampler position,
              RNG states), see ``engine`` for its keys}

``meta`` carries everything ``evaluate`` and ``predict`` need without the recipe: the
model config, class names and colours, and each modality's bands and normalisation.
Writes go to a temporary name in the same folder and are renamed into place.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from sgma_cli import __version__
from sgma_cli.config._base import StrictModel, explain_validation_error
from sgma_cli.config.dataset import ClassSpec
from sgma_cli.config.model import SGMAConfig
from sgma_cli.errors import CheckpointError

__all__ = [
    "FORMAT",
    "ModalityNorm",
    "CheckpointMeta",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
]

FORMAT = "sgma-checkpoint"


class ModalityNorm(StrictModel):
    """A modality as the model saw it in training: bands and per-band normalisation."""

    name: str
    bands: int = Field(gt=0)
    mean: list[float]
    std: list[float]
    optical: bool = False


class CheckpointMeta(StrictModel):
    """Plain-typed description of a trained model."""

    format: Literal["sgma-checkpoint"] = FORMAT
    format_version: int = 1
    sgma_version: str = __version__
    model: dict[str, Any]
    classes: list[ClassSpec]
    ignore_index: int = 255
    modalities: list[ModalityNorm]
    crs: str | None = None
    resolution: tuple[float, float] | None = None
    tile_size: int | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)

    def sgma_config(self) -> SGMAConfig:
        """The :class:`SGMAConfig` to rebuild the model."""
        return SGMAConfig.from_dict(self.model)

    @property
    def class_names(self) -> list[str]:
        """Class names by index."""
        return [c.name for c in self.classes]

    @property
    def modality_names(self) -> list[str]:
        """Modality names in model order."""
        return [m.name for m in self.modalities]


@dataclass
class Checkpoint:
    """A loaded checkpoint: metadata, model weights and (optionally) resume state."""

    meta: CheckpointMeta
    model: dict[str, torch.Tensor]
    train: dict[str, Any] | None = field(default=None)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    payload: dict[str, Any] = {
        "meta": checkpoint.meta.model_dump(mode="json"),
        "model": checkpoint.model,
    }
    if checkpoint.train is not None:
        payload["train"] = checkpoint.train
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: What ``torch.load`` raises on a damaged or non-PyTorch file (random bytes reach its legacy
#: unpickler, which fails with lookup and type errors as well as unpickling errors).
_UNREADABLE = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OSError,
)


def _reason(err: BaseException) -> str:
    """One short line for ``err``: torch's own reason when it gives one, else the error type."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:  # torch's long weights-only notice: keep its reason
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        return f"damaged, or holds more than tensors: {' '.join(detail.split())}"[:160]
    if text and not isinstance(err, LookupError):
        return text.splitlines()[0].split(". ")[0][:160]  # the first sentence
    return f"damaged or not a PyTorch file: {type(err).__name__}"


def load_checkpoint(
    path: Path, with_train_state: bool = False, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint without executing code; any problem raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except _UNREADABLE as err:  # a damaged or foreign file: torch's legacy unpickler fails anyhow
        raise CheckpointError(f"not a readable checkpoint ({_reason(err)})", path) from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("meta"), dict)
        or payload["meta"].get("format") != FORMAT
    ):
        raise CheckpointError("not an sgma checkpoint (no sgma metadata)", path)
    try:
        meta = CheckpointMeta.model_validate(payload["meta"])
        meta.sgma_config()
    except ValidationError as err:
        raise CheckpointError(
            f"bad checkpoint metadata: {explain_validation_error(err, CheckpointMeta)}", path
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"bad model config in checkpoint: {err}", path) from None
    model = payload.get("model")
    if not isinstance(model, dict):
        raise CheckpointError("checkpoint has no model weights", path)
    train = payload.get("train") if with_train_state else None
    if with_train_state and train is None:
        raise CheckpointError("checkpoint has no training state to resume from", path)
    return Checkpoint(meta=meta, model=model, train=train)
