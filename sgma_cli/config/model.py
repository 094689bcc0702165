"""The model's configuration: what a checkpoint or recipe needs to rebuild an SGMA model.

:class:`SGMAConfig` is a plain dataclass that round-trips through a dict of builtins
(``to_dict``/``from_dict``), so checkpoints store it without pickling code. Its fields
other than the dataset's modalities and classes are the :data:`ARCHITECTURE_FIELDS`: the
keys of a recipe's ``[model]`` table (``ModelRecipe.to_config`` maps them, by name) and
keyword arguments of :class:`~sgma_cli.model.sgma.SGMA` (``engine.weights.build_model``
passes them, by name).

The config checks nothing itself: each check lives once, in the model's constructors
(``ValueError`` naming the value), and the recipe schema adds the types and bounds that
give a user the dotted key. The choices (``FusionKind`` …) and the Modality Projector's
kernel rule (:func:`check_mp_kernels`) are defined here, once, for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = [
    "ARCHITECTURE_FIELDS",
    "EncodeStrategy",
    "FusionKind",
    "MASGranularity",
    "ModalitySpec",
    "PrototypeKind",
    "SGMAConfig",
    "StemKind",
    "check_mp_kernels",
]

#: Fusion of the modalities' features: SGF (the paper) or a pooling baseline.
FusionKind = Literal["sgf", "sum", "mean"]
#: How each modality's bands become the shared encoder's 3 channels.
StemKind = Literal["repeat", "learned"]
#: Whether MAS draws its modality per sample or once per batch.
MASGranularity = Literal["sample", "batch"]
#: How SGF's class prototypes (paper Eq. 3) weight their pixel x modality terms.
PrototypeKind = Literal["sum", "mean", "softmax"]
#: How the shared backbone is fed: all modalities in one batch, or one call per modality.
#: Not architecture (same numbers either way): the engine picks it per device.
EncodeStrategy = Literal["packed", "per_modality"]


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

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in the model's order."""
        return tuple(m.name for m in self.modalities)

    def architecture(self) -> dict[str, Any]:
        """The :data:`ARCHITECTURE_FIELDS` by name (``SGMA``'s keyword arguments)."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

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


#: The fields of :class:`SGMAConfig` that describe the network, not the data: everything
#: but ``modalities`` and ``num_classes``.
ARCHITECTURE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(SGMAConfig) if f.name not in ("modalities", "num_classes")
)


def check_mp_kernels(kernels: Sequence[int]) -> tuple[int, ...]:
    """``kernels`` as a tuple, or ``ValueError`` naming them unless each is odd and positive.

    The Modality Projector pads each depth-wise convolution by ``k // 2`` to keep the
    feature size, which needs odd ``k``. The one rule for the projector and the recipe.
    """
    sizes = tuple(kernels)
    if any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"MP kernel sizes must be odd and positive, got {sizes}")
    return sizes
