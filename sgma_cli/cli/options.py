"""Options and parsers shared by several commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.config.model import ModalitySpec

__all__ = ["KNOWN_BANDS", "parse_modalities"]

#: Band counts assumed for common sensor names when ``--modalities`` gives none.
KNOWN_BANDS = {
    "rgb": 3,
    "irrg": 3,
    "rgbir": 4,
    "dsm": 1,
    "ndsm": 1,
    "nir": 1,
    "sar": 2,
    "depth": 1,
    "event": 1,
    "lidar": 1,
}
_DEFAULT_NAMES = ("rgb", "dsm", "nir", "sar", "depth", "event", "lidar")


def parse_modalities(text: str) -> list[ModalitySpec]:
    """``"3"`` or ``"rgb,dsm,nir"`` or ``"rgb:3,sar:2"`` -> modality specs.

    A number N gives the first N of rgb, dsm, nir, sar, depth, event, lidar. A name
    without ``:bands`` takes its usual band count (1 if the name is not a known sensor).
    """
    from sgma_cli.config.model import ModalitySpec

    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= len(_DEFAULT_NAMES):
            raise UsageError(
                f"--modalities {count}: give between 1 and {len(_DEFAULT_NAMES)} modalities"
            )
        return [ModalitySpec(n, KNOWN_BANDS[n]) for n in _DEFAULT_NAMES[:count]]
    specs: list[ModalitySpec] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, bands = item.partition(":")
        try:
            count = int(bands) if bands else KNOWN_BANDS.get(name.lower(), 1)
            specs.append(ModalitySpec(name, count))
        except ValueError as err:
            raise UsageError(f"--modalities {item!r}: {err}") from None
    if not specs:
        raise UsageError("--modalities is empty; give a count (3) or names (rgb,dsm,nir)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--modalities names a modality twice: {names}")
    return specs
