"""Plan a training job: every check a user can fail, before any process starts.

:func:`plan_training` checks everything the user can get wrong (recipe against dataset,
model, run folder, checkpoint to resume, GPUs) and turns the recipe into the model config
once; :func:`~sgma_cli.engine.train.job.train` then runs the loop of
:mod:`sgma_cli.engine.train.loop` (AdamW + warm-up/poly, gradient accumulation and
clipping, bf16 autocast on CUDA, validation over all modality subsets, best/last
checkpoints, exact resume) on one process, N spawned processes or a ``torchrun`` group.

Run folder::

    RUN_DIR/recipe.toml        the resolved recipe (with the dataset path)
    RUN_DIR/metrics.csv        training and validation rows (see engine.run_log)
    RUN_DIR/tb/                TensorBoard events
    RUN_DIR/checkpoints/last.pt, best.pt
    RUN_DIR/loss.png, val_miou.png, mas_probs.png, summary.json
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint
from sgma_cli.config.dataset import DatasetManifest, load_manifest
from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.config.recipe import Recipe, recipe_to_toml
from sgma_cli.data.tile_dataset import list_tiles
from sgma_cli.engine.device import check_gpu_count, resolve_device
from sgma_cli.engine.distributed import torchrun_env
from sgma_cli.engine.locks import refuse_if_locked
from sgma_cli.engine.subsets import parse_subsets
from sgma_cli.engine.weights import build_model, load_backbone_weights
from sgma_cli.errors import CheckpointError, ConfigError, DatasetError, UsageError
from sgma_cli.model.backbones import create_backbone

__all__ = [
    "CHECKPOINT_DIR",
    "TrainOptions",
    "TrainPlan",
    "load_pretrained",
    "plan_training",
    "write_recipe",
]

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainOptions:
    """Where and how to run a recipe: what ``sgma train`` takes besides the recipe.

    Attributes:
        data_dir: the prepared dataset (default: the recipe's ``data.dir``).
        run_dir: the run folder (default: ``runs/<recipe name>``).
        device: ``auto``, ``cpu`` or ``cuda`` (one process, or ``nproc`` of them).
        gpus: data-parallel GPU processes (NCCL); 0: ``nproc`` processes on ``device``.
        nproc: data-parallel processes on ``device`` (gloo on CPU).
        resume: continue from ``RUN_DIR/checkpoints/last.pt``.
    """

    data_dir: Path | None = None
    run_dir: Path | None = None
    device: str = "auto"
    gpus: int = 0
    nproc: int = 1
    resume: bool = False


@dataclass(frozen=True)
class TrainPlan:
    """A validated training job; picklable, so spawned ranks receive it as is.

    Attributes:
        recipe: the resolved recipe (``data.dir`` absolute).
        data_dir: the prepared dataset.
        run_dir: the run folder.
        device_type: ``"cpu"`` or ``"cuda"``.
        world_size: processes (1 without DDP).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        modalities: the modalities trained on, in dataset order.
        subsets: validation subsets.
        model: the model config: the recipe's ``[model]`` on this dataset.
    """

    recipe: Recipe
    data_dir: Path
    run_dir: Path
    device_type: str
    world_size: int
    resume: bool
    modalities: tuple[str, ...]
    subsets: tuple[tuple[str, ...], ...]
    model: SGMAConfig

    @property
    def last_checkpoint(self) -> Path:
        """``RUN_DIR/checkpoints/last.pt``."""
        return self.run_dir / CHECKPOINT_DIR / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        """``RUN_DIR/checkpoints/best.pt``."""
        return self.run_dir / CHECKPOINT_DIR / "best.pt"


def load_pretrained(weights: Path, backbone: str) -> dict[str, torch.Tensor]:
    """The ``model.pretrained`` file's state dict, refused unless it fits ``backbone``.

    Raises:
        ConfigError: missing, unreadable or not-fitting file (see ``load_backbone_weights``).
    """
    try:
        return load_backbone_weights(weights, backbone)
    except ValueError as err:
        raise ConfigError(f"model.pretrained {err}", weights) from None


def _model_config(
    recipe: Recipe, manifest: DatasetManifest, modalities: tuple[str, ...]
) -> SGMAConfig:
    """The recipe's model on this dataset, built once on the meta device (no memory).

    The build runs every check of the model's constructors (heads that divide the
    backbone's channels, …) here, before any process starts.
    """
    try:
        create_backbone(recipe.model.backbone, in_chans=3, device="meta")
    except ValueError as err:
        raise ConfigError(f"model.backbone: {err}") from None
    if recipe.model.pretrained is not None:
        load_pretrained(Path(recipe.model.pretrained).expanduser(), recipe.model.backbone)
    specs = tuple(ModalitySpec(n, manifest.modality(n).bands) for n in modalities)
    config = recipe.model.to_config(specs, len(manifest.classes))
    try:
        build_model(config, device="meta")
    except ValueError as err:
        raise ConfigError(f"recipe [model] does not fit the dataset: {err}") from None
    return config


def _check_writable(run_dir: Path) -> None:
    try:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(
            f"cannot write the run folder ({err.strerror}); choose another --out", run_dir
        ) from None


def _dataset(
    recipe: Recipe, data_dir: Path | None
) -> tuple[Path, DatasetManifest, tuple[str, ...]]:
    """The dataset folder, its manifest and the modalities to train on (dataset order)."""
    data_value = data_dir if data_dir is not None else recipe.data.dir
    if data_value is None:
        raise UsageError("no dataset: pass --data DATA_DIR or set data.dir in the recipe")
    data_path = Path(data_value).expanduser().resolve()
    if not data_path.exists():
        raise DatasetError(
            "dataset folder not found; run `sgma prepare` first or fix --data", data_path
        )
    manifest = load_manifest(data_path)
    wanted = recipe.data.modalities or manifest.modality_names
    unknown = [n for n in wanted if n not in manifest.modality_names]
    if unknown:
        raise DatasetError(
            f"recipe data.modalities names {unknown}, which the dataset does not have "
            f"(it has {manifest.modality_names}); fix data.modalities or use another --data",
            data_path,
        )
    for name in wanted:
        if manifest.modality(name).stats is None:
            raise DatasetError(
                f"modality {name} has no statistics in dataset.toml; re-run `sgma prepare`",
                data_path,
            )
    if recipe.data.classes is not None and list(recipe.data.classes) != manifest.class_names:
        raise DatasetError(
            f"recipe data.classes {list(recipe.data.classes)} differ from the dataset's "
            f"{manifest.class_names}",
            data_path,
        )
    return data_path, manifest, tuple(n for n in manifest.modality_names if n in wanted)


def _processes(options: TrainOptions) -> tuple[str, int]:
    """``(device type, processes)`` of the job: ``--gpus``, ``--nproc`` or a torchrun group."""
    gpus, nproc = options.gpus, options.nproc
    if gpus < 0 or nproc < 1:
        raise UsageError(f"--gpus must be >= 0 and --nproc >= 1 (got {gpus}, {nproc})")
    if gpus and nproc > 1:
        raise UsageError(
            "--gpus N and --nproc N both ask for processes; "
            "use --gpus for GPUs, --nproc with --device cpu"
        )
    torchrun = torchrun_env()
    if gpus:
        check_gpu_count(gpus)
        device_type, world = "cuda", gpus
    else:
        device_type, world = resolve_device(options.device).type, nproc
    if torchrun is not None:
        world = torchrun[1]
        auto_cuda = options.device == "auto" and torch.cuda.is_available()
        device_type = "cuda" if auto_cuda else device_type
    if device_type == "cuda" and world > 1 and not gpus and torchrun is None:
        check_gpu_count(world)
    return device_type, world


def _check_tiles(recipe: Recipe, data_path: Path, world: int) -> None:
    tiles = len(list_tiles(data_path, "train"))
    per_step = recipe.data.batch_size * world * recipe.train.accumulate
    if tiles == 0:
        raise DatasetError(
            "no training tiles (prepared with a 0 training share in --split, e.g. 0,0,1: "
            "an evaluation-only dataset); prepare it again with --split 0.8,0.1,0.1",
            data_path,
        )
    if tiles < per_step:
        raise DatasetError(
            f"the train split has {tiles} tile(s); one step needs data.batch_size × processes × "
            f"train.accumulate = {per_step}; lower data.batch_size",
            data_path,
        )


def _samples_per_step(recipe: Mapping[str, Any], world: int) -> int:
    """Images per optimizer step: ``batch_size x processes x accumulate`` (sets epoch length)."""
    return int(recipe["data"]["batch_size"]) * world * int(recipe["train"]["accumulate"])


def _check_resume(
    recipe: Recipe, config: SGMAConfig, manifest: DatasetManifest, path: Path, world: int
) -> Checkpoint:
    ckpt = load_checkpoint(path, with_train_state=True)
    if ckpt.meta.class_names != manifest.class_names:
        raise CheckpointError(
            f"was trained on classes {ckpt.meta.class_names}, "
            f"the dataset has {manifest.class_names}",
            path,
        )
    if tuple(ckpt.meta.modality_names) != config.modality_names:
        raise CheckpointError(
            f"was trained on modalities {ckpt.meta.modality_names}, "
            f"the recipe asks for {list(config.modality_names)}",
            path,
        )
    # compared as configs, so keys added since that run read as their defaults
    trained = ckpt.meta.sgma_config()
    if trained != config:
        before, now = trained.to_dict(), config.to_dict()
        changed = sorted(k for k in now if before.get(k) != now[k])
        raise CheckpointError(
            f"model settings {changed} differ from the recipe; resume with the recipe of that run",
            path,
        )
    for key in ("optimizer", "step", "rng", "world_size", "seed"):
        if key not in ckpt.train:  # type: ignore[operator]
            raise CheckpointError(f"training state lacks {key!r}; the checkpoint is damaged", path)
    # The position in the data and the learning-rate schedule are derived from the step count,
    # so the images per step and the seed must be those of the interrupted run.
    train = ckpt.train or {}
    try:
        before_step = _samples_per_step(ckpt.meta.recipe, int(train["world_size"]))
        int(train["seed"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            "its recipe or training state lacks the batch size, process count or seed; "
            "resume from a last.pt that sgma train wrote",
            path,
        ) from None
    now_step = _samples_per_step(recipe.model_dump(), world)
    if before_step != now_step:
        raise CheckpointError(
            f"the run used {before_step} images per step (batch_size x processes x accumulate), "
            f"this resume would use {now_step}; resume with the same data.batch_size, "
            "train.accumulate and process count",
            path,
        )
    if int(train["seed"]) != recipe.train.seed:
        raise CheckpointError(
            f"the run used train.seed = {train['seed']}; resume with the same seed", path
        )
    return ckpt


def _run_dir(recipe: Recipe, options: TrainOptions) -> Path:
    """The run folder, refused when it holds a run and ``resume`` is off, or none to resume."""
    chosen = options.run_dir if options.run_dir is not None else Path("runs") / recipe.name
    out = Path(chosen).expanduser().resolve()
    env = torchrun_env()
    if env is None or env[0] == 0:  # a torchrun group's other ranks run beside rank 0's lock
        refuse_if_locked(out)  # a run writing there now: say so before "add --resume"
    last = out / CHECKPOINT_DIR / "last.pt"
    if options.resume:
        if not last.exists():
            raise UsageError(f"nothing to resume: {last} does not exist; start without --resume")
    elif last.exists():
        raise UsageError(
            f"already holds a run ({last.name}); "
            "add --resume to continue it or choose another --out",
            out,
        )
    return out


def plan_training(recipe: Recipe, options: TrainOptions | None = None) -> TrainPlan:
    """Validate a training job before any process starts.

    Args:
        recipe: a validated recipe (``load_recipe``).
        options: dataset, run folder, device and processes, resume (default: all defaults).

    Raises:
        UsageError: no dataset given, bad process counts, run folder unwritable or already
            holding a run (without ``resume``), nothing to resume.
        DatasetError: missing dataset, modalities or classes that disagree with the recipe,
            too few tiles for one step.
        ConfigError: an unknown backbone, a model the recipe's ``[model]`` cannot build on
            this dataset, a pretrained weights file that does not fit the backbone.
        CheckpointError: a damaged ``last.pt`` on resume, or one from another setup.
        DeviceError: more GPUs than exist, CUDA asked for but absent.
    """
    options = options if options is not None else TrainOptions()
    data_path, manifest, modalities = _dataset(recipe, options.data_dir)
    device_type, world = _processes(options)
    _check_tiles(recipe, data_path, world)
    config = _model_config(recipe, manifest, modalities)
    subsets = tuple(parse_subsets(recipe.train.val_subsets, modalities))
    out = _run_dir(recipe, options)
    resolved = recipe.model_copy(
        update={"data": recipe.data.model_copy(update={"dir": str(data_path)})}
    )
    if options.resume:
        _check_resume(resolved, config, manifest, out / CHECKPOINT_DIR / "last.pt", world)
    _check_writable(out)
    return TrainPlan(
        recipe=resolved,
        data_dir=data_path,
        run_dir=out,
        device_type=device_type,
        world_size=world,
        resume=options.resume,
        modalities=modalities,
        subsets=subsets,
        model=config,
    )


def write_recipe(plan: TrainPlan) -> Path:
    """Save the resolved recipe as ``RUN_DIR/recipe.toml`` (atomically)."""
    path = plan.run_dir / "recipe.toml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"# resolved by sgma train\n{recipe_to_toml(plan.recipe)}")
    tmp.replace(path)
    return path
