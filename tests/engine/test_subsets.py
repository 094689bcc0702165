"""``select_subsets``: the one parser and checker of a user's modality subsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgma_cli.engine.subsets import all_subsets, parse_subsets, select_subsets, subset_label
from sgma_cli.errors import DatasetError, UsageError

MODS = ["rgb", "dsm", "sar"]


class TestSelectSubsets:
    def test_all_leaves_out_missing_modalities(self) -> None:
        assert select_subsets("all", MODS) == all_subsets(MODS)
        assert select_subsets(" All ", MODS, missing=["sar"]) == [
            ("rgb", "dsm"),
            ("rgb",),
            ("dsm",),
        ]

    def test_text_and_tuples_agree(self) -> None:
        text = select_subsets("sar,rgb; dsm ;rgb,sar;", MODS)
        tuples = select_subsets([("sar", "rgb"), ["dsm"], ("rgb", "sar")], MODS)
        assert text == tuples == [("rgb", "sar"), ("dsm",)]  # model order, no repeats
        assert parse_subsets("sar,rgb; dsm ;rgb,sar;", MODS) == text

    @pytest.mark.parametrize(
        ("requested", "message"),
        [
            (
                "rgb,nir",
                r"subset 'rgb,nir' names unknown modalities \['nir'\]; known: rgb, dsm, sar",
            ),
            ([("rgb", "nir")], r"subset 'rgb\+nir' names unknown modalities \['nir'\]"),
            (" ; ", "no subset in ' ; '"),
            ([()], r"no subset in \[\(\)\]"),
        ],
    )
    def test_usage_errors(self, requested: object, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            select_subsets(requested, MODS)  # type: ignore[arg-type]

    @pytest.mark.parametrize("requested", ["rgb;sar,dsm", [("rgb",), ("dsm", "sar")]])
    def test_named_subset_needs_missing_modality(self, requested: object, tmp_path: Path) -> None:
        with pytest.raises(
            DatasetError, match=r"needs \['sar'\], which this data does not have"
        ) as err:
            select_subsets(requested, MODS, missing=["sar"], source=tmp_path)  # type: ignore[arg-type]
        assert err.value.path == tmp_path and str(err.value).startswith(str(tmp_path))

    def test_unknown_reported_before_missing(self) -> None:
        with pytest.raises(UsageError, match="unknown"):
            select_subsets("sar,nir", MODS, missing=["sar"])


def test_subset_label() -> None:
    assert subset_label(("rgb", "dsm")) == "rgb+dsm"
    assert subset_label(["sar"]) == "sar"
