"""Issue 16: a damaged or foreign checkpoint file is one clear error, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.errors import CheckpointError

JUNK = {
    "random": os.urandom(3000),  # torch's weights-only unpickler: "Unsupported operand"
    "text": b"hello\n",  # the legacy unpickler: KeyError from its memo
    "empty": b"",
    "zip": b"PK\x03\x04junk" * 10,
}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_junk_is_a_checkpoint_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(JUNK[kind])
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint \(") as err:
        load_checkpoint(path)
    reason = str(err.value).split("not a readable checkpoint", 1)[1]
    assert "\n" not in reason and len(reason) < 170


def test_evaluate_junk_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(JUNK["text"])
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: {path}: not a readable checkpoint (damaged or not a PyTorch file: KeyError)"
    ]
