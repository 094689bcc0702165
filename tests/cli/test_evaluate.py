"""`sgma evaluate` on the command line.

The paper's table, --json, the report folder, --compare, errors.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import rasterio
import tomli_w
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.config._base import read_toml
from sgma_cli.config.checkpoint import load_checkpoint, save_checkpoint
from sgma_cli.engine.evaluate.job import EvaluateOptions, evaluate_checkpoint
from sgma_cli.errors import DatasetError
from tests.conftest import make_tiny_checkpoint

runner = CliRunner()


def _run(*args: Any) -> Any:
    return runner.invoke(app, ["evaluate", *(str(a) for a in args)])


def _edit_manifest(data: Path, edit: Any) -> None:
    raw = read_toml(data / "dataset.toml", DatasetError)
    edit(raw)
    (data / "dataset.toml").write_text(tomli_w.dumps(raw))


def _drop_last_modality(data: Path) -> None:
    """Make ``data`` a dataset prepared without its last modality (manifest, masks, files)."""
    raw = read_toml(data / "dataset.toml", DatasetError)
    dropped = raw["modalities"].pop()["name"]
    (data / "dataset.toml").write_text(tomli_w.dumps(raw))
    for mask_path in data.glob("tiles/*/*/mask.tif"):
        with rasterio.open(mask_path) as src:
            profile, bands = src.profile, src.read()[:-1]
        profile.update(count=len(bands))
        with rasterio.open(mask_path, "w", **profile) as dst:
            dst.write(bands)
        (mask_path.parent / f"{dropped}.tif").unlink()


class TestOutput:
    def test_table_in_paper_layout(self, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        result = _run(
            tiny_checkpoint, "--data", tiny_dataset, "--device", "cpu", "--batch-size", "2"
        )
        assert result.exit_code == 0, result.output
        out = result.stdout
        for text in (
            "ground",
            "building",
            "tree",
            "mIoU",
            "mF1",
            "Average",
            "Top-1",
            "Last-1",
            "R = rgb",
            "1/32",
        ):
            assert text in out, text
        rows = [
            line
            for line in out.splitlines()
            if line.startswith("│") and ("●" in line or "○" in line)
        ]
        assert len(rows) == 7
        assert rows[0].count("●") == 3 and rows[-1].count("●") == 1  # largest subset first

    def test_json_only_json_on_stdout(self, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        result = _run(tiny_checkpoint, "--data", tiny_dataset, "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert {"checkpoint", "split", "classes", "modalities", "subsets", "summary"} <= set(data)
        assert data["split"] == "test" and data["classes"] == ["ground", "building", "tree"]
        assert [s["modalities"] for s in data["subsets"]][:2] == [
            ["rgb", "dsm", "sar"],
            ["rgb", "dsm"],
        ]
        assert set(data["subsets"][0]) >= {"modalities", "miou", "mf1", "oa", "iou"}
        assert set(data["subsets"][0]["iou"]) == {"ground", "building", "tree"}
        # values in percent, equal to the engine's fractions x 100
        cpu = EvaluateOptions(device="cpu")
        ref = evaluate_checkpoint(tiny_checkpoint, data_dir=tiny_dataset, options=cpu).result
        assert [s["miou"] for s in data["subsets"]] == [round(100 * m.miou, 4) for m in ref.metrics]
        assert data["summary"]["top1"] == round(100 * ref.summary.top1, 4)
        # 2 test tiles of 64², 4 unlabelled pixels each; sar alone misses half of tile 1
        assert data["subsets"][0]["pixels"] == 2 * (64 * 64 - 4)
        assert data["subsets"][-1]["pixels"] == 2 * (64 * 64 - 4) - 64 * 32

    def test_compiled_gives_the_same_table(
        self, tiny_checkpoint: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--compile: the same subsets' numbers, and a line on what was compiled."""
        monkeypatch.setenv("SGMA_COMPILE_BACKEND", "eager")  # tracing only: no C++ to build
        args = [tiny_checkpoint, "--data", tiny_dataset, "--json", "--device", "cpu"]
        plain, compiled = _run(*args), _run(*args, "--compile")
        assert compiled.exit_code == 0, compiled.output
        assert json.loads(compiled.stdout) == json.loads(plain.stdout)
        assert "torch.compile: backbone, fuse, head; first batch" in compiled.stderr
        assert "torch.compile" not in plain.stderr  # off on the CPU unless asked

    def test_subsets_option(self, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        result = _run(
            tiny_checkpoint,
            "--data",
            tiny_dataset,
            "--json",
            "--subsets",
            "dsm,rgb;sar",
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output
        assert [s["modalities"] for s in json.loads(result.stdout)["subsets"]] == [
            ["rgb", "dsm"],
            ["sar"],
        ]

    def test_report_folder(self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        out = tmp_path / "report"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "metrics.json").write_text("old")
        result = _run(tiny_checkpoint, "--data", tiny_dataset, "--out", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        names = {p.name for p in out.iterdir()}
        assert names == {
            "notes.txt",
            "metrics.json",
            "subsets.csv",
            "report.md",
            "miou_per_subset.png",
            "confusion_full.png",
            "robustness.png",
        }
        assert (out / "notes.txt").read_text() == "mine"  # other files left alone
        metrics = json.loads((out / "metrics.json").read_text())
        assert len(metrics["subsets"]) == 7
        assert set(metrics["robustness"]["weights"]) == {"rgb", "dsm", "sar"}
        assert len(metrics["robustness"]["weights"]["sar"]) == 4
        with (out / "subsets.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert [r["subset"] for r in rows][-1] == "sar" and rows[0]["rgb"] == "1"
        assert float(rows[0]["miou"]) == pytest.approx(metrics["subsets"][0]["miou"], abs=1e-4)
        for png in ("miou_per_subset.png", "confusion_full.png", "robustness.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        md = (out / "report.md").read_text()
        assert (
            "| ● | ● | ● |" in md
            and "**Last-1**" in md
            and "![mIoU per subset](miou_per_subset.png)" in md
        )
        assert not list(tmp_path.glob(".report.tmp-*"))

    def test_compare(self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        other = make_tiny_checkpoint(tmp_path / "sum.pt", fusion="sum", seed=1)
        result = _run(
            tiny_checkpoint, "--data", tiny_dataset, "--compare", other, "--json", "--device", "cpu"
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        (theirs,) = data["compare"]
        (delta,) = data["delta"]
        for mine, their, d in zip(data["subsets"], theirs["subsets"], delta["subsets"]):
            assert d["miou"] == pytest.approx(mine["miou"] - their["miou"], abs=1e-3)
        assert delta["summary"]["last1"] == pytest.approx(
            data["summary"]["last1"] - theirs["summary"]["last1"], abs=1e-3
        )
        table = _run(tiny_checkpoint, "--data", tiny_dataset, "--compare", other, "--device", "cpu")
        assert table.exit_code == 0 and "Δ sum" in table.stdout

    def test_data_from_checkpoint_recipe(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        ckpt = load_checkpoint(tiny_checkpoint)
        ckpt.meta = ckpt.meta.model_copy(update={"recipe": {"data": {"dir": str(tiny_dataset)}}})
        path = save_checkpoint(tmp_path / "with_recipe.pt", ckpt)
        result = _run(path, "--json", "--split", "val", "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["split"] == "val"

    def test_dataset_without_a_modality(self, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        _drop_last_modality(tiny_dataset)
        result = _run(tiny_checkpoint, "--data", tiny_dataset, "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert [s["modalities"] for s in data["subsets"]] == [["rgb", "dsm"], ["rgb"], ["dsm"]]
        assert data["skipped_modalities"] == ["sar"]
        assert "no sar" in result.stderr


def _bad_classes(raw: dict[str, Any]) -> None:
    raw["classes"][1]["name"] = "roof"


def _bad_bands(raw: dict[str, Any]) -> None:
    raw["modalities"][1]["bands"] = 2
    for key in ("mean", "std", "p2", "p98"):
        raw["modalities"][1]["stats"][key] *= 2


class TestErrors:
    @pytest.mark.parametrize(
        ("edit", "code", "message"),
        [
            (
                _bad_classes,
                1,
                "classes ['ground', 'roof', 'tree'] do not match the checkpoint's "
                "['ground', 'building', 'tree']",
            ),
            (_bad_bands, 1, "modality dsm has 2 band(s) here but 1 in the checkpoint"),
            (
                lambda raw: raw.update(modalities=[{**raw["modalities"][0], "name": "nir"}]),
                1,
                "none of the checkpoint's modalities",
            ),
        ],
    )
    def test_dataset_mismatch(
        self,
        tmp_path: Path,
        tiny_checkpoint: Path,
        tiny_dataset: Path,
        edit: Any,
        code: int,
        message: str,
    ) -> None:
        _edit_manifest(tiny_dataset, edit)
        out = tmp_path / "never"
        result = _run(tiny_checkpoint, "--data", tiny_dataset, "--out", out, "--device", "cpu")
        assert result.exit_code == code
        assert message in result.output and str(tiny_dataset) in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not out.exists()

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["--subsets", "rgb,nir"], 2, "subset 'rgb,nir' names unknown modalities ['nir']"),
            (["--split", "holdout"], 2, "--split 'holdout'"),
            (["--device", "tpu"], 2, "'--device': 'tpu': use auto, cpu, cuda or cuda:N"),
            (["--overlap", "0.95"], 2, "'--overlap': Input should be less than or equal to 0.9"),
        ],
    )
    def test_bad_options(
        self, tiny_checkpoint: Path, tiny_dataset: Path, args: list[str], code: int, message: str
    ) -> None:
        result = _run(tiny_checkpoint, "--data", tiny_dataset, *args)
        assert result.exit_code == code
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1

    def test_checkpoint_problems(self, tmp_path: Path, tiny_dataset: Path) -> None:
        missing = _run(tmp_path / "nope.pt", "--data", tiny_dataset)
        assert missing.exit_code == 1 and "nope.pt: checkpoint not found" in missing.output
        junk = tmp_path / "junk.pt"
        junk.write_bytes(b"not a zip")
        bad = _run(junk, "--data", tiny_dataset)
        assert bad.exit_code == 1 and "junk.pt: not a readable checkpoint" in bad.output
        assert "Traceback" not in missing.output + bad.output

    def test_no_data_and_none_recorded(self, tiny_checkpoint: Path) -> None:
        result = _run(tiny_checkpoint)
        assert result.exit_code == 2
        assert "pass the prepared dataset with --data DATA_DIR" in result.output

    def test_empty_split(self, tiny_checkpoint: Path, dataset_factory: Any) -> None:
        data = dataset_factory("notest", tiles={"train": 2, "val": 1})
        result = _run(tiny_checkpoint, "--data", data)
        assert result.exit_code == 1
        assert "split 'test' has no tiles (splits with tiles: train (2), val (1))" in result.output

    def test_compare_other_classes(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        ckpt = load_checkpoint(tiny_checkpoint)
        classes = [c.model_copy(update={"name": f"c{i}"}) for i, c in enumerate(ckpt.meta.classes)]
        ckpt.meta = ckpt.meta.model_copy(update={"classes": classes})
        other = save_checkpoint(tmp_path / "renamed.pt", ckpt)
        out = tmp_path / "never"
        result = _run(
            tiny_checkpoint,
            "--data",
            tiny_dataset,
            "--compare",
            other,
            "--out",
            out,
            "--device",
            "cpu",
        )
        assert result.exit_code == 1
        assert f"{other}: classes ['c0', 'c1', 'c2'] differ from tiny.pt's" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()

    def test_out_is_a_file(self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path) -> None:
        out = tmp_path / "file.txt"
        out.write_text("x")
        result = _run(tiny_checkpoint, "--data", tiny_dataset, "--out", out)
        assert result.exit_code == 2 and "is a file" in result.output


class TestScene:
    def test_whole_scene_json(self, tmp_path: Path, tiny_checkpoint: Path) -> None:
        from tests.conftest import make_tiny_scene

        scene = make_tiny_scene(tmp_path / "scene", size=64)
        result = _run(
            tiny_checkpoint,
            "--scene",
            scene,
            "--labels",
            scene / "labels.tif",
            "--window",
            "64",
            "--json",
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["split"] == "scene" and data["tiles"] == 1 and len(data["subsets"]) == 7
        assert (
            data["subsets"][4]["modalities"] == ["rgb"] and data["subsets"][4]["pixels"] == 64 * 64
        )

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--scene", "{scene}"], "--scene and --labels go together"),
            (
                ["--scene", "{scene}", "--labels", "{scene}/labels.tif", "--data", "{scene}"],
                "give either --data",
            ),
        ],
    )
    def test_option_errors(
        self, tmp_path: Path, tiny_checkpoint: Path, args: list[str], message: str
    ) -> None:
        scene = tmp_path / "scene"
        scene.mkdir()
        (scene / "labels.tif").write_bytes(b"")
        result = _run(tiny_checkpoint, *(a.format(scene=scene) for a in args))
        assert result.exit_code == 2 and message in result.output

    def test_scene_from_tiles_and_stac_scores_like_the_merged_files(
        self, tmp_path: Path, tiny_checkpoint: Path
    ) -> None:
        from tests.tiled_region import make_tiled_region, write_stac_items

        region = make_tiled_region(tmp_path / "region", size=96)  # one 96 px window
        common = ("--labels", region.merged / "labels.tif", "--json", "--device", "cpu",
                  "--subsets", "rgb,dsm,sar;dsm", "--window", "96")  # fmt: skip
        merged = _run(tiny_checkpoint, "--scene", region.merged, *common)
        assert merged.exit_code == 0, merged.output
        items = write_stac_items(region.root / "items.json", region.rgb_tiles)
        tiled = _run(tiny_checkpoint, "--stac", items, "--asset", "rgb=visual", "--modality",
                     f"dsm={region.dsm_dir}", "--modality", f"sar={region.merged}/sar.tif",
                     *common)  # fmt: skip
        assert tiled.exit_code == 0, tiled.output
        a, b = json.loads(merged.stdout), json.loads(tiled.stdout)
        assert a["subsets"] == b["subsets"] and len(a["subsets"]) == 2
