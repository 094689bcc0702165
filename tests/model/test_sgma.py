"""The SGMA model: encode once / fuse per subset, missing modalities, training forward."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.sgma import SGMA
from tests.model.conftest import MODALITIES, NAMES, SIZE, SUBSETS, subset_id


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


class TestTrainingForward:
    def test_gradients_reach_every_parameter(self, images, swath_mask) -> None:
        torch.manual_seed(0)
        model = SGMA(
            MODALITIES, num_classes=4, backbone="test_convnext", stem="learned", head_dim=32
        ).train()
        out = model.forward_train(images, swath_mask, generator=torch.Generator().manual_seed(0))
        (2 * out.logits_sgf.mean() + out.logits_mas.mean()).backward()
        missing = [
            n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
        ]
        assert missing == []

    def test_mas_branch_uses_sampled_modality_alone(self, images) -> None:
        torch.manual_seed(0)
        model = SGMA(MODALITIES, num_classes=4, backbone="test_convnext", head_dim=32).eval()
        out = model.forward_train(images, generator=torch.Generator().manual_seed(3))
        assert out.mas_probs.shape == (4, 2, 3) and out.mas_choice.shape == (4, 2)
        torch.testing.assert_close(out.mas_probs.sum(-1), torch.ones(4, 2))
        if (out.mas_choice == out.mas_choice[0]).all():  # same modality at every scale
            only = model(
                {NAMES[int(out.mas_choice[0, 0])]: images[NAMES[int(out.mas_choice[0, 0])]]}
            ).logits
            torch.testing.assert_close(out.logits_mas[:1], only[:1], atol=1e-5, rtol=1e-5)
        full = model(images).logits
        torch.testing.assert_close(out.logits_sgf, full, atol=1e-5, rtol=1e-5)

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
