"""What ``sgma evaluate`` runs: a checkpoint, the checkpoints it is compared with, the report.

The first checkpoint is evaluated on its split (:func:`~sgma_cli.engine.evaluate.job.
evaluate_checkpoint`) or scene (:func:`~sgma_cli.engine.evaluate.scene.evaluate_scene`);
every ``--compare`` checkpoint is then evaluated like it: the same tiles or scene, the same
subsets, and it must have the same classes. With ``out`` the report folder is checked
before anything runs and written at the end (:func:`~sgma_cli.engine.evaluate.report.
write_report`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sgma_cli.engine.evaluate.job import CheckpointEvaluation, EvaluateOptions, evaluate_checkpoint
from sgma_cli.engine.evaluate.report import check_out_dir, write_report
from sgma_cli.engine.evaluate.scene import SceneSource, evaluate_scene
from sgma_cli.engine.evaluate.scoring import Progress

__all__ = ["Comparison", "ProgressFor", "evaluate_and_compare"]

#: ``progress_for(checkpoint)`` -> a context holding the progress callback of that checkpoint.
ProgressFor = Callable[[Path], AbstractContextManager[Progress | None]]


@dataclass(frozen=True)
class Comparison:
    """A checkpoint's evaluation and those of the checkpoints compared with it.

    Attributes:
        main: the first checkpoint's evaluation.
        others: one evaluation per compared checkpoint, same data and subsets as ``main``.
        report: the files written to the report folder (empty without one).
    """

    main: CheckpointEvaluation
    others: tuple[CheckpointEvaluation, ...] = ()
    report: tuple[Path, ...] = ()

    @property
    def evaluations(self) -> list[CheckpointEvaluation]:
        """``main``, then ``others``."""
        return [self.main, *self.others]


def evaluate_and_compare(
    checkpoint: Path,
    compare: Sequence[Path] = (),
    *,
    data_dir: Path | None = None,
    split: str = "test",
    scene: SceneSource | None = None,
    options: EvaluateOptions | None = None,
    out: Path | None = None,
    progress_for: ProgressFor | None = None,
) -> Comparison:
    """Evaluate ``checkpoint``, then each of ``compare`` like it; write the report to ``out``.

    Args:
        checkpoint: the checkpoint to evaluate.
        compare: checkpoints evaluated on the same tiles (or scene) and subsets.
        data_dir: prepared dataset (default: the one the checkpoint was trained on).
        split: the split of ``data_dir``.
        scene: a labelled scene to evaluate instead of tiles.
        options: subsets, device, batch size, workers, precision.
        out: report folder (``metrics.json``, ``subsets.csv``, ``report.md``, plots).
        progress_for: a progress context per checkpoint, entered while it is evaluated.

    Raises:
        UsageError: ``out`` is a file, bad options.
        CheckpointError: unreadable checkpoints, or compared ones with other classes or
            without a modality of the subsets.
        DatasetError, RasterError: data that does not fit (see the jobs).
    """
    if out is not None:
        check_out_dir(out)

    def run(path: Path, like: CheckpointEvaluation | None) -> CheckpointEvaluation:
        with progress_for(path) if progress_for is not None else nullcontext() as progress:
            if scene is not None:
                return evaluate_scene(path, scene, options, progress=progress, like=like)
            return evaluate_checkpoint(
                path, data_dir=data_dir, split=split, options=options, progress=progress, like=like
            )

    main = run(Path(checkpoint), None)
    others = tuple(run(Path(p), main) for p in compare)
    report = tuple(write_report(out, main, others)) if out is not None else ()
    return Comparison(main, others, report)
