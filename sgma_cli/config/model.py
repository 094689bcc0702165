"""The model's configuration: what a checkpoint or recipe needs to rebuild an SGMA model.

:class:`SGMAConfig` is a plain dataclass that round-trips through a dict of builtins
(``to_dict``/``from_dict``), so checkpoints store it without pickling code and recipes
map onto it. ``engine.weights.build_model`` passes its fields as explicit constructor arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = [
    "FusionKind",
    "MASGranularity",
    "ModalitySpec",
    "PrototypeKind",
    "SGMAConfig",
    "StemKind",
]

#: Fusion of the modalities' features: SGF (the paper) or a pooling baseline.
FusionKind = Literal["sgf", "sum", "mean"]
#: How each modality's bands become the shared encoder's 3 channels.
StemKind = Literal["repeat", "learned"]
#: Whether MAS draws its modality per sample or once per batch.
MASGranularity = Literal["sample", "batch"]
#: How SGF's class prototypes (paper Eq. 3) weight their pixel x modality terms.
PrototypeKind = Literal["sum", "mean", "softmax"]


@dataclass(frozen=True)
class ModalitySpec:
    """A sensor the model knows: its name (``rgb``, ``dsm``, ``sar`` …) and band count."""

    name: str
    bands: int

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"modality name {self.name!r} must be letters, digits or '_'")
        if self.bands < 1:
            raise ValueError(f"modality {self.name!r} needs at least 1 band, got {self.bands}")


@dataclass(frozen=True)
class SGMAConfig:
    """Everything that defines an SGMA model's architecture (not its weights).

    Args:
        modalities: the sensors, in the model's order.
        num_classes: segmentation classes ``K``.
        backbone: timm encoder name shared by all modalities.
        fusion: ``"sgf"`` (the paper), ``"sum"`` or ``"mean"`` (baselines).
        stem: ``"repeat"`` bands to 3 channels, or a ``"learned"`` 1x1 conv per modality.
        sp_heads: Spatial Perceptron heads (paper: 8).
        rp_heads: Robustness Perceptron heads (paper: 4).
        mp_kernels: Modality Projector depth-wise kernels (paper: 11, 7, 3).
        head_dim: all-MLP decoder width ``E``.
        head_dropout: decoder dropout.
        mas_granularity: draw the MAS modality per ``"sample"`` or per ``"batch"``.
        prototypes: Eq. 3 as a ``"sum"`` (the paper's literal product), a ``"mean"`` over
            its pixel x modality terms, or ``"softmax"`` weights over them. The default is
            ``"sum"`` because checkpoints written before the key existed used it.
    """

    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    backbone: str = "pvt_v2_b2"
    fusion: FusionKind = "sgf"
    stem: StemKind = "repeat"
    sp_heads: int = 8
    rp_heads: int = 4
    mp_kernels: tuple[int, ...] = (11, 7, 3)
    head_dim: int = 256
    head_dropout: float = 0.1
    mas_granularity: MASGranularity = "sample"
    prototypes: PrototypeKind = "sum"

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("a model needs at least one modality")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.fusion not in ("sgf", "sum", "mean"):
            raise ValueError(f"unknown fusion {self.fusion!r}; use 'sgf', 'sum' or 'mean'")
        if self.prototypes not in ("sum", "mean", "softmax"):
            raise ValueError(
                f"unknown prototypes {self.prototypes!r}; use 'sum', 'mean' or 'softmax'"
            )

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in the model's order."""
        return tuple(m.name for m in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        """A dict of builtins (JSON/TOML-safe)."""
        out = asdict(self)
        out["modalities"] = [{"name": m.name, "bands": m.bands} for m in self.modalities]
        out["mp_kernels"] = list(self.mp_kernels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SGMAConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["modalities"] = tuple(
            m if isinstance(m, ModalitySpec) else ModalitySpec(str(m["name"]), int(m["bands"]))
            for m in data["modalities"]
        )
        if "mp_kernels" in kwargs:
            kwargs["mp_kernels"] = tuple(int(k) for k in kwargs["mp_kernels"])
        return cls(**kwargs)
