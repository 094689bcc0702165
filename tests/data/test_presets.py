"""Tests for sgma_cli.data.presets: tiny Potsdam, DFC2023 and DELIVER layouts."""

from __future__ import annotations

from pathlib import Path

from sgma_cli.data.discovery import discover

from .conftest import make_deliver, make_dfc2023, make_potsdam


class TestPresets:
    def test_potsdam(self, tmp_path: Path) -> None:
        plan = discover(make_potsdam(tmp_path / "P"), preset="potsdam")
        assert [s.name for s in plan.scenes] == ["potsdam_2_10", "potsdam_2_13"]
        assert [s.split for s in plan.scenes] == ["train", "test"]
        assert plan.modalities == ["rgb", "nir", "dsm"] and plan.tile == (512, 256)
        nir = plan.scenes[0].modalities["nir"]
        assert nir.path.parent.name == "4_Ortho_RGBIR" and nir.bands == (4,)
        assert (
            plan.scenes[0].modalities["dsm"].path.name
            == "dsm_potsdam_02_10_normalized_lastools.tif"
        )
        assert any("nir <- 4_Ortho_RGBIR" in n for n in plan.notes)

    def test_dfc2023_case_insensitive(self, tmp_path: Path) -> None:
        plan = discover(make_dfc2023(tmp_path / "D"), preset="dfc2023")
        assert sorted(s.name for s in plan.scenes) == ["P_0001", "P_0002", "P_0101"]
        assert {s.split for s in plan.scenes} == {"train", "val"}
        assert all(set(s.modalities) == {"rgb", "sar", "dsm"} for s in plan.scenes)
        assert plan.scenes[0].labels is not None and plan.scenes[0].labels.kind == "coco"
        assert any(n.startswith("sar <- track2/train/SAR") for n in plan.notes)

    def test_deliver(self, tmp_path: Path) -> None:
        plan = discover(make_deliver(tmp_path / "V"), preset="deliver")
        assert plan.modalities == ["rgb", "depth", "event", "lidar"] and len(plan.scenes) == 4
        s = plan.scenes[0]
        assert (
            s.split == "train" and s.labels is not None and dict(s.labels.value_map or ())[0] == 255
        )
