"""The speed choices: encode strategy per device, and torch.compile without new numbers.

Compiled code must give eager's numbers (1e-4, fp32), never break fuse's graph, and never
recompile when only the modality subset changes. Tracing is checked with a counting
backend (cheap); inductor, which generates and compiles C++, runs on one scale's fuse in
``make test`` and on the whole model under ``-m slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from sgma_cli.engine.speed import (
    COMPILE_PARTS,
    compile_model,
    compiler_missing,
    encode_strategy,
    inductor_cache_dir,
    maybe_compile,
    resolve_compile,
    use_encode_strategy,
)
from sgma_cli.engine.train.step import TrainForward
from sgma_cli.errors import DeviceError, UsageError
from sgma_cli.model.sgma import SGMA
from tests.model import conftest as model_fixtures
from tests.model.conftest import MODALITIES, NAMES, SIZE, SUBSETS, subset_id

# the model tests' inputs: (2, bands, 64, 64) images, and a mask with a hole, nodata
# stripes and a SAR swath that ends mid-tile
images = model_fixtures.images
swath_mask = model_fixtures.swath_mask


def _model(backbone: str = "test_convnext", seed: int = 0) -> SGMA:
    torch.manual_seed(seed)
    return SGMA(MODALITIES, num_classes=4, backbone=backbone, head_dim=16).eval()


@pytest.fixture
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One inductor cache for the session's compiled tests (kernels compile once)."""
    path = tmp_path_factory.getbasetemp() / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


class TestEncodeStrategy:
    def test_rule_per_device(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("SGMA_ENCODE", raising=False)
        assert encode_strategy(torch.device("cpu")) == "per_modality"
        assert encode_strategy(torch.device("cuda", 0)) == "packed"
        assert encode_strategy(torch.device("cpu"), training=True) == "packed"

    def test_environment_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SGMA_ENCODE", "packed")
        model = _model()
        use_encode_strategy(model, torch.device("cpu"))
        assert model.encode_strategy == "packed"
        monkeypatch.setenv("SGMA_ENCODE", "sideways")
        with pytest.raises(UsageError, match="SGMA_ENCODE='sideways'"):
            encode_strategy(torch.device("cpu"))


class TestCompileChoice:
    @pytest.mark.parametrize(
        ("choice", "cpu", "cuda"),
        [(None, False, True), ("auto", False, True), (True, True, True), (False, False, False)],
    )
    def test_auto_is_cuda_only(self, choice: object, cpu: bool, cuda: bool) -> None:
        assert resolve_compile(choice, torch.device("cpu")) is cpu  # type: ignore[arg-type]
        assert resolve_compile(choice, torch.device("cuda")) is cuda  # type: ignore[arg-type]

    def test_cache_dir(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert inductor_cache_dir() == tmp_path / "sgma" / "inductor"
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
        assert inductor_cache_dir() == tmp_path / "mine"

    def test_unknown_part(self) -> None:
        with pytest.raises(ValueError, match="unknown compile parts"):
            compile_model(_model(), ("backbone", "stems"))


class TestTracing:
    """A counting backend: what dynamo captures, without generating code."""

    @pytest.mark.parametrize("masked", [False, True], ids=["all-seen", "swath"])
    @torch.no_grad()
    def test_fuse_has_no_graph_break(self, images, swath_mask, masked: bool) -> None:
        model = _model()
        enc = model.encode(images, swath_mask if masked else None)
        present = torch.tensor([[True, False, True], [True, True, True]])
        explained = torch._dynamo.explain(model.fusions[0].fuse)(
            enc.scales[0], present, enc.sizes[0]
        )
        assert explained.graph_count == 1
        assert explained.graph_break_count == 0

    @torch.no_grad()
    def test_changing_subsets_does_not_recompile(self, images, swath_mask, cache_dir: Path) -> None:
        model = _model()
        counter = CompileCounter()
        compile_model(model, backend=counter)
        enc = model.encode(images, swath_mask)
        model.decode([model.fuse(enc, list(SUBSETS[0]))], enc.image_size)
        after_first = counter.frame_count
        # backbone (one call per modality, same shape), head, and fuse once per scale
        assert after_first == 1 + 1 + len(model.fusions)
        for subset in SUBSETS[1:]:
            model.decode([model.fuse(enc, list(subset))], enc.image_size)
        assert counter.frame_count == after_first

    def test_state_dict_keys_unchanged(self, cache_dir: Path) -> None:
        model = _model()
        keys = list(model.state_dict())
        compile_model(model, backend=CompileCounter())
        assert list(model.state_dict()) == keys


class TestTraining:
    @pytest.mark.parametrize(
        "backbone", [pytest.param("test_convnext", marks=pytest.mark.slow), "test_resnet"]
    )
    def test_compiled_step_equals_eager(
        self, images, swath_mask, cache_dir: Path, backbone
    ) -> None:
        """SGF + MAS loss and gradients through AOT autograd's traced backward, to 1e-4."""
        present = torch.tensor([[True, True, False], [True, True, True]])  # modality dropout
        uniforms = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.6, 0.95]], dtype=torch.float64)
        label = torch.randint(0, 4, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(2))
        results = []
        for compiled in (False, True):
            model = _model(backbone).train()
            model.head.dropout.p = 0.0  # the same draws are checked in the CLI test
            use_encode_strategy(model, torch.device("cpu"))
            if compiled:
                compile_model(model, backend="aot_eager")
            out = TrainForward(model)(images, swath_mask, present, uniforms)
            loss = torch.nn.functional.cross_entropy(out.logits_sgf, label) + (
                torch.nn.functional.cross_entropy(out.logits_mas, label)
            )
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            results.append((loss.detach(), out.mas_probs.detach(), grads))
        (loss_e, choice_e, grads_e), (loss_c, choice_c, grads_c) = results
        torch.testing.assert_close(choice_c, choice_e, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
        assert len(grads_c) == len(grads_e)
        for a, b in zip(grads_c, grads_e):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


class TestInductor:
    @pytest.mark.parametrize("subset", [SUBSETS[0], SUBSETS[4]], ids=subset_id)
    @torch.no_grad()
    def test_compiled_fuse_equals_eager(self, images, swath_mask, cache_dir: Path, subset) -> None:
        """One scale's SGF fuse through inductor: eager's numbers to 1e-4 (fp32)."""
        model = _model()
        enc = model.encode(images, swath_mask)
        fusion, scale, size = model.fusions[1], enc.scales[1], enc.sizes[1]
        present = torch.tensor([[n in subset for n in NAMES]] * 2)
        eager = fusion.fuse(scale, present, size)
        compiled = torch.compile(fusion.fuse, dynamic=False)(scale, present, size)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

    @pytest.mark.slow
    @pytest.mark.parametrize("backbone", ["test_convnext", "test_resnet"])
    @torch.no_grad()
    def test_compiled_model_equals_eager(
        self, images, swath_mask, cache_dir: Path, backbone
    ) -> None:
        model = _model(backbone)
        use_encode_strategy(model, torch.device("cpu"))
        eager = {s: model({n: images[n] for n in s}, swath_mask) for s in SUBSETS}
        compiled = compile_model(model, COMPILE_PARTS)
        assert compiled.parts == COMPILE_PARTS
        for subset in SUBSETS:
            got = model({n: images[n] for n in subset}, swath_mask)
            torch.testing.assert_close(got.logits, eager[subset].logits, atol=1e-4, rtol=1e-4)
            for a, b in zip(got.robustness, eager[subset].robustness):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


class TestMissingCompiler:
    def test_explicit_compile_without_a_compiler_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PATH", "/nonexistent")
        monkeypatch.delenv("CXX", raising=False)
        cpu = torch.device("cpu")
        assert compiler_missing(cpu) == "a C++ compiler (g++ or clang++; or set CXX)"
        with pytest.raises(
            DeviceError,
            match=r"--compile needs a C\+\+ compiler .* on cpu; install it or drop --compile",
        ):
            maybe_compile(_model(), True, cpu)

    def test_auto_stays_eager_without_a_compiler(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("sgma_cli.engine.speed.compiler_missing", lambda device: "triton")
        model = _model()
        assert maybe_compile(model, None, torch.device("cuda")) is None
        assert not hasattr(model.fusions[0].__dict__.get("fuse"), "__wrapped__")
