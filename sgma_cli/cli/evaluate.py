"""Placeholder for `sgma evaluate` (being built)."""

from __future__ import annotations

from sgma_cli.errors import UsageError


def command() -> None:
    """Not available yet."""
    raise UsageError("sgma evaluate is not available in this version yet")
