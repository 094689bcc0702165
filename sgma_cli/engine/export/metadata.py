"""What an exported model file says about itself, so that it can be used alone.

``sgma export`` stores one JSON document in the file: under the key ``sgma`` of the ONNX
``metadata_props``, or as the extra file ``sgma.json`` of a ``torch.export`` archive
(``.pt2``). It holds the checkpoint's metadata (classes and colours, modalities with their
bands and normalisation, CRS, resolution, tile size, model config, validation metrics),
the graph's contract (modalities, inputs, outputs, fixed or dynamic size) and where it came
from (sgma and torch versions, the checkpoint's file name and SHA-256). ``sgma predict
--model`` reads nothing else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationError

from sgma_cli import __version__
from sgma_cli.config._base import StrictModel, explain_validation_error
from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.errors import CheckpointError

__all__ = [
    "METADATA_KEY",
    "EXTRA_FILE",
    "FORMAT",
    "GraphFormat",
    "ExportMeta",
    "file_sha256",
    "parse_export_meta",
]

#: ONNX ``metadata_props`` key of the JSON document.
METADATA_KEY = "sgma"
#: Name of the JSON document among a ``.pt2`` archive's extra files.
EXTRA_FILE = "sgma.json"
FORMAT = "sgma-export"

GraphFormat = Literal["onnx", "exported-program"]


class ExportMeta(StrictModel):
    """The JSON document of an exported model.

    Attributes:
        format: always ``"sgma-export"``.
        format_version: bumped when a reader must change.
        graph_format: ``onnx`` or ``exported-program``.
        sgma_version: sgma that exported the file.
        torch_version: torch that traced the graph.
        checkpoint: file name of the exported checkpoint.
        checkpoint_sha256: SHA-256 of that file's bytes.
        modalities: the graph's image inputs, in order (the model's order).
        inputs: input names: the modalities, then the mask.
        outputs: output names: ``logits`` [, ``robustness``].
        size: fixed ``H = W`` of the graph, or ``None`` when ``H`` and ``W`` are dynamic.
        size_multiple: ``H`` and ``W`` must be multiples of it.
        robustness: whether the graph returns the robustness maps.
        meta: the checkpoint's metadata (its training recipe left out).
    """

    format: Literal["sgma-export"] = FORMAT
    format_version: int = 1
    graph_format: GraphFormat
    sgma_version: str = __version__
    torch_version: str = str(torch.__version__)
    checkpoint: str
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    modalities: list[str]
    inputs: list[str]
    outputs: list[str]
    size: int | None
    size_multiple: int = 32
    robustness: bool = False
    meta: CheckpointMeta

    def to_json(self) -> str:
        """The document as compact JSON."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_export_meta(text: str | bytes | None, path: Path) -> ExportMeta:
    """Validate the JSON read from ``path``; any problem is one :class:`CheckpointError` line."""
    if not text:
        raise CheckpointError(
            "not an sgma export (no 'sgma' metadata); write it with sgma export", path
        )
    try:
        data = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"sgma metadata is not valid JSON ({err})", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError("not an sgma export (metadata of another format)", path)
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > 1:
        raise CheckpointError(
            f"exported by a newer sgma ({data.get('sgma_version')}, format {version}); "
            "upgrade sgma to use it",
            path,
        )
    try:
        return ExportMeta.model_validate(data)
    except ValidationError as err:
        raise CheckpointError(
            f"bad sgma metadata: {explain_validation_error(err, ExportMeta)}", path
        ) from None
