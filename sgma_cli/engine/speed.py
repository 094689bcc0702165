"""How a job makes the model fast on its device, without changing its numbers.

Two choices, both made here once for ``train``, ``evaluate``, ``predict`` and ``profile``:

* **Encode strategy** (:func:`encode_strategy`): the shared backbone sees every modality
  either packed into one batch of ``B * M_e`` images or in one call of ``B`` images per
  modality. The outputs are the same. The rule per device, from
  ``benchmarks/evaluate_subsets.py``: for inference on the CPU one call per modality
  (measured 1.17-1.33x faster for PVT-v2-b0 at 256²: smaller working sets stay in cache);
  in training (no gain measured with the backward pass) and on CUDA (fewer, larger kernels
  keep the GPU busy) one packed batch. ``SGMA_ENCODE=packed|per_modality`` overrides it.
* **torch.compile** (:func:`compile_model`): the parts that pay off, compiled with
  inductor: the backbone, each scale's SGF :meth:`fuse` (memory-bound softmaxes and
  weighted sums, where fusing kernels saves most: 2.2x on the CPU) and the head. Shapes
  are static: a modality subset is a boolean tensor of fixed shape ``(B, M_e)``, so
  changing subsets never recompiles, only a new batch or window size does (once, then
  cached). Inductor's cache lives in :func:`inductor_cache_dir` across runs; the first
  compilation of PVT-v2-b0 takes about a minute on a 2-core CPU, a cached one seconds.
  ``auto`` compiles on CUDA only: on the CPU the first compilation costs more than a
  short job saves (``--compile`` turns it on).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from sgma_cli.config.model import EncodeStrategy
from sgma_cli.errors import DeviceError, UsageError
from sgma_cli.model.sgf import SemanticGuidedFusion
from sgma_cli.model.sgma import SGMA

__all__ = [
    "COMPILE_PARTS",
    "CompileChoice",
    "CompiledModel",
    "compile_model",
    "encode_strategy",
    "compiler_missing",
    "inductor_cache_dir",
    "maybe_compile",
    "resolve_compile",
    "speed_up",
    "use_encode_strategy",
]

#: ``True``/``False``, or ``None`` for auto (CUDA only).
CompileChoice = bool | None
#: What :func:`compile_model` compiles, in the model's order.
COMPILE_PARTS: tuple[str, ...] = ("backbone", "fuse", "head")
#: Recompilations allowed per compiled function: 4 scales share SGF's ``fuse`` code, and
#: each may see a training, a validation and a last, smaller batch.
_RECOMPILE_LIMIT = 64


def encode_strategy(device: torch.device, training: bool = False) -> EncodeStrategy:
    """The faster way to feed the shared backbone on ``device`` (see the module docstring).

    Training packs everywhere: with the backward pass one call per modality was no faster
    on the CPU (``benchmarks/train_step.py``, PVT-v2-b2: 3.68 s packed vs 3.86 s per SGF +
    MAS step).
    """
    forced = os.environ.get("SGMA_ENCODE", "").strip()
    if forced:
        if forced not in ("packed", "per_modality"):
            raise UsageError(f"SGMA_ENCODE={forced!r}: use packed or per_modality")
        return cast(EncodeStrategy, forced)
    return "packed" if device.type == "cuda" or training else "per_modality"


def use_encode_strategy(model: nn.Module, device: torch.device, training: bool = False) -> None:
    """Set ``model.encode_strategy`` (an :class:`SGMA`) for ``device``; other models as they are."""
    if isinstance(model, SGMA):
        model.encode_strategy = encode_strategy(device, training)


def resolve_compile(choice: CompileChoice | Literal["auto"], device: torch.device) -> bool:
    """Whether to compile: ``None``/``"auto"`` means on CUDA, not on the CPU."""
    if choice is None or choice == "auto":
        return device.type == "cuda"
    return bool(choice)


def compiler_missing(device: torch.device) -> str | None:
    """What inductor lacks to generate code for ``device`` (``None``: nothing).

    On the CPU it compiles C++ (``$CXX`` or g++, clang++, c++ on the ``PATH``); on CUDA it
    writes Triton kernels (the ``triton`` package that CUDA builds of PyTorch install).
    """
    if device.type == "cuda":
        from torch.utils._triton import has_triton  # noqa: PLC0415

        return None if has_triton() else "the triton package (pip install triton)"
    names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    if any(name and shutil.which(name) for name in names):
        return None
    return "a C++ compiler (g++ or clang++; or set CXX)"


def maybe_compile(
    model: SGMA, choice: CompileChoice | Literal["auto"], device: torch.device
) -> CompiledModel | None:
    """Compile ``model`` when ``choice`` asks for it on ``device`` (see :func:`resolve_compile`).

    Raises:
        DeviceError: compiling was asked for explicitly and inductor cannot generate code
            on ``device``; in ``auto`` mode the model then stays eager.
    """
    if not resolve_compile(choice, device):
        return None
    missing = compiler_missing(device)
    if missing is not None:
        if choice is True:
            raise DeviceError(
                f"--compile needs {missing} on {device.type}; install it or drop --compile"
            )
        return None
    return compile_model(model)


def speed_up(
    model: nn.Module,
    device: torch.device,
    compile: CompileChoice | Literal["auto"],
    *,
    training: bool = False,
) -> CompiledModel | None:
    """What every job does to its model: the device's encode strategy, then
    :func:`maybe_compile` (an :class:`SGMA` only). Returns what was compiled, if anything."""
    use_encode_strategy(model, device, training)
    return maybe_compile(model, compile, device) if isinstance(model, SGMA) else None


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs.

    ``TORCHINDUCTOR_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/sgma/inductor``
    (``~/.cache/sgma/inductor``): a user cache, not ``/tmp``, so it survives reboots.
    """
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgma" / "inductor"


@dataclass
class CompiledModel:
    """What :func:`compile_model` did, for the job's report line.

    Attributes:
        parts: the compiled parts (of :data:`COMPILE_PARTS`).
        cache_dir: inductor's cache.
        first_batch_s: seconds from compiling to the end of the job's first batch (the
            compilation happens there), once :meth:`watch` saw it; ``None`` before.
    """

    parts: tuple[str, ...]
    cache_dir: Path
    first_batch_s: float | None = None
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def first_batch_done(self) -> None:
        """Note the end of the first batch (later calls change nothing)."""
        if self.first_batch_s is None:
            self.first_batch_s = time.perf_counter() - self._started

    def watch(self, progress: Callable[..., None] | None) -> Callable[..., None]:
        """``progress`` that also notes the first batch (see :meth:`first_batch_done`)."""

        def watched(*args: Any) -> None:
            self.first_batch_done()
            if progress is not None:
                progress(*args)

        return watched

    def describe(self) -> str:
        """One line: what was compiled, the first batch's time, where the cache is."""
        took = "" if self.first_batch_s is None else f"; first batch {self.first_batch_s:.1f} s"
        return (
            f"torch.compile: {', '.join(self.parts)}{took} (compiling included; kernels "
            f"cached in {self.cache_dir} for the next runs)"
        )


def compile_model(
    model: SGMA,
    parts: tuple[str, ...] = COMPILE_PARTS,
    *,
    backend: str | Callable[..., Any] | None = None,
) -> CompiledModel:
    """Compile ``parts`` of ``model`` in place with ``torch.compile`` (static shapes).

    Parameters and ``state_dict`` keys are untouched (``nn.Module.compile``), so
    checkpoints saved from a compiled model load anywhere. Compilation itself happens on
    the first call.

    Args:
        model: the model, already on its device.
        parts: any of :data:`COMPILE_PARTS`.
        backend: ``torch.compile`` backend (a name or a callable); default inductor
            (``SGMA_COMPILE_BACKEND`` overrides it, e.g. ``aot_eager`` to check tracing
            without generating code).
    """
    unknown = sorted(set(parts) - set(COMPILE_PARTS))
    if unknown:
        raise ValueError(f"unknown compile parts {unknown}; use {list(COMPILE_PARTS)}")
    cache = inductor_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
    backend = backend or os.environ.get("SGMA_COMPILE_BACKEND") or "inductor"
    import torch._dynamo  # noqa: PLC0415 (only jobs that compile pay for the import)
    import torch._inductor.config  # noqa: PLC0415

    dynamo = torch._dynamo.config
    limit_name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, limit_name, max(getattr(dynamo, limit_name), _RECOMPILE_LIMIT))
    # random ops (dropout) draw from PyTorch's generator as in eager mode, so a seed gives
    # the same run compiled or not (inductor's own generator would give other draws)
    torch._inductor.config.fallback_random = True
    options: dict[str, Any] = {"backend": backend, "dynamic": False}
    if "backbone" in parts:
        model.backbone.compile(**options)
    if "fuse" in parts:
        for fusion in model.fusions:
            if isinstance(fusion, SemanticGuidedFusion):
                fusion.fuse = torch.compile(fusion.fuse, **options)  # type: ignore[method-assign]
    if "head" in parts:
        model.head.compile(**options)
    return CompiledModel(tuple(p for p in COMPILE_PARTS if p in parts), cache)
