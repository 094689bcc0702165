"""ExportGraph in eager mode: one graph over all sensors equals the model on every subset."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from sgma_cli.engine.export.graph import ExportGraph
from sgma_cli.engine.weights import load_model
from sgma_cli.model.sgma import SGMA
from tests.engine.export.exported import tiny_checkpoint

NAMES = ("rgb", "dsm", "sar")
SUBSETS = [s for k in range(1, 4) for s in combinations(NAMES, k)]


@pytest.fixture(scope="module")
def model() -> SGMA:
    return load_model(tiny_checkpoint())[0]


def _inputs(size: tuple[int, int], seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    H, W = size
    images = {n: torch.randn(2, b, H, W, generator=g) for n, b in zip(NAMES, (3, 1, 1))}
    mask = torch.rand(2, 3, H, W, generator=g) > 0.2  # holes everywhere, some per sensor
    mask[:, 2, :, W // 2 :] = False  # and a SAR swath that ends mid-window
    return images, mask


def reference(
    model: SGMA, images: dict[str, torch.Tensor], mask: torch.Tensor, subset: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model on ``subset`` alone: logits and finest robustness upsampled, as predict does."""
    with torch.no_grad():
        out = model({n: images[n] for n in subset}, mask)
        idx = [NAMES.index(n) for n in subset]
        rob = F.interpolate(
            out.robustness[0][:, idx], size=mask.shape[-2:], mode="bilinear", align_corners=False
        )
    return out.logits, rob


def graph_inputs(
    images: dict[str, torch.Tensor],
    mask: torch.Tensor,
    subset: tuple[str, ...],
    graph: tuple[str, ...],
) -> tuple[torch.Tensor, ...]:
    """Inputs of a graph over ``graph``: sensors outside ``subset`` as zeros, mask False."""
    feed = [images[n] if n in subset else torch.zeros_like(images[n]) for n in graph]
    rows = [mask[:, NAMES.index(n)] & (n in subset) for n in graph]
    return (*feed, torch.stack(rows, 1))


class TestExportGraph:
    @pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
    def test_all_sensor_graph_equals_the_model_on_each_subset(
        self, model: SGMA, subset: tuple[str, ...]
    ) -> None:
        images, mask = _inputs((64, 96))
        graph = ExportGraph(model, NAMES, robustness=True).eval()
        with torch.no_grad():
            logits, rob = graph(*graph_inputs(images, mask, subset, NAMES))
        ref_logits, ref_rob = reference(model, images, mask, subset)
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        absent = [NAMES.index(n) for n in NAMES if n not in subset]
        if absent:  # a sensor that was not there gets no weight
            assert rob[:, absent].abs().max() == 0
        torch.testing.assert_close(
            rob[:, [NAMES.index(n) for n in subset]], ref_rob, atol=1e-5, rtol=1e-5
        )

    def test_subset_graph_takes_its_sensors_only(self, model: SGMA) -> None:
        images, mask = _inputs((64, 64))
        graph = ExportGraph(model, ["sar", "rgb"]).eval()  # any order in, the model's order kept
        assert graph.modalities == ("rgb", "sar")
        with torch.no_grad():
            logits = graph(*graph_inputs(images, mask, ("rgb", "sar"), graph.modalities))
        torch.testing.assert_close(logits, reference(model, images, mask, ("rgb", "sar"))[0])

    def test_example_inputs_and_dims(self, model: SGMA) -> None:
        graph = ExportGraph(model, ["dsm", "sar"])
        *imgs, mask = graph.example_inputs(64)
        assert [tuple(t.shape) for t in imgs] == [(2, 1, 64, 64), (2, 1, 64, 64)]
        assert mask.dtype == torch.bool and mask.shape == (2, 2, 64, 64) and not mask.all()
        (dims,) = graph.dynamic_shapes(False)
        assert len(dims) == 3 and all(set(d) == {0} for d in dims)
        (dims,) = graph.dynamic_shapes(True)
        assert all(set(d) == {0, 2, 3} for d in dims)

    def test_bad_arguments(self, model: SGMA) -> None:
        with pytest.raises(ValueError, match="subset"):
            ExportGraph(model, ["nir"])
        with pytest.raises(ValueError, match="multiple of 32"):
            ExportGraph(model, NAMES).example_inputs(48)
