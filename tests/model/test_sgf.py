"""SGF's efficient form computes exactly the paper's equations (Eqs. 3-10)."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.sgma import SGMA
from tests.model._reference import reference_sgf
from tests.model.conftest import NAMES, SUBSETS, subset_id


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
            ref_f, ref_r = reference_sgf(model.fusions[scale], feats, (0, 1, 2), available, present)
            seen = ~torch.isnan(ref_f[:, 0])  # (B, H, W): some present modality saw it
            assert seen.any()
            got_f = fused.features[scale].permute(0, 2, 3, 1)[seen]
            torch.testing.assert_close(got_f, ref_f.permute(0, 2, 3, 1)[seen], atol=1e-5, rtol=0)
            torch.testing.assert_close(fused.robustness[scale], ref_r, atol=1e-5, rtol=0)
            assert (fused.features[scale].permute(0, 2, 3, 1)[~seen] == 0).all()


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
