"""The SGMA model: encode once / fuse per subset, missing modalities, training forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.sgma import SGMA
from tests.model._reference import reference_sgf
from tests.model.conftest import (
    MODALITIES,
    NAMES,
    SIZE,
    SUBSETS,
    TINY_BACKBONES,
    prototype_kind,
    subset_id,
)


def _backbone_features(model: SGMA, images: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    stacked = torch.stack([model.stems[n](images[n]) for n in NAMES], dim=1)
    return [
        f.unflatten(0, (stacked.shape[0], len(NAMES)))
        for f in model.backbone(stacked.flatten(0, 1))
    ]


def _eq11_probabilities(r: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Eq. 11 and the mean over the cells any modality saw: ``(B, M, h, w)`` -> ``(B, M)``."""
    inverse = torch.where(seen, 1.0 / r.double(), torch.zeros((), dtype=torch.float64))
    r_hat = inverse / inverse.sum(dim=1, keepdim=True).clamp(min=1e-300)
    cells = seen.any(dim=1)  # (B, h, w)
    return r_hat.sum(dim=(2, 3)) / cells.sum(dim=(1, 2))[:, None]


def _inverse_cdf(p: torch.Tensor, u: float) -> int:
    """The modality whose cumulative probability interval holds ``u``."""
    edges = (p / p.sum()).cumsum(0)
    return int(min(int((edges <= u).sum()), int(p.nonzero().max())))


class TestEncodeFuse:
    @pytest.mark.parametrize("subset", SUBSETS, ids=subset_id)
    @torch.no_grad()
    def test_cached_fuse_equals_fresh_forward(
        self, model: SGMA, images, swath_mask, subset
    ) -> None:
        enc = model.encode(images, swath_mask)  # all three modalities, once
        (cached,) = model.decode([model.fuse(enc, list(subset))], enc.image_size)
        fresh = model({n: images[n] for n in subset}, swath_mask)  # only the subset is given
        torch.testing.assert_close(cached, fresh.logits, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("missing", NAMES)
    @torch.no_grad()
    def test_mask_missing_everywhere_equals_subset_without(
        self, model: SGMA, images, missing
    ) -> None:
        mask = torch.ones(2, len(NAMES), SIZE, SIZE, dtype=torch.bool)
        mask[:, NAMES.index(missing)] = False
        masked = model(images, mask)
        without = model({n: x for n, x in images.items() if n != missing})
        torch.testing.assert_close(masked.logits, without.logits, atol=1e-5, rtol=1e-5)

    @torch.no_grad()
    def test_absent_modality_is_not_a_zero_image(self, model: SGMA, images) -> None:
        without = model({"rgb": images["rgb"], "dsm": images["dsm"]}).logits
        zero_sar = model({**images, "sar": torch.zeros_like(images["sar"])}).logits
        assert not torch.allclose(without, zero_sar, atol=1e-4)

    @torch.no_grad()
    def test_unseen_pixels_are_reported_invalid(self, model: SGMA, images, swath_mask) -> None:
        out = model(images, swath_mask)
        assert not out.valid[:, 56:, 56:].any()
        assert out.valid[:, :8, :8].all()
        only_sar = model({"sar": images["sar"]}, swath_mask)
        torch.testing.assert_close(only_sar.valid, swath_mask[:, 2])

    @torch.no_grad()
    def test_per_sample_subsets(self, model: SGMA, images) -> None:
        present = torch.tensor([[True, False, True], [False, True, False]])
        batched = model(images, present=present).logits
        first = model({"rgb": images["rgb"][:1], "sar": images["sar"][:1]}).logits
        second = model({"dsm": images["dsm"][1:]}).logits
        torch.testing.assert_close(batched, torch.cat([first, second]), atol=1e-5, rtol=1e-5)


class TestEncodeStrategy:
    """Feeding the backbone one modality at a time gives the packed batch's numbers."""

    @pytest.mark.parametrize("subset", [("rgb", "dsm", "sar"), ("dsm", "sar")], ids=subset_id)
    @torch.no_grad()
    def test_per_modality_equals_packed(
        self, model: SGMA, images, swath_mask, subset: tuple[str, ...]
    ) -> None:
        given = {n: images[n] for n in subset}
        out = {}
        for strategy in ("packed", "per_modality"):
            model.encode_strategy = strategy  # type: ignore[assignment]
            out[strategy] = model(given, swath_mask)
        model.encode_strategy = "packed"
        torch.testing.assert_close(
            out["per_modality"].logits, out["packed"].logits, atol=1e-5, rtol=1e-5
        )
        for a, b in zip(out["per_modality"].robustness, out["packed"].robustness):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("backbone", TINY_BACKBONES)
    def test_training_with_batch_norm_stays_packed(self, backbone: str, images) -> None:
        """Batch statistics are those of the packed batch (Eq. 2), whatever the strategy."""
        torch.manual_seed(0)
        model = SGMA(MODALITIES, num_classes=4, backbone=backbone, head_dim=16).train()
        has_bn = model._has_batch_norm()
        assert has_bn == (backbone == "test_resnet")
        logits = {}
        for strategy in ("packed", "per_modality"):
            model.encode_strategy = strategy  # type: ignore[assignment]
            torch.manual_seed(1)  # the same dropout draws
            logits[strategy] = model(images).logits
        if has_bn:
            assert torch.equal(logits["per_modality"], logits["packed"])
        else:
            torch.testing.assert_close(
                logits["per_modality"], logits["packed"], atol=1e-5, rtol=1e-5
            )


class TestTrainingForward:
    @torch.no_grad()
    def test_mas_branch_matches_reference_for_every_draw(
        self, model: SGMA, images, swath_mask
    ) -> None:
        """Probabilities (Eq. 11 on the literal RP weights), draws (inverse CDF), the fused
        features of each scale's drawn modality (literal SGF) and the logits, whatever
        modality each scale and sample drew."""
        uniforms = torch.rand(4, 2, generator=torch.Generator().manual_seed(0))
        out = model.forward_train(images, swath_mask, uniforms=uniforms)
        kind = prototype_kind(model)
        features = []
        for scale, feats in enumerate(_backbone_features(model, images)):
            fusion = model.fusions[scale]
            seen = downsample_availability(swath_mask, tuple(feats.shape[-2:]))
            _, r = reference_sgf(fusion, feats, (0, 1, 2), seen, [0, 1, 2], kind)
            probs = _eq11_probabilities(r, seen)
            torch.testing.assert_close(out.mas_probs[scale].double(), probs, atol=1e-5, rtol=0)
            choice = [_inverse_cdf(probs[b], float(uniforms[scale, b])) for b in range(2)]
            assert out.mas_choice[scale].tolist() == choice
            f, _ = reference_sgf(fusion, feats, (0, 1, 2), seen, [[m] for m in choice], kind)
            features.append(f.nan_to_num(0.0))
        logits = F.interpolate(
            model.head(features), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(out.logits_mas, logits, atol=1e-5, rtol=1e-5)
        drawn_saw = swath_mask[torch.arange(2)[None, :], out.mas_choice]  # (S, B, H, W)
        assert torch.equal(out.valid_mas, drawn_saw.all(dim=0))
        torch.testing.assert_close(out.logits_sgf, model(images, swath_mask).logits)

    @torch.no_grad()
    def test_valid_mas_is_what_every_scale_saw(self, images, swath_mask) -> None:
        """Draws of rgb at one scale and sar at another: a pixel either one missed has a zero
        feature at that scale, so it is not scored (the union would score it)."""
        torch.manual_seed(0)
        model = SGMA(MODALITIES, num_classes=4, backbone="test_convnext", head_dim=32).eval()
        uniforms = torch.tensor([[0.0, 0.0], [0.999999, 0.999999], [0.0, 0.0], [0.0, 0.0]])
        out = model.forward_train(images, swath_mask, uniforms=uniforms)
        assert out.mas_choice[:, 0].tolist() == [0, 2, 0, 0]
        rgb, sar = swath_mask[:, 0], swath_mask[:, 2]
        assert torch.equal(out.valid_mas, rgb & sar)
        assert ((rgb | sar) & ~(rgb & sar)).any()  # the union differs: the test means something

    def test_mas_draws_only_modalities_the_sgf_branch_used(self, images) -> None:
        model = SGMA(MODALITIES, num_classes=4, backbone="test_convnext", head_dim=32).eval()
        present = torch.tensor([[True, True, False], [True, False, False]])
        out = model.forward_train(
            images, present=present, generator=torch.Generator().manual_seed(0)
        )
        assert (out.mas_probs[:, 0, 2] == 0).all() and (out.mas_probs[:, 1, 1:] == 0).all()
        torch.testing.assert_close(out.mas_probs[:, 1, 0], torch.ones(4))
        assert (out.mas_choice[:, 1] == 0).all() and (out.mas_choice[:, 0] != 2).all()

    def test_batch_granularity_one_draw_per_scale(self, images) -> None:
        model = SGMA(
            MODALITIES,
            num_classes=4,
            backbone="test_convnext",
            head_dim=32,
            mas_granularity="batch",
        ).eval()
        out = model.forward_train(images, generator=torch.Generator().manual_seed(0))
        assert (out.mas_choice == out.mas_choice[:, :1]).all()

    @torch.no_grad()
    def test_batch_granularity_never_draws_a_dropped_modality(self, images) -> None:
        """Modality dropout left sample 0 with rgb+dsm and sample 1 with sar alone; the
        batch distribution puts about half its mass on sar. u = 0.9 picks sar for the
        batch, u = 0.1 picks rgb: each sample draws from it restricted to what it has."""
        torch.manual_seed(0)
        model = SGMA(
            MODALITIES,
            num_classes=4,
            backbone="test_convnext",
            head_dim=32,
            mas_granularity="batch",
        ).eval()
        present = torch.tensor([[True, True, False], [False, False, True]])
        for u in (0.1, 0.5, 0.9, 0.999999):
            out = model.forward_train(images, present=present, uniforms=torch.full((4, 2), u))
            assert (out.mas_choice[:, 0] != 2).all() and (out.mas_choice[:, 1] == 2).all(), u
            total = out.mas_probs.mean(dim=1)  # (S, M): the batch distribution
            for scale in range(4):  # sample 0: the batch distribution over rgb, dsm only
                p = total[scale, :2].double()
                assert out.mas_choice[scale, 0] == _inverse_cdf(p, u)

    def test_seeded_sampling_is_reproducible(self, images) -> None:
        model = SGMA(MODALITIES, num_classes=4, backbone="test_convnext", head_dim=32).eval()
        a = model.forward_train(images, generator=torch.Generator().manual_seed(7)).mas_choice
        b = model.forward_train(images, generator=torch.Generator().manual_seed(7)).mas_choice
        assert torch.equal(a, b)


class TestBadInput:
    def test_unknown_modality(self, model: SGMA, images) -> None:
        with pytest.raises(ValueError, match="unknown modalities \\['nir'\\]"):
            model.encode({**images, "nir": images["dsm"]})

    def test_size_not_multiple_of_32(self, model: SGMA) -> None:
        with pytest.raises(ValueError, match="not a multiple of 32"):
            model.encode({"rgb": torch.zeros(1, 3, 48, 64)})

    def test_wrong_band_count(self, model: SGMA) -> None:
        with pytest.raises(ValueError, match="expected 1 bands"):
            model.encode({"dsm": torch.zeros(1, 2, 64, 64)})

    def test_subset_not_encoded(self, model: SGMA, images) -> None:
        enc = model.encode({"rgb": images["rgb"]})
        with pytest.raises(ValueError, match="not encoded"):
            model.fuse(enc, ["rgb", "sar"])

    def test_no_modality(self, model: SGMA) -> None:
        with pytest.raises(ValueError, match="no modality given"):
            model.encode({})
