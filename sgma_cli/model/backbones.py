"""Backbone registry: timm encoders that yield the 4 feature scales SGMA fuses.

SGMA shares ONE encoder across all modalities (paper Eq. 2). Any timm model whose
``features_only`` variant reaches strides 4, 8, 16 and 32 works; :data:`BACKBONES` lists the
ones sgma is tested with. Weights are never downloaded: ``weights`` is a state dict that
the engine read from a local file and checked (``engine.weights.load_backbone_weights``);
timm adapts it here (classifier dropped, input stem).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Mapping

import timm
import torch
from torch import nn

__all__ = ["BACKBONES", "FEATURE_STRIDES", "create_backbone", "backbone_channels"]

#: The strides of the four scales SGMA fuses (the paper's PVT-v2 pyramid).
FEATURE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)

#: Backbones sgma is tested with: name -> one line for ``--help`` and the docs.
BACKBONES: dict[str, str] = {
    "pvt_v2_b2": "PVT-v2-b2, the paper's encoder (24.85 M params)",
    "pvt_v2_b0": "PVT-v2-b0, a small pyramid transformer (3.4 M params)",
    "resnet18": "ResNet-18 (11.2 M params)",
    "resnet50": "ResNet-50, the paper's CNN comparison (23.5 M params)",
    "convnext_tiny": "ConvNeXt-T (27.8 M params)",
    "test_convnext": "timm's tiny test ConvNeXt (0.2 M params), for tests and CPU demos",
    "test_resnet": "timm's tiny test ResNet (0.4 M params), for tests and CPU demos",
}


def _check_name(name: str) -> None:
    """Raise ``ValueError`` listing close matches when timm does not know ``name``."""
    known = timm.list_models()
    if name in known:
        return
    close = difflib.get_close_matches(name, list(BACKBONES) + known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; tested: {', '.join(BACKBONES)}"
    raise ValueError(f"unknown backbone {name!r}{hint}")


def create_backbone(
    name: str,
    in_chans: int = 3,
    weights: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build a timm encoder returning 4 feature maps at strides 4, 8, 16, 32.

    Args:
        name: timm model name, e.g. ``"pvt_v2_b2"``.
        in_chans: input channels of the shared encoder (3: modality stems map to RGB-like).
        weights: optional state dict of the timm model ``name`` (read and checked by the engine).
        device: where to build the parameters (``"meta"`` to count without allocating).

    Returns:
        An ``nn.Module`` whose forward maps ``(B, in_chans, H, W)`` to a list of 4 tensors
        ``(B, C_i, H/s_i, W/s_i)``; ``feature_info.channels()`` gives ``C_i``.

    Raises:
        ValueError: unknown name, a model without the 4 strides, or weights that do not fit.
    """
    _check_name(name)
    kwargs: dict[str, object] = {"features_only": True, "in_chans": in_chans}
    if weights is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": dict(weights)})
    last_levels = tuple(range(-len(FEATURE_STRIDES), 0))  # the 4 deepest feature levels
    with torch.device(device) if device is not None else contextlib.nullcontext():
        try:
            backbone = timm.create_model(name, out_indices=last_levels, **kwargs)
        except (RuntimeError, TypeError, AssertionError, IndexError, KeyError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            if weights is not None:
                raise ValueError(f"weights do not fit backbone {name!r}: {first}") from None
            raise ValueError(f"backbone {name!r} has no features_only form: {first}") from None
    reductions = list(backbone.feature_info.reduction())
    if reductions != list(FEATURE_STRIDES):
        raise ValueError(
            f"backbone {name!r} yields strides {reductions}; SGMA needs {list(FEATURE_STRIDES)}"
        )
    return backbone


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channels ``C_i`` of the 4 feature maps of a backbone made by :func:`create_backbone`."""
    return list(backbone.feature_info.channels())
