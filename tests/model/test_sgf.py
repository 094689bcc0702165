"""SGF's efficient form computes exactly the paper's equations (Eqs. 3-10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgma_cli.model.attention import masked_softmax
from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.backbones import backbone_channels, create_backbone
from sgma_cli.model.projector import ModalityProjector
from sgma_cli.model.prototypes import combine_prototypes
from sgma_cli.model.sgf import SemanticGuidedFusion
from sgma_cli.model.sgma import SGMA
from tests.model._reference import reference_mp, reference_sgf
from tests.model.conftest import NAMES, SUBSETS, prototype_kind, subset_id


def _backbone_features(model: SGMA, images: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    stacked = torch.stack([model.stems[n](images[n]) for n in NAMES], dim=1)
    return [
        f.unflatten(0, (stacked.shape[0], len(NAMES)))
        for f in model.backbone(stacked.flatten(0, 1))
    ]


class TestEfficientEqualsReference:
    @pytest.mark.parametrize("masked", [False, True], ids=["full", "per-pixel-mask"])
    @pytest.mark.parametrize("subset", SUBSETS, ids=subset_id)
    @torch.no_grad()
    def test_every_scale_matches(self, model: SGMA, images, swath_mask, subset, masked) -> None:
        mask = swath_mask if masked else torch.ones_like(swath_mask)
        enc = model.encode(images, mask)
        fused = model.fuse(enc, list(subset))
        present = [NAMES.index(n) for n in subset]
        for scale, feats in enumerate(_backbone_features(model, images)):
            available = downsample_availability(mask, tuple(feats.shape[-2:]))
            ref_f, ref_r = reference_sgf(
                model.fusions[scale], feats, (0, 1, 2), available, present, prototype_kind(model)
            )
            seen = ~torch.isnan(ref_f[:, 0])  # (B, H, W): some present modality saw it
            assert seen.any()
            got_f = fused.features[scale].permute(0, 2, 3, 1)[seen]
            torch.testing.assert_close(got_f, ref_f.permute(0, 2, 3, 1)[seen], atol=1e-5, rtol=0)
            torch.testing.assert_close(fused.robustness[scale], ref_r, atol=1e-5, rtol=0)
            assert (fused.features[scale].permute(0, 2, 3, 1)[~seen] == 0).all()

    @pytest.mark.parametrize("seed", [0, 1])
    @torch.no_grad()
    def test_per_scale_per_sample_subsets(self, model: SGMA, images, swath_mask, seed) -> None:
        """The fuse MAS uses: another subset at every scale and for every sample."""
        g = torch.Generator().manual_seed(seed)
        subset = torch.rand(4, 2, 3, generator=g) > 0.5  # (S, B, M)
        subset[..., 0] |= ~subset.any(dim=-1)  # at least one modality each
        enc = model.encode(images, swath_mask)
        fused = model.fuse(enc, subset)
        for scale, feats in enumerate(_backbone_features(model, images)):
            available = downsample_availability(swath_mask, tuple(feats.shape[-2:]))
            present = [subset[scale, b].nonzero()[:, 0].tolist() for b in range(2)]
            ref_f, ref_r = reference_sgf(
                model.fusions[scale], feats, (0, 1, 2), available, present, prototype_kind(model)
            )
            got_f = fused.features[scale]
            torch.testing.assert_close(got_f, ref_f.nan_to_num(0.0), atol=1e-5, rtol=0)
            torch.testing.assert_close(fused.robustness[scale], ref_r, atol=1e-5, rtol=0)


class TestProjector:
    """MP (Fig. 3) against ``reference_mp``, which shares no code with ``model/projector.py``."""

    @staticmethod
    def _projector(kernels: tuple[int, ...] = (11, 7, 3), act: type[nn.Module] = nn.GELU):
        torch.manual_seed(0)
        mp = ModalityProjector(6, kernels, act)
        with torch.no_grad():
            for p in mp.parameters():  # biases too, so a misplaced bias shows
                p.normal_(0, 0.3)
        return mp

    @torch.no_grad()
    def test_matches_the_equations(self) -> None:
        x = torch.randn(2, 6, 20, 20, generator=torch.Generator().manual_seed(0))
        mp = self._projector()
        torch.testing.assert_close(mp(x), reference_mp(mp, x), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize(
        "wrong", [{"kernels": (3, 7, 11)}, {"act": nn.Identity}, {"act": nn.ReLU}], ids=str
    )
    @torch.no_grad()
    def test_a_wrong_projector_fails_the_reference(self, wrong: dict) -> None:
        """Convolutions in another order, or another activation, give other numbers."""
        x = torch.randn(2, 6, 20, 20, generator=torch.Generator().manual_seed(0))
        right, bad = self._projector(), self._projector(**wrong)
        by_size = {m.weight.shape[-1]: m for m in right.depthwise}
        for m in bad.depthwise:  # the same weights per kernel size, applied in bad's order
            m.load_state_dict(by_size[m.weight.shape[-1]].state_dict())
        bad.pointwise.load_state_dict(right.pointwise.state_dict())
        assert (bad(x) - reference_mp(bad, x)).abs().max() > 1e-2


class TestRealWidths:
    """256² input, PVT-v2-b0 widths (32, 64, 160, 256; random weights), 3 sensors, K = 6.

    At 64 px the literal sum's prototypes stay small; here the finest scale sums
    64² x 3 terms and SP's softmax over the modalities saturates.
    """

    @pytest.fixture(scope="class")
    def features(self) -> list[torch.Tensor]:
        torch.manual_seed(0)
        backbone = create_backbone("pvt_v2_b0").eval()
        x = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            feats = [f.unflatten(0, (1, 3)) for f in backbone(x)]
        assert backbone_channels(backbone) == [32, 64, 160, 256]
        return feats

    @pytest.mark.parametrize("kind", ["sum", "mean", "softmax"])
    @torch.no_grad()
    def test_matches_reference_and_saturation(self, features, kind: str) -> None:
        mask = torch.ones(1, 3, 256, 256, dtype=torch.bool)
        mask[:, 2, :, 160:] = False  # the SAR swath ends mid-window
        for scale in (0, 3):  # finest (C = 32, 64² pixels) and widest (C = 256)
            feats = features[scale]
            size = tuple(feats.shape[-2:])
            available = downsample_availability(mask, size)
            torch.manual_seed(scale)
            fusion = SemanticGuidedFusion(feats.shape[2], 3, 6, prototypes=kind).eval()
            cache = fusion(feats, (0, 1, 2), available)
            got_f, got_r = fusion.fuse(cache, torch.ones(1, 3, dtype=torch.bool), size)
            ref_f, ref_r = reference_sgf(fusion, feats, (0, 1, 2), available, [0, 1, 2], kind)
            torch.testing.assert_close(got_f, ref_f, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got_r, ref_r, atol=1e-5, rtol=0)
            if scale == 0:
                saturated = self._sp_saturation(fusion, cache)
                if kind == "sum":
                    assert saturated > 0.1
                else:
                    assert saturated == 0.0

    @staticmethod
    def _sp_saturation(fusion: SemanticGuidedFusion, cache: dict) -> float:
        """Share of pixels where some SP head puts > 99 % of a query's weight on one sensor."""
        p = combine_prototypes(cache, torch.ones(1, 3, dtype=torch.bool), fusion.csf.prototypes)
        scores = fusion.sp.scores(p, cache["sp_k"])  # (B, h, N, M, K)
        seen = cache["available"].transpose(1, 2)[:, None, :, :, None]
        weights = masked_softmax(scores, seen, dim=3)
        return float((weights.amax(dim=3) > 0.99).any(dim=(2, 3)).float().mean())


class TestRobustnessMaps:
    @pytest.mark.parametrize("subset", SUBSETS, ids=subset_id)
    @torch.no_grad()
    def test_sum_to_one_over_present(self, model: SGMA, images, swath_mask, subset) -> None:
        enc = model.encode(images, swath_mask)
        fused = model.fuse(enc, list(subset))
        absent = [NAMES.index(n) for n in NAMES if n not in subset]
        for r in fused.robustness:
            total = r.sum(dim=1)
            seen = total > 0
            torch.testing.assert_close(total[seen], torch.ones_like(total[seen]), atol=1e-6, rtol=0)
            assert (r[:, absent] == 0).all()
            assert (r >= 0).all()
