"""Placeholder for `sgma prepare` (being built)."""

from __future__ import annotations

from sgma_cli.errors import UsageError


def command() -> None:
    """Not available yet."""
    raise UsageError("sgma prepare is not available in this version yet")
