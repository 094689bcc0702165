"""The training recipe: one typed schema for ``recipes/*.toml`` and ``sgma train --set``.

A recipe has five tables, each a frozen pydantic model that rejects unknown keys::

    [data]      where the prepared dataset is, crop and augmentation, batch and workers
    [model]     backbone, fusion ("sgf" | "sum" | "mean") and the SGF hyper-parameters
    [optim]     AdamW (paper Sec. IV-A4: lr 6e-5, eps 1e-8, weight decay 1e-2)
    [schedule]  epochs, warm-up (10 epochs at 10 % lr) and polynomial decay (power 0.9)
    [train]     MAS on/off, loss weights, modality dropout, precision, validation, checkpoints

``--set optim.lr=1e-4`` overrides any key; the value is read as TOML (``true``, ``[1, 2]``,
``"text"``), and bare words that are not TOML are taken as strings (``--set data.dir=/x``).
Problems raise :class:`~sgma_cli.errors.RecipeError` as one line: the file, the dotted key,
the problem and, for unknown keys, "did you mean". ``ModelRecipe.to_config`` turns the
``[model]`` table into the model config; ``model/`` never imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator, model_validator

from sgma_cli.config._base import StrictModel, explain_validation_error, read_toml, tomllib
from sgma_cli.config.model import (
    ARCHITECTURE_FIELDS,
    FusionKind,
    MASGranularity,
    ModalitySpec,
    PrototypeKind,
    SGMAConfig,
    StemKind,
    check_mp_kernels,
)
from sgma_cli.errors import RecipeError

__all__ = [
    "DataRecipe",
    "ModelRecipe",
    "OptimRecipe",
    "ScheduleRecipe",
    "TrainRecipe",
    "Recipe",
    "load_recipe",
    "apply_overrides",
    "parse_override",
    "recipe_to_toml",
]


class DataRecipe(StrictModel):
    """Dataset, augmentation and loading.

    ``dir`` is the folder ``sgma prepare`` wrote (``--data`` overrides it); relative paths
    are read from the current folder. ``modalities`` (default: all of the dataset's) and
    ``classes`` (optional) are checked against ``dataset.toml``. ``batch_size`` is per
    process: the global batch is ``batch_size × processes × train.accumulate``.
    """

    dir: str | None = None
    modalities: list[str] | None = Field(default=None, min_length=1)
    classes: list[str] | None = Field(default=None, min_length=2)
    crop_size: int = Field(default=512, gt=0, multiple_of=32)
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: float = Field(default=0.5, ge=0, le=1)
    vflip: float = Field(default=0.5, ge=0, le=1)
    rotate90: float = Field(default=0.5, ge=0, le=1)
    photometric: float = Field(default=0.5, ge=0, le=1)
    batch_size: int = Field(default=8, gt=0)
    val_batch_size: int = Field(default=8, gt=0)
    num_workers: int = Field(default=4, ge=0)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(value)}")
        return value


class ModelRecipe(StrictModel):
    """The network: the :class:`~sgma_cli.config.model.SGMAConfig` fields that are not taken
    from the dataset (see there for each), plus ``pretrained``, an optional local backbone
    weights file (never downloaded).

    Defaults and choices are the model config's; the bounds here let a user's mistake be
    reported with its dotted key before any model is built.
    """

    backbone: str = SGMAConfig.backbone
    pretrained: str | None = None
    fusion: FusionKind = SGMAConfig.fusion
    stem: StemKind = SGMAConfig.stem
    sp_heads: int = Field(default=SGMAConfig.sp_heads, gt=0)
    rp_heads: int = Field(default=SGMAConfig.rp_heads, gt=0)
    mp_kernels: tuple[int, ...] = Field(default=SGMAConfig.mp_kernels, min_length=1)
    head_dim: int = Field(default=SGMAConfig.head_dim, gt=0)
    head_dropout: float = Field(default=SGMAConfig.head_dropout, ge=0, lt=1)
    mas_granularity: MASGranularity = SGMAConfig.mas_granularity
    prototypes: PrototypeKind = SGMAConfig.prototypes

    @field_validator("mp_kernels")
    @classmethod
    def _odd_kernels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return check_mp_kernels(value)

    def to_config(self, modalities: Sequence[ModalitySpec], num_classes: int) -> SGMAConfig:
        """The model config for a dataset's ``modalities`` and ``num_classes``.

        The one place a recipe becomes a model config: every architecture field, by name.
        """
        fields = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
        return SGMAConfig(tuple(modalities), num_classes, **fields)


class OptimRecipe(StrictModel):
    """AdamW. ``grad_clip`` is the max gradient L2 norm (0: no clipping)."""

    lr: float = Field(default=6e-5, gt=0)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(default=0.0, ge=0)

    @field_validator("betas")
    @classmethod
    def _beta_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {list(value)}")
        return value


class ScheduleRecipe(StrictModel):
    """Linear warm-up from ``warmup_ratio × lr``, then polynomial decay to ``min_lr``, per step.

    ``max_steps`` caps the run for quick trials (0: no cap); the decay still spans ``epochs``.
    """

    epochs: int = Field(default=200, gt=0)
    warmup_epochs: float = Field(default=10, ge=0)
    warmup_ratio: float = Field(default=0.1, gt=0, le=1)
    power: float = Field(default=0.9, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    max_steps: int = Field(default=0, ge=0)


class TrainRecipe(StrictModel):
    """The loop: loss, MAS, modality dropout, precision, validation and checkpoints.

    ``val_every`` counts epochs (0: never), ``checkpoint_every`` and ``log_every`` steps.
    ``compile``: ``torch.compile`` the model (``"auto"``: on CUDA only, see
    :mod:`sgma_cli.engine.speed`).
    """

    mas: bool = True
    lambda_sgf: float = Field(default=2.0, ge=0)
    lambda_mas: float = Field(default=1.0, ge=0)
    modality_dropout: float = Field(default=0.0, ge=0, lt=1)
    accumulate: int = Field(default=1, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool | Literal["auto"] = "auto"
    seed: int = Field(default=0, ge=0)
    deterministic: bool = True
    val_every: int = Field(default=1, ge=0)
    val_subsets: str = "all"
    checkpoint_every: int = Field(default=500, gt=0)
    log_every: int = Field(default=10, gt=0)


class Recipe(StrictModel):
    """A whole training recipe."""

    name: str = "run"
    description: str = ""
    data: DataRecipe = DataRecipe()
    model: ModelRecipe = ModelRecipe()
    optim: OptimRecipe = OptimRecipe()
    schedule: ScheduleRecipe = ScheduleRecipe()
    train: TrainRecipe = TrainRecipe()

    @model_validator(mode="after")
    def _something_to_learn(self) -> Recipe:
        if self.train.lambda_sgf == 0 and (self.train.lambda_mas == 0 or not self.train.mas):
            raise ValueError("train.lambda_sgf and train.lambda_mas are both 0: nothing to learn")
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> ``(["optim", "lr"], 1e-4)``; the value is read as TOML.

    Raises:
        RecipeError: no ``=`` or an empty key.
    """
    key, sep, text = item.partition("=")
    path = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(path):
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-4")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as a path
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw recipe dict with each ``key=value`` of ``overrides`` set."""
    out: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise RecipeError(f"--set {item!r}: {where} is a value, not a table")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def load_recipe(path: Path | None, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe (``path=None``: the defaults).

    Raises:
        RecipeError: unreadable TOML, a bad ``--set``, or a key that does not validate;
            the message names the file, the dotted key and the problem.
    """
    raw = read_toml(Path(path), RecipeError) if path is not None else {}
    merged = apply_overrides(raw, overrides)
    try:
        return Recipe.model_validate(merged)
    except ValidationError as err:
        line = explain_validation_error(err, Recipe)
        changed = {".".join(parse_override(o)[0]) for o in overrides}
        source = "--set " if any(line.startswith(k) or f" {k}" in line for k in changed) else ""
        raise RecipeError(f"{source}{line}", path) from None


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML text (unset optional keys left out)."""
    return tomli_w.dumps(recipe.model_dump(mode="json", exclude_none=True))
