"""Modality stems: bands mapped to the shared encoder's 3 channels."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.stems import ModalityStem


class TestRepeatStem:
    @pytest.mark.parametrize(("bands", "order"), [(1, [0, 0, 0]), (2, [0, 1, 0]), (3, [0, 1, 2])])
    def test_cycles_bands(self, bands: int, order: list[int]) -> None:
        x = torch.arange(bands, dtype=torch.float32).view(1, bands, 1, 1).expand(1, bands, 2, 2)
        out = ModalityStem(bands)(x)
        assert out[0, :, 0, 0].tolist() == [float(i) for i in order]
        assert sum(p.numel() for p in ModalityStem(bands).parameters()) == 0

    def test_too_many_bands_needs_learned(self) -> None:
        with pytest.raises(ValueError, match="learned"):
            ModalityStem(4)

    def test_wrong_input_bands(self) -> None:
        with pytest.raises(ValueError, match="expected 2 bands"):
            ModalityStem(2)(torch.zeros(1, 3, 4, 4))


class TestLearnedStem:
    @pytest.mark.parametrize("bands", [1, 2, 3])
    def test_starts_as_repeat(self, bands: int) -> None:
        x = torch.randn(2, bands, 5, 5)
        torch.testing.assert_close(ModalityStem(bands, kind="learned")(x), ModalityStem(bands)(x))

    def test_more_bands_than_channels_average(self) -> None:
        x = torch.ones(1, 4, 2, 2)
        x[:, 3] = 3.0  # band 3 lands with band 0 in channel 0
        out = ModalityStem(4, kind="learned")(x)
        assert out[0, :, 0, 0].tolist() == [2.0, 1.0, 1.0]
