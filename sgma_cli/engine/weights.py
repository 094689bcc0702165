"""Models from their configs and weight files: a checkpoint, or a pretrained backbone file."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import timm
import torch

from sgma_cli.config.checkpoint import CheckpointMeta, load_checkpoint
from sgma_cli.config.model import SGMAConfig
from sgma_cli.errors import CheckpointError
from sgma_cli.model.sgma import SGMA

__all__ = ["build_model", "load_backbone_weights", "load_model"]


def build_model(
    config: SGMAConfig,
    backbone_weights: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SGMA:
    """The :class:`SGMA` model ``config`` describes.

    Its architecture fields go to the constructor by name, so a field added to the config
    reaches the model without a line here; the model checks them.
    """
    return SGMA(
        [(m.name, m.bands) for m in config.modalities],
        config.num_classes,
        **config.architecture(),
        backbone_weights=backbone_weights,
        device=device,
        dtype=dtype,
    )


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[SGMA, CheckpointMeta]:
    """The model in eval mode on ``device`` and the checkpoint's metadata.

    Raises:
        CheckpointError: unreadable file, not an sgma checkpoint, or weights that do not
            fit the model config they came with.
    """
    ckpt = load_checkpoint(path)
    config = ckpt.meta.sgma_config()
    try:
        # on the meta device: no random initialisation that the checkpoint would overwrite
        # (1-1.5 s of a short predict on a loaded CPU); the loaded tensors are assigned
        model = build_model(config, device="meta")
    except ValueError as err:
        raise CheckpointError(f"cannot rebuild the model: {err}", path) from None
    try:
        model.load_state_dict(ckpt.model, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise CheckpointError(f"weights do not fit the model config ({first})", path) from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        # a tensor the checkpoint does not hold (a non-persistent buffer): build for real
        model = build_model(config)
        model.load_state_dict(ckpt.model)
    return model.to(device).eval(), ckpt.meta


def load_backbone_weights(
    path: Path, name: str, min_fraction: float = 0.5
) -> dict[str, torch.Tensor]:
    """Read a local weights file for backbone ``name`` and check that it fits.

    timm would load a file of another network non-strictly (unknown keys only logged) and
    leave the backbone random; this refuses files where fewer than ``min_fraction`` of the
    backbone's tensors are present with the right shape.

    Args:
        path: ``.safetensors``, or a torch file (read with ``weights_only=True``), holding a
            state dict directly or under ``state_dict``/``model``/``state_dict_ema``.
        name: timm model name.
        min_fraction: share of the model's tensors that must match by name and shape.

    Raises:
        ValueError: missing, unreadable or not-fitting file (message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError("weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"is not a readable weights file ({first})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError("holds no state dict")
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False).state_dict()
    fits = sum(
        1
        for k, v in reference.items()
        if isinstance(state.get(k), torch.Tensor) and state[k].shape == v.shape
    )
    if fits < min_fraction * len(reference):
        raise ValueError(
            f"does not fit backbone {name!r}: only {fits} of its {len(reference)} tensors are "
            "in the file with the right shape; use weights of that timm model"
        )
    return state
