"""Modality subsets: all 2^M - 1 non-empty combinations, and the one parser of a user's list.

A subset is a tuple of modality names in model order, e.g. ``("rgb", "dsm")``. Every
subset a user names (``--subsets``, a recipe's ``train.val_subsets``, a Python caller's
tuples) goes through :func:`select_subsets`, which parses and checks it against the
model's modalities and against the modalities the data lacks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import combinations
from pathlib import Path

from sgma_cli.errors import DatasetError, UsageError

__all__ = ["all_subsets", "parse_subsets", "select_subsets", "subset_label"]


def all_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first, each in model order (the paper's table order)."""
    names = list(modalities)
    return [c for size in range(len(names), 0, -1) for c in combinations(names, size)]


def parse_subsets(text: str, modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """``"all"`` or ``"rgb,dsm;rgb"`` -> subsets in model order: :func:`select_subsets` on text."""
    return select_subsets(text, modalities)


def select_subsets(
    requested: str | Sequence[Sequence[str]],
    modalities: Sequence[str],
    missing: Collection[str] = (),
    source: Path | None = None,
) -> list[tuple[str, ...]]:
    """Parse and check a user's subsets against a model's modalities and the data at hand.

    Args:
        requested: ``"all"``, text such as ``"rgb,dsm;rgb"`` (``;`` between subsets, ``,``
            between names, any order), or sequences of names.
        modalities: the model's modality names, in model order.
        missing: model modalities the data lacks: ``"all"`` leaves out the subsets that
            use them, a named subset that uses one is refused.
        source: the dataset or scene folder, named in the error about ``missing``.

    Returns:
        The subsets in model order (names sorted into it), without repeats.

    Raises:
        UsageError: an unknown modality name, or no subset at all.
        DatasetError: a named subset needs a modality in ``missing``, or ``missing`` holds
            every modality.
    """
    if isinstance(requested, str) and requested.strip().lower() == "all":
        present = [n for n in modalities if n not in missing]
        if not present:
            raise DatasetError(
                f"this data has none of the modalities {', '.join(modalities)}", source
            )
        return all_subsets(present)
    if isinstance(requested, str):
        parts = [
            (p.strip(), [n.strip() for n in p.split(",") if n.strip()])
            for p in requested.split(";")
        ]
    else:
        parts = [(subset_label(s), list(s)) for s in requested]
    subsets: list[tuple[str, ...]] = []
    for text, names in parts:
        if not names:
            continue
        unknown = [n for n in names if n not in modalities]
        if unknown:
            raise UsageError(
                f"subset {text!r} names unknown modalities {unknown}; "
                f"known: {', '.join(modalities)}"
            )
        lacking = [n for n in names if n in missing]
        if lacking:
            raise DatasetError(
                f"subset {text!r} needs {lacking}, which this data does not have", source
            )
        subset = tuple(m for m in modalities if m in names)
        if subset not in subsets:
            subsets.append(subset)
    if not subsets:
        raise UsageError(f"no subset in {requested!r}; use 'all' or e.g. 'rgb,dsm;rgb'")
    return subsets


def subset_label(subset: Sequence[str]) -> str:
    """``("rgb", "dsm")`` -> ``"rgb+dsm"``."""
    return "+".join(subset)
