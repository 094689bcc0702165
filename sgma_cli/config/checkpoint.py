"""The checkpoint file: the one schema for what ``train`` writes and the others read.

A checkpoint is one ``.pt`` file holding only tensors and plain Python types, read with
``torch.load(weights_only=True)`` so that loading never executes code::

    {"meta": CheckpointMeta as a dict of builtins,
     "model": model state dict,
     "train": optional resume state (optimizer, scheduler, step/epoch, sampler position,
              RNG states), see ``engine`` for its keys,
     "digest": "sha256:<hex>" over meta, model and train (see :func:`content_digest`)}

``meta`` carries everything ``evaluate`` and ``predict`` need without the recipe: the
model config, class names and colours, and each modality's bands and normalisation.
Writes go to a temporary name in the same folder and are renamed into place.

The digest lets :func:`load_checkpoint` refuse a damaged file whose bytes still unpickle
(a flipped byte inside a tensor loads without complaint otherwise). Checkpoints written
before digests existed have none and still load (:attr:`Checkpoint.digest` is ``None``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from sgma_cli import __version__
from sgma_cli.config._base import NamedClassesAndModalities, StrictModel, explain_validation_error
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
    "content_digest",
]

FORMAT = "sgma-checkpoint"


class ModalityNorm(StrictModel):
    """A modality as the model saw it in training: bands and per-band normalisation."""

    name: str
    bands: int = Field(gt=0)
    mean: list[float]
    std: list[float]
    optical: bool = False


class CheckpointMeta(NamedClassesAndModalities):
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


@dataclass
class Checkpoint:
    """A loaded checkpoint: metadata, model weights and (optionally) resume state.

    ``digest`` is the content digest the file carried and that matched on load (``None`` for
    a checkpoint being built, or one written before sgma stored digests).
    """

    meta: CheckpointMeta
    model: dict[str, torch.Tensor]
    train: dict[str, Any] | None = field(default=None)
    digest: str | None = field(default=None)


#: The top-level keys of a checkpoint file; any other key means the file was damaged.
_KEYS = frozenset({"meta", "model", "train", "digest"})


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` (tensors, containers and plain types, as ``weights_only`` loads them) to
    the hash ``h`` in a fixed, type-tagged order, so equal content gives equal bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():  # insertion order survives torch.save/torch.load
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"B{obj}".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)};".encode() + data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"Y{len(obj)};".encode() + bytes(obj))
    else:  # another type torch's weights-only loader allows (dtype, device, ...)
        text = f"{type(obj).__name__}:{obj!r}".encode()
        h.update(f"O{len(text)};".encode() + text)


def content_digest(payload: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over a checkpoint payload's ``meta``, ``model`` and ``train``.

    Hashes the tensors' bytes, dtypes and shapes and every plain value (not the pickle
    bytes), so the digest written at save time is the one recomputed after loading.
    """
    h = hashlib.sha256()
    for key in ("meta", "model", "train"):
        if key in payload:
            _feed(h, key)
            _feed(h, payload[key])
    return f"sha256:{h.hexdigest()}"


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    payload: dict[str, Any] = {
        "meta": checkpoint.meta.model_dump(mode="json"),
        "model": checkpoint.model,
    }
    if checkpoint.train is not None:
        payload["train"] = checkpoint.train
    payload["digest"] = content_digest(payload)
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
    digest = _check_digest(payload, path)
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
    return Checkpoint(meta=meta, model=model, train=train, digest=digest)


def _check_digest(payload: dict[str, Any], path: Path) -> str | None:
    """The payload's digest once it matches its content; ``None`` for a checkpoint from
    before digests. Unknown top-level keys or a wrong digest raise :class:`CheckpointError`."""
    unknown = sorted(str(k) for k in payload if k not in _KEYS)
    if unknown:
        raise CheckpointError(f"damaged checkpoint (unknown entries {unknown[:3]})", path)
    stored = payload.get("digest")
    if stored is None:
        return None
    if not isinstance(stored, str) or not stored.startswith("sha256:"):
        raise CheckpointError("damaged checkpoint (its content digest is unreadable)", path)
    if content_digest(payload) != stored:
        raise CheckpointError(
            "damaged checkpoint: its content does not match the digest written with it; "
            "copy it again or use another checkpoint",
            path,
        )
    return stored
