"""Checkpoints: plain tensors and types only, atomic writes, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.errors import CheckpointError


def test_round_trip_with_train_state(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.meta.class_names == ["ground", "building", "tree"]
    assert ckpt.meta.modality_names == ["rgb", "dsm", "sar"]
    assert ckpt.meta.sgma_config().backbone == "test_convnext"
    state = {
        "step": 3,
        "torch_rng": torch.get_rng_state(),
        "python_rng": (3, (1, 2, 3), None),
        "numpy_rng": [1, 2],
    }
    path = save_checkpoint(
        tiny_checkpoint.with_name("resume.pt"), Checkpoint(ckpt.meta, ckpt.model, state)
    )
    again = load_checkpoint(path, with_train_state=True)
    assert again.train["step"] == 3 and torch.equal(again.train["torch_rng"], state["torch_rng"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: D105
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"meta": {"format": "sgma-checkpoint"}, "x": Evil()}, fh)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"model": {}}, "not an sgma checkpoint"),
        ({"meta": {"format": "sgma-checkpoint"}, "model": {}}, "bad checkpoint metadata"),
    ],
)
def test_not_sgma(tmp_path: Path, payload: dict, match: str) -> None:
    path = tmp_path / "x.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_garbage_and_missing(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_no_train_state_to_resume(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="no training state"):
        load_checkpoint(tiny_checkpoint, with_train_state=True)
