"""Issue 14: checkpoints carry a content digest; a damaged copy is refused with one line.

The damage mirrors what the issue measured: random-byte files, truncations and copies with
20 flipped bytes of a checkpoint holding weights and a training state (AdamW moments and
RNG states, as ``last.pt``). Every copy must give a one-line :class:`CheckpointError`
naming the file: no other exception, and no silent load. ``make test`` runs 30 copies,
``-m slow`` the issue's 300.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sgma_cli.config.checkpoint import (
    Checkpoint,
    content_digest,
    load_checkpoint,
    save_checkpoint,
)
from sgma_cli.engine.train.randomness import capture_rng
from sgma_cli.engine.weights import build_model
from sgma_cli.errors import CheckpointError
from tests.conftest import make_tiny_checkpoint

KINDS = ("random", "truncate", "flip")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint after one AdamW step, with the resume state ``train`` writes."""
    root = tmp_path_factory.mktemp("trained")
    base = load_checkpoint(make_tiny_checkpoint(root / "base.pt"))
    model = build_model(base.meta.sgma_config())
    model.load_state_dict(base.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "rng": [capture_rng()],
        "best": {"average": 0.5},
    }
    return save_checkpoint(root / "last.pt", Checkpoint(base.meta, model.state_dict(), state))


def _damaged(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One damaged copy of ``data``: random bytes, a truncation, or 20 flipped bytes."""
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(1, len(data)))).astype(np.uint8).tobytes()
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    arr = np.frombuffer(data, np.uint8).copy()
    where = rng.choice(len(arr), 20, replace=False)
    arr[where] ^= rng.integers(1, 256, 20).astype(np.uint8)  # never 0: each byte changes
    return arr.tobytes()


def _outcomes(trained: Path, per_kind: int, seed: int) -> Counter[tuple[str, str]]:
    """Load ``per_kind`` damaged copies of each kind; count refusals, tracebacks, loads."""
    data, rng = trained.read_bytes(), np.random.default_rng(seed)
    counts: Counter[tuple[str, str]] = Counter()
    for kind in KINDS:
        for i in range(per_kind):
            path = trained.with_name(f"bad_{kind}_{i}.pt")
            path.write_bytes(_damaged(data, kind, rng))
            try:
                load_checkpoint(path, with_train_state=True)
                counts[kind, "silent load"] += 1
            except Exception as err:  # noqa: BLE001 - anything else than a refusal is counted
                one_line = "\n" not in str(err) and str(err).startswith(f"{path}: ")
                refused = type(err).__name__ == "CheckpointError" and one_line
                counts[kind, "refused" if refused else f"traceback {type(err).__name__}"] += 1
            finally:
                path.unlink()
    return counts


def test_thirty_damaged_copies_are_refused(trained: Path) -> None:
    assert _outcomes(trained, 10, seed=1) == {(k, "refused"): 10 for k in KINDS}


@pytest.mark.slow
def test_three_hundred_damaged_copies_are_refused(trained: Path) -> None:
    assert _outcomes(trained, 100, seed=0) == {(k, "refused"): 100 for k in KINDS}


@pytest.fixture(scope="module")
def trained_raw(trained: Path) -> dict:
    """The trained checkpoint's payload as ``torch.load`` gives it (read once: loads are slow)."""
    return torch.load(trained, weights_only=True)


@pytest.fixture
def raw(trained_raw: dict) -> dict:
    """A copy of the payload that a test may edit."""
    return copy.deepcopy(trained_raw)


class TestDigest:
    def test_written_and_checked(self, trained: Path, raw: dict) -> None:
        ckpt = load_checkpoint(trained, with_train_state=True)
        assert ckpt.digest == raw["digest"] == content_digest(raw)
        assert len(ckpt.digest) == len("sha256:") + 64

    def test_one_changed_weight_is_refused(self, raw: dict, tmp_path: Path) -> None:
        name = next(iter(raw["model"]))
        raw["model"][name].view(-1)[0] += 1e-3  # content changed, digest kept
        torch.save(raw, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=r"edited\.pt: damaged checkpoint: its content"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_changed_metadata_is_refused(self, raw: dict, tmp_path: Path) -> None:
        raw["meta"]["classes"][0]["name"] = "water"
        torch.save(raw, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match="does not match the digest"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_changed_train_state_is_refused(self, raw: dict, tmp_path: Path) -> None:
        raw["train"]["step"] = 8
        torch.save(raw, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match="does not match the digest"):
            load_checkpoint(tmp_path / "edited.pt", with_train_state=True)

    @pytest.mark.parametrize("digest", [7, "md5:00", "sha256:" + "0" * 64])
    def test_bad_digest_is_refused(self, raw: dict, tmp_path: Path, digest: object) -> None:
        raw["digest"] = digest
        torch.save(raw, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=r"edited\.pt: damaged checkpoint"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_unknown_entry_is_refused(self, raw: dict, tmp_path: Path) -> None:
        raw["digset"] = raw.pop("digest")  # a damaged key must not pass for an old file
        torch.save(raw, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=r"unknown entries \['digset'\]"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_checkpoint_from_before_digests_loads(self, raw: dict, tmp_path: Path) -> None:
        del raw["digest"]
        torch.save(raw, tmp_path / "old.pt")
        ckpt = load_checkpoint(tmp_path / "old.pt", with_train_state=True)
        assert ckpt.digest is None and ckpt.train["step"] == 7
        assert ckpt.meta.class_names == ["ground", "building", "tree"]

    def test_digest_ignores_pickling(self, trained: Path, tmp_path: Path) -> None:
        """Saved again (new pickle bytes), the same content keeps the same digest."""
        ckpt = load_checkpoint(trained, with_train_state=True)
        again = save_checkpoint(
            tmp_path / "again.pt", Checkpoint(ckpt.meta, ckpt.model, ckpt.train)
        )
        assert load_checkpoint(again).digest == ckpt.digest
