"""Modality subsets: all 2^M - 1 non-empty combinations, and parsing a user's list."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from sgma_cli.errors import UsageError

__all__ = ["all_subsets", "parse_subsets", "subset_label"]


def all_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first, each in model order (the paper's table order)."""
    names = list(modalities)
    return [c for size in range(len(names), 0, -1) for c in combinations(names, size)]


def parse_subsets(text: str, modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """``"all"`` or ``"rgb,dsm;rgb"`` -> subsets in model order; unknown names raise UsageError."""
    if text.strip().lower() == "all":
        return all_subsets(modalities)
    subsets: list[tuple[str, ...]] = []
    for part in text.split(";"):
        names = [n.strip() for n in part.split(",") if n.strip()]
        if not names:
            continue
        unknown = [n for n in names if n not in modalities]
        if unknown:
            raise UsageError(
                f"subset {part.strip()!r} names unknown modalities {unknown}; known: {', '.join(modalities)}"
            )
        subset = tuple(m for m in modalities if m in names)
        if subset not in subsets:
            subsets.append(subset)
    if not subsets:
        raise UsageError(f"no subset in {text!r}; use 'all' or e.g. 'rgb,dsm;rgb'")
    return subsets


def subset_label(subset: Sequence[str]) -> str:
    """``("rgb", "dsm")`` -> ``"rgb+dsm"``."""
    return "+".join(subset)
