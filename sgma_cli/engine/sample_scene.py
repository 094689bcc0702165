"""The ``sample`` job: write a synthetic multi-sensor scene that ``sgma prepare`` reads.

Use from Python::

    from sgma_cli.engine.sample_scene import sample
    result = sample(Path("demo/scene"), size=1024, seed=0)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sgma_cli.data.synthetic import write_scene
from sgma_cli.errors import UsageError

__all__ = ["SampleResult", "sample"]


@dataclass(frozen=True)
class SampleResult:
    """What :func:`sample` wrote.

    Attributes:
        out_dir: the scene folder.
        files: role (``rgb``, ``dsm``, ``sar``, ``labels``, ``vectors``, ``marker``) -> file.
        size: RGB side in pixels.
        seed: the seed.
        seconds: wall time.
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    size: int = 1024
    seed: int = 0
    seconds: float = 0.0


def sample(out_dir: Path, size: int = 1024, seed: int = 0, vectors: bool = True) -> SampleResult:
    """Write the synthetic scene of :mod:`sgma_cli.data.synthetic` into ``out_dir``.

    Args:
        out_dir: folder to create (or reuse: the scene files are replaced atomically).
        size: RGB side in pixels (0.5 m each), even, 64..16384.
        seed: random seed; the same ``(size, seed)`` gives the same files.
        vectors: also write ``labels.gpkg`` (polygons of the label raster).

    Raises:
        UsageError: bad size, or ``out_dir`` is a file or not writable.
    """
    if size < 64 or size > 16384 or size % 2:
        raise UsageError(f"--size must be an even number between 64 and 16384, got {size}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("exists and is not a folder", out_dir)
    parent = (
        out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), Path("."))
    )
    if not os.access(parent, os.W_OK):
        raise UsageError("folder is not writable", parent)
    start = time.perf_counter()
    files = write_scene(out_dir, size=size, seed=seed, vectors=vectors)
    return SampleResult(
        out_dir=out_dir, files=files, size=size, seed=seed, seconds=time.perf_counter() - start
    )
