"""Eq. 3 prototypes in their three weightings: hand values, encode/fuse split, invariances."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.prototypes import PROTOTYPE_KINDS, combine_prototypes, prototype_partials

KINDS = list(PROTOTYPE_KINDS)


def _prototypes(evidence, features, available, present, kind):  # noqa: ANN001, ANN202
    return combine_prototypes(
        prototype_partials(evidence, features, available, kind), present, kind
    )


def _rows_reference(evidence, features, available, present, kind):  # noqa: ANN001, ANN202
    """Eq. 3 on the concatenated rows (seen pixels of the present modalities), float64."""
    out = []
    for b in range(evidence.shape[0]):
        rows = [
            (evidence[b, m].T[available[b, m]], features[b, m].T[available[b, m]])
            for m in range(evidence.shape[1])
            if present[b, m]
        ]
        c = torch.cat([r[0] for r in rows]).double()  # (R, K)
        f = torch.cat([r[1] for r in rows]).double()  # (R, C)
        if kind == "softmax":
            c = torch.softmax(c, dim=0)
        p = c.T @ f
        out.append(p / c.shape[0] if kind == "mean" else p)
    return torch.stack(out)


class TestHandValues:
    def test_one_modality_two_pixels(self) -> None:
        evidence = torch.tensor([[[[1.0, 3.0]]]])  # (B=1, M=1, K=1, N=2)
        features = torch.tensor([[[[2.0, 4.0]]]])  # (B, M, C=1, N)
        present = torch.ones(1, 1, dtype=torch.bool)
        got = {k: _prototypes(evidence, features, None, present, k).item() for k in KINDS}
        e1, e3 = torch.exp(torch.tensor(1.0)), torch.exp(torch.tensor(3.0))
        assert got["sum"] == pytest.approx(1 * 2 + 3 * 4)
        assert got["mean"] == pytest.approx((1 * 2 + 3 * 4) / 2)
        assert got["softmax"] == pytest.approx(float((e1 * 2 + e3 * 4) / (e1 + e3)))

    def test_unseen_pixels_are_not_terms(self) -> None:
        evidence = torch.tensor([[[[1.0, 3.0, 100.0]]]])
        features = torch.tensor([[[[2.0, 4.0, 50.0]]]])
        seen = torch.tensor([[[True, True, False]]])
        present = torch.ones(1, 1, dtype=torch.bool)
        got = {k: _prototypes(evidence, features, seen, present, k).item() for k in KINDS}
        assert got["sum"] == pytest.approx(14.0)
        assert got["mean"] == pytest.approx(7.0)
        assert 2.0 < got["softmax"] < 4.0  # a convex combination of the seen features only


@pytest.mark.parametrize("kind", KINDS)
class TestSplit:
    def test_partials_combine_to_the_rows_formula(self, kind: str) -> None:
        g = torch.Generator().manual_seed(0)
        evidence = 3 * torch.randn(2, 3, 4, 50, generator=g)
        features = torch.randn(2, 3, 5, 50, generator=g)
        available = torch.rand(2, 3, 50, generator=g) > 0.3
        for present in ([True, False, True], [False, True, False], [True, True, True]):
            mask = torch.tensor(present).expand(2, 3)
            got = _prototypes(evidence, features, available, mask, kind)
            want = _rows_reference(evidence, features, available, mask, kind)
            torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)

    def test_modality_that_saw_nothing_adds_nothing(self, kind: str) -> None:
        g = torch.Generator().manual_seed(1)
        evidence = torch.randn(1, 2, 3, 20, generator=g)
        features = torch.randn(1, 2, 4, 20, generator=g)
        available = torch.ones(1, 2, 20, dtype=torch.bool)
        available[:, 1] = False
        both = _prototypes(evidence, features, available, torch.ones(1, 2, dtype=torch.bool), kind)
        first = _prototypes(
            evidence[:, :1],
            features[:, :1],
            available[:, :1],
            torch.ones(1, 1, dtype=torch.bool),
            kind,
        )
        torch.testing.assert_close(both, first)
        assert torch.isfinite(both).all()

    def test_nothing_seen_gives_zero_prototypes(self, kind: str) -> None:
        evidence, features = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 4, 8)
        none = torch.zeros(1, 2, 8, dtype=torch.bool)
        got = _prototypes(evidence, features, none, torch.ones(1, 2, dtype=torch.bool), kind)
        assert (got == 0).all()


class TestInvariance:
    """What ``mean`` and ``softmax`` fix: the prototypes no longer scale with the input."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_window_four_times_larger(self, kind: str) -> None:
        g = torch.Generator().manual_seed(2)
        evidence = torch.randn(1, 2, 3, 64, generator=g)
        features = torch.randn(1, 2, 8, 64, generator=g)
        present = torch.ones(1, 2, dtype=torch.bool)
        small = _prototypes(evidence, features, None, present, kind)
        large = _prototypes(
            evidence.repeat(1, 1, 1, 4), features.repeat(1, 1, 1, 4), None, present, kind
        )
        factor = 4.0 if kind == "sum" else 1.0
        torch.testing.assert_close(large, factor * small, atol=1e-4, rtol=1e-5)

    @pytest.mark.parametrize("kind", KINDS)
    def test_a_second_identical_sensor(self, kind: str) -> None:
        g = torch.Generator().manual_seed(3)
        evidence = torch.randn(1, 1, 3, 40, generator=g)
        features = torch.randn(1, 1, 8, 40, generator=g)
        one = _prototypes(evidence, features, None, torch.ones(1, 1, dtype=torch.bool), kind)
        two = _prototypes(
            evidence.repeat(1, 2, 1, 1),
            features.repeat(1, 2, 1, 1),
            None,
            torch.ones(1, 2, dtype=torch.bool),
            kind,
        )
        factor = 2.0 if kind == "sum" else 1.0
        torch.testing.assert_close(two, factor * one, atol=1e-5, rtol=1e-5)


class TestSoftmaxNumerics:
    def test_modalities_with_far_apart_evidence(self) -> None:
        """Each partial keeps its own max shift; combining rescales without overflow."""
        g = torch.Generator().manual_seed(4)
        evidence = torch.randn(1, 3, 2, 30, generator=g)
        evidence[:, 0] += 500.0
        evidence[:, 2] -= 500.0
        features = torch.randn(1, 3, 4, 30, generator=g)
        present = torch.ones(1, 3, dtype=torch.bool)
        got = _prototypes(evidence, features, None, present, "softmax")
        want = _rows_reference(
            evidence, features, torch.ones(1, 3, 30, dtype=torch.bool), present, "softmax"
        )
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)

    def test_gradients_are_finite_under_a_mask(self) -> None:
        g = torch.Generator().manual_seed(5)
        evidence = torch.randn(2, 2, 3, 16, generator=g, requires_grad=True)
        features = torch.randn(2, 2, 4, 16, generator=g, requires_grad=True)
        available = torch.rand(2, 2, 16, generator=g) > 0.5
        available[1, 1] = False  # a modality that saw nothing
        present = torch.ones(2, 2, dtype=torch.bool)
        _prototypes(evidence, features, available, present, "softmax").square().sum().backward()
        assert torch.isfinite(evidence.grad).all() and torch.isfinite(features.grad).all()
        assert (evidence.grad[1, 1] == 0).all() and (
            features.grad[~available[:, :, None, :].expand_as(features)] == 0
        ).all()


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown prototypes 'max'"):
        prototype_partials(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), kind="max")  # type: ignore[arg-type]
