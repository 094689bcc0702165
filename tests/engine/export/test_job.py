"""sgma export: ONNX and ExportedProgram files that match PyTorch and describe themselves."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sgma_cli import __version__
from sgma_cli.config.checkpoint import Checkpoint, CheckpointMeta, ModalityNorm, save_checkpoint
from sgma_cli.config.dataset import ClassSpec
from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.engine.export import ExportJob, run_export
from sgma_cli.engine.export.formats import load_exported_program, onnx_session, read_onnx_meta
from sgma_cli.engine.weights import build_model, load_model
from sgma_cli.errors import CheckpointError, SgmaError, UsageError
from sgma_cli.model.sgma import SGMA
from tests.conftest import TINY_CLASSES
from tests.engine.export.exported import exported, tiny_checkpoint
from tests.engine.export.test_graph import NAMES, SUBSETS, _inputs, graph_inputs, reference

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model() -> SGMA:
    return load_model(tiny_checkpoint())[0]


def _run_onnx(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    session, meta = onnx_session(path, ["CPUExecutionProvider"])
    return session.run(None, {n: t.numpy() for n, t in zip(meta.inputs, inputs)})


class TestOnnx:
    """One graph over all sensors, dynamic H and W, with robustness maps."""

    @pytest.mark.parametrize("size", [(64, 64), (96, 160)], ids=["traced", "other-size"])
    def test_every_subset_matches_pytorch(self, model: SGMA, size: tuple[int, int]) -> None:
        path = exported("onnx").path
        images, mask = _inputs(size, seed=sum(size))
        for subset in SUBSETS:
            logits, rob = _run_onnx(path, graph_inputs(images, mask, subset, NAMES))
            ref_logits, ref_rob = reference(model, images, mask, subset)
            assert logits.shape == (2, 3, *size)
            np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=0)
            used = [NAMES.index(n) for n in subset]
            np.testing.assert_allclose(rob[:, used], ref_rob.numpy(), atol=1e-4, rtol=0)

    def test_batch_of_one(self, model: SGMA) -> None:
        images, mask = _inputs((64, 64))
        one = {n: t[:1] for n, t in images.items()}
        (logits, _) = _run_onnx(exported("onnx").path, graph_inputs(one, mask[:1], NAMES, NAMES))
        np.testing.assert_allclose(
            logits, reference(model, one, mask[:1], NAMES)[0].numpy(), atol=1e-4, rtol=0
        )

    def test_metadata(self) -> None:
        result = exported("onnx")
        meta = read_onnx_meta(result.path)
        assert meta == result.meta
        assert meta.graph_format == "onnx" and meta.sgma_version == __version__
        assert meta.torch_version == str(torch.__version__)
        digest = hashlib.sha256(tiny_checkpoint().read_bytes()).hexdigest()
        assert (meta.checkpoint, meta.checkpoint_sha256) == ("tiny.pt", digest)
        assert meta.modalities == list(NAMES) and meta.inputs == [*NAMES, "mask"]
        assert meta.outputs == ["logits", "robustness"] and meta.robustness
        assert meta.size is None and meta.size_multiple == 32  # dynamic
        ckpt = meta.meta
        assert [(c.name, tuple(c.color)) for c in ckpt.classes] == TINY_CLASSES
        assert [(m.name, m.bands) for m in ckpt.modalities] == [("rgb", 3), ("dsm", 1), ("sar", 1)]
        assert ckpt.modalities[0].mean == [120.0, 145.0, 120.0]
        assert ckpt.modalities[2].std == [5.0]
        assert ckpt.resolution == (0.5, 0.5) and ckpt.crs == "EPSG:32633"
        assert ckpt.tile_size == 64 and ckpt.recipe == {}

    def test_graph_inputs_are_symbolic(self) -> None:
        session, _ = onnx_session(exported("onnx").path, ["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in session.get_inputs()}
        assert shapes["rgb"][1] == 3 and shapes["mask"][1] == 3
        assert all(isinstance(d, str) for d in (*shapes["rgb"][::2], shapes["rgb"][3]))
        assert session.get_inputs()[-1].type == "tensor(bool)"

    def test_result(self) -> None:
        result = exported("onnx")
        assert result.max_abs_diff < 1e-4
        assert result.size_bytes == result.path.stat().st_size > 100_000
        assert not list(result.path.parent.glob(".*.part*"))  # no temporary left behind


class TestExportedProgram:
    """A static 64 px graph of two sensors, as a .pt2 archive."""

    def test_round_trip(self, model: SGMA) -> None:
        result = exported(
            "exported-program", dynamic=False, robustness=False, modalities=("rgb", "sar")
        )
        program, meta = load_exported_program(result.path)
        assert meta == result.meta
        assert meta.modalities == ["rgb", "sar"] and meta.size == 64
        assert meta.outputs == ["logits"] and meta.graph_format == "exported-program"
        images, mask = _inputs((64, 64))
        for subset in (("rgb",), ("sar",), ("rgb", "sar")):
            with torch.no_grad():
                logits = program.module()(*graph_inputs(images, mask, subset, ("rgb", "sar")))
            torch.testing.assert_close(
                logits, reference(model, images, mask, subset)[0], atol=1e-4, rtol=0
            )
        with pytest.raises(Exception, match=r"64|size|shape|Guard"):  # fixed size: 96 refused
            program.module()(*graph_inputs(*_inputs((96, 96)), ("rgb",), ("rgb", "sar")))


def _checkpoint_with(path: Path, names: tuple[str, ...]) -> Path:
    """A tiny checkpoint whose sensors have the given names (1 band each)."""
    config = SGMAConfig(
        modalities=tuple(ModalitySpec(n, 1) for n in names),
        num_classes=2,
        backbone="test_resnet",
        head_dim=16,
    )
    meta = CheckpointMeta(
        model=config.to_dict(),
        classes=[ClassSpec(name="a", color=(0, 0, 0)), ClassSpec(name="b", color=(1, 1, 1))],
        modalities=[ModalityNorm(name=n, bands=1, mean=[0.0], std=[1.0]) for n in names],
    )
    return save_checkpoint(path, Checkpoint(meta=meta, model=build_model(config).state_dict()))


class TestErrors:
    def test_missing_extra_is_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
        out = tmp_path / "m.onnx"
        with pytest.raises(SgmaError, match=r"onnxscript, not installed.*sgma-cli\[onnx\]") as err:
            run_export(ExportJob(tiny_checkpoint(), out))
        assert "\n" not in str(err.value) and not out.exists()

    def test_bad_checkpoint(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError, match="bad.pt: not a readable checkpoint"):
            run_export(ExportJob(bad, tmp_path / "m.pt2", format="exported-program"))
        assert list(tmp_path.iterdir()) == [bad]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            (
                {"modalities": ["nir"]},
                "--modalities nir: not in the checkpoint; it has rgb, dsm, sar",
            ),
            ({"size": 48}, "--size 48 must be a positive multiple of 32"),
            ({"format": "tflite"}, "--format 'tflite': use onnx or exported-program"),
            ({"modalities": ["rgb", "rgb"]}, "names a sensor twice"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
        job = ExportJob(
            tiny_checkpoint(), tmp_path / "m.pt2", **{"format": "exported-program", **kwargs}
        )
        with pytest.raises(UsageError, match=match):
            run_export(job)
        assert list(tmp_path.iterdir()) == []

    def test_modality_with_a_graph_name_is_refused(self, tmp_path: Path) -> None:
        ckpt = _checkpoint_with(tmp_path / "c.pt", ("mask", "dsm"))
        with pytest.raises(CheckpointError, match="modality 'mask' has the name of a graph input"):
            run_export(ExportJob(ckpt, tmp_path / "m.pt2", format="exported-program"))

    def test_untraceable_model_is_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("Could not guard on data-dependent expression u0 == 1\nmore")

        monkeypatch.setattr(torch.export, "export", refuse)
        job = ExportJob(
            tiny_checkpoint(), tmp_path / "m.pt2", format="exported-program", dynamic=True
        )
        with pytest.raises(CheckpointError) as err:
            run_export(job)
        assert str(err.value) == (
            f"{tiny_checkpoint()}: the model (backbone test_resnet) cannot be expressed as a graph "
            "with dynamic H and W: Could not guard on data-dependent expression u0 == 1; "
            "export without --dynamic (fixed --size)"
        )
        assert not (tmp_path / "m.pt2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_each_subset_as_its_own_onnx_graph(model: SGMA, subset: tuple[str, ...]) -> None:
    """Slow (one export each): a graph of just that subset matches PyTorch too."""
    path = exported("onnx", dynamic=False, robustness=False, modalities=subset).path
    images, mask = _inputs((64, 64))
    (logits,) = _run_onnx(path, graph_inputs(images, mask, subset, subset))
    np.testing.assert_allclose(
        logits, reference(model, images, mask, subset)[0].numpy(), atol=1e-4, rtol=0
    )
