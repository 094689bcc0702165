"""Issue 14: paths read from files stay inside their folder; --overwrite deletes only ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgma_cli.config._base import path_inside
from sgma_cli.data.discovery import discover
from sgma_cli.data.scene import find_sensor_files
from sgma_cli.errors import RasterError
from tests.conftest import make_tiny_scene

OUTSIDE = ["../rgb.tif", "a/../../rgb.tif", "/etc/passwd", "C:\\data\\rgb.tif", "\\\\server\\x.tif"]


class TestPathInside:
    @pytest.mark.parametrize("text", ["rgb.tif", "sub/rgb.tif", "./rgb.tif", "sub\\rgb.tif"])
    def test_inside(self, tmp_path: Path, text: str) -> None:
        path = path_inside(tmp_path, text, tmp_path / "f.json", RasterError)
        assert path.resolve().is_relative_to(tmp_path.resolve())

    @pytest.mark.parametrize("text", OUTSIDE)
    def test_outside_is_refused(self, tmp_path: Path, text: str) -> None:
        with pytest.raises(RasterError, match=r"f\.json: path .* leads outside .*; only paths"):
            path_inside(tmp_path, text, tmp_path / "f.json", RasterError)

    @pytest.mark.parametrize("text", ["", "  ", "a\x00b", 7, None, ["rgb.tif"]])
    def test_not_a_name(self, tmp_path: Path, text: object) -> None:
        with pytest.raises(RasterError, match="is not a file name"):
            path_inside(tmp_path, text, tmp_path / "f.json", RasterError)


def _sample_folder(root: Path, **marker: object) -> Path:
    """A scene folder with a ``sample.json`` (as ``sgma sample`` writes) updated by ``marker``."""
    scene = make_tiny_scene(root / "scene", size=64)
    base = {"modalities": {"rgb": "rgb.tif", "dsm": "dsm.tif"}, "labels": "labels.tif"}
    (scene / "sample.json").write_text(json.dumps({**base, **marker}))
    return scene


class TestSampleMarker:
    """``sample.json`` names files of its folder; prepare and predict both read it."""

    def test_inside_is_read(self, tmp_path: Path) -> None:
        scene = _sample_folder(tmp_path)
        plan = discover(scene, None, [], None, "class", None)
        assert plan.layout == "sample" and plan.modalities == ["rgb", "dsm"]
        assert find_sensor_files(scene, ["rgb", "dsm"]) == {
            "rgb": scene / "rgb.tif",
            "dsm": scene / "dsm.tif",
        }

    @pytest.mark.parametrize("text", OUTSIDE[:3])
    def test_modality_outside_is_refused(self, tmp_path: Path, text: str) -> None:
        scene = _sample_folder(tmp_path, modalities={"rgb": text})
        (tmp_path / "rgb.tif").write_bytes((scene / "rgb.tif").read_bytes())  # a real file there
        with pytest.raises(RasterError, match=r"sample\.json: file .* leads outside"):
            discover(scene, None, [], None, "class", None)
        with pytest.raises(RasterError, match=r"sample\.json: file .* leads outside"):
            find_sensor_files(scene, ["rgb"])

    def test_labels_outside_is_refused(self, tmp_path: Path) -> None:
        scene = _sample_folder(tmp_path, labels="../labels.tif")
        with pytest.raises(RasterError, match=r"labels file '\.\./labels\.tif' leads outside"):
            discover(scene, None, [], None, "class", None)

    @pytest.mark.parametrize("name", ["../../x", "a/b", ""])
    def test_modality_name_that_is_a_path_is_refused(self, tmp_path: Path, name: str) -> None:
        """Modality names become tile file names (``<name>.tif``): a path there is refused."""
        scene = _sample_folder(tmp_path, modalities={name: "rgb.tif"})
        with pytest.raises(RasterError, match="is not a name"):
            discover(scene, None, [], None, "class", None)


def test_overwrite_deletes_only_what_prepare_wrote(tmp_path: Path) -> None:
    from sgma_cli.engine.prepare import PrepareOptions, prepare

    scene, out = make_tiny_scene(tmp_path / "scene", size=64), tmp_path / "data"
    prepare(PrepareOptions(src=scene, out=out, tile=32, stride=32, split="1,0,0"))
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "keep.tif").write_bytes(b"x")
    (out / "tiles" / "train" / "mine.txt").write_text("inside tiles/")  # sgma's folder
    prepare(PrepareOptions(src=scene, out=out, tile=64, stride=64, split="1,0,0", overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "mine" / "keep.tif").read_bytes() == b"x"
    assert not (out / "tiles" / "train" / "mine.txt").exists()  # tiles/ is sgma's, redone
    assert sorted(p.name for p in (out / "tiles" / "train").iterdir()) == ["scene_r00000_c00000"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".sgma-prepare.json",
        "dataset.toml",
        "index.gpkg",
        "mine",
        "notes.txt",
        "tiles",
    ]
