"""Write errors injected at the write layer: one line naming the file, nothing finished left.

Each test makes one write function raise at its n-th call, the way a full disk
(``ENOSPC``), an I/O error (``EIO``) or a folder made read-only (``EROFS``) shows up, in
``prepare``, ``predict``, ``evaluate --out`` and ``train``. The command must stop with one
:class:`OutputError` whose message names the output, its reason and the next step; what it
leaves must not look finished (no ``dataset.toml``, no map, no ``metrics.json``, no
``summary.json``, no temporaries); and the same command run again must complete, with the
files of an uninterrupted run. Real full and read-only file systems: ``test_tiny_filesystem``.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

import geopandas
import pyogrio.errors
import pytest
import rasterio.io
from matplotlib.figure import Figure
from rasterio.errors import RasterioIOError
from typer.testing import CliRunner

import sgma_cli.data.writers as writers
from sgma_cli.cli.app import app
from sgma_cli.data.tile_files import read_tile
from sgma_cli.engine.predict.job import output_paths, run_predict
from sgma_cli.engine.prepare import prepare
from sgma_cli.errors import OutputError
from tests.reliability.conftest import Evaluated, Faults, Predicted, Prepared, oserror, tree

FULL = "cannot write (No space left on device); free some space, then run the command again"


# ------------------------------------------------------------------------------ prepare
class TestPrepare:
    def test_disk_full_mid_tile_removes_the_first_run(
        self, prepared: Prepared, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "data"
        calls = faults.fail(rasterio.io.DatasetWriter, "write", at=13)  # 3rd tile's sar.tif
        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out))
        assert str(caught.value) == f"{out}/tiles/train/scene_r00000_c00032/sar.tif: {FULL}"
        assert not out.exists()  # a first run removes what it wrote
        prepare(prepared.options(out))
        assert calls[0] > 13 and tree(out) == tree(prepared.clean)

    def test_index_error_on_a_resumed_run_keeps_tiles(
        self, prepared: Prepared, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "data"

        def interrupt(done: int, total: int) -> None:
            if done == 9:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            prepare(prepared.options(out), progress=interrupt)
        full = pyogrio.errors.FeatureError("failed to execute insert : database or disk is full")
        faults.fail(geopandas.GeoDataFrame, "to_file", error=full)
        with pytest.raises(OutputError, match=re.escape(f"{out}/index.gpkg: {FULL}")):
            prepare(prepared.options(out))
        names = sorted(p.name for p in out.iterdir())
        assert names == [".sgma-prepare.json", "tiles"]  # no index, no dataset.toml, no temps
        assert len(list((out / "tiles" / "train").iterdir())) == 25  # every tile is finished
        read_tile(out / "tiles" / "train" / "scene_r00064_c00064", ["rgb", "dsm", "sar"])
        report = prepare(prepared.options(out))
        assert report.tiles_resumed == 25 and tree(out) == tree(prepared.clean)

    def test_folder_made_read_only(
        self, prepared: Prepared, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "data"
        faults.fail(Path, "rename", at=5, code=errno.EROFS)  # the 5th tile folder's rename
        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out))
        assert str(caught.value) == (
            f"{out}/tiles/train/scene_r00000_c00064: cannot write (Read-only file system); "
            "make the folder writable, then run the command again"
        )
        assert not out.exists()
        prepare(prepared.options(out))
        assert tree(out) == tree(prepared.clean)

    def test_io_error_writing_dataset_toml(
        self, prepared: Prepared, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "data"
        calls = [0]
        real = Path.write_text

        def failing(path: Path, *args: object, **kwargs: object) -> int:
            if path.name.startswith(".dataset.toml"):
                calls[0] += 1
                raise oserror(errno.EIO)
            return real(path, *args, **kwargs)  # type: ignore[arg-type]

        faults.monkeypatch.setattr(Path, "write_text", failing)
        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out))
        assert str(caught.value) == (
            f"{out}/dataset.toml: cannot write (Input/output error); run the command again"
        )
        assert not out.exists() and calls == [1]
        faults.monkeypatch.setattr(Path, "write_text", real)
        prepare(prepared.options(out))
        assert tree(out) == tree(prepared.clean)

    def test_overwrite_that_cannot_delete(
        self, prepared: Prepared, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "data"
        shutil.copytree(prepared.clean, out)
        faults.fail(shutil, "rmtree", code=errno.EIO)  # deleting the earlier tiles
        with pytest.raises(OutputError) as caught:
            prepare(prepared.options(out, tile=48, overwrite=True))
        assert (
            str(caught.value) == f"{out}: cannot write (Input/output error); run the command again"
        )
        assert (out / "dataset.toml").exists()  # the earlier dataset is still whole

    def test_cli_prints_one_line(self, prepared: Prepared, faults: Faults, tmp_path: Path) -> None:
        out = tmp_path / "data"
        faults.fail(rasterio.io.DatasetWriter, "write", at=1)
        args = ["prepare", str(prepared.src), "--out", str(out), "--tile", "32", "--stride", "16"]
        args += ["--labels", "labels_index.tif", "--palette", "potsdam", "--split", "1,0,0"]
        for m in ("rgb=rgb.tif", "dsm=dsm.tif", "sar=sar.tif"):
            args += ["--modality", m]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if "error" in line.lower()]
        assert errors == [f"error: {out}/tiles/train/scene_r00000_c00000/rgb.tif: {FULL}"]
        assert "Traceback" not in result.output and not out.exists()


# ------------------------------------------------------------------------------ predict
def _outputs_gone(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [], "outputs or temporaries were left"


class TestPredict:
    def test_disk_full_in_a_block_write(
        self, predicted: Predicted, faults: Faults, tmp_path: Path
    ) -> None:
        faults.fail(rasterio.io.DatasetWriter, "write", at=2)  # the probabilities' block
        with pytest.raises(OutputError) as caught:
            run_predict(predicted.job(tmp_path))
        assert str(caught.value) == f"{tmp_path}/map.probabilities.tif: {FULL}"
        _outputs_gone(tmp_path)
        run_predict(predicted.job(tmp_path))
        assert tree(tmp_path) == tree(predicted.clean)

    def test_gdal_error_in_the_cog_copy(
        self, predicted: Predicted, faults: Faults, tmp_path: Path
    ) -> None:
        gdal = RasterioIOError("Write failed. See previous exception for details.")
        faults.fail(writers, "rio_copy", at=3, error=gdal)
        with pytest.raises(OutputError) as caught:
            run_predict(predicted.job(tmp_path))
        assert str(caught.value) == (
            f"{tmp_path}/map.confidence.tif: cannot write "
            "(Write failed. See previous exception for details.); run the command again"
        )
        _outputs_gone(tmp_path)

    def test_geopackage_error(self, predicted: Predicted, faults: Faults, tmp_path: Path) -> None:
        faults.fail(geopandas.GeoDataFrame, "to_file", code=errno.EIO)
        with pytest.raises(OutputError, match=r"map.gpkg: cannot write \(Input/output error\)"):
            run_predict(predicted.job(tmp_path))
        _outputs_gone(tmp_path)

    def test_failed_rename_leaves_no_mix_of_old_and_new(
        self, predicted: Predicted, faults: Faults, tmp_path: Path
    ) -> None:
        for p in predicted.clean.iterdir():  # outputs of an earlier run at the same paths
            shutil.copy(p, tmp_path / p.name)
        job = predicted.job(tmp_path)
        # os.replace: 1 the GeoPackage's own temporary, then the 4 outputs; fail the 2nd output
        calls = faults.fail(writers.os, "replace", at=3, code=errno.EIO)
        with pytest.raises(OutputError) as caught:
            run_predict(job)
        assert calls[0] == 3
        assert str(caught.value) == (
            f"{tmp_path}/map.confidence.tif: cannot write (Input/output error); "
            "run the command again"
        )
        _outputs_gone(tmp_path)  # neither the new outputs nor the older ones
        run_predict(job)
        assert tree(tmp_path) == tree(predicted.clean)
        assert set(output_paths(job).values()) == set(tmp_path.iterdir())


# ------------------------------------------------------------------------------ evaluate
class TestEvaluate:
    def test_plot_error_in_a_new_folder(
        self, evaluated: Evaluated, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "report"
        faults.fail(Figure, "savefig", at=2)
        with pytest.raises(OutputError) as caught:
            evaluated.write(out)
        assert str(caught.value) == f"{out}: {FULL}"
        assert list(tmp_path.iterdir()) == []
        evaluated.write(out)
        assert tree(out) == tree(evaluated.clean)

    def test_failed_rename_into_an_existing_report(
        self, evaluated: Evaluated, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "report"
        evaluated.write(out, evaluated.other)
        (out / "notes.txt").write_text("mine")
        faults.fail(writers.os, "replace", at=3 + 3, code=errno.EIO)  # 3 plots, then publish
        with pytest.raises(OutputError, match="robustness.png: cannot write"):
            evaluated.write(out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
        assert [p.name for p in out.iterdir()] == ["notes.txt"]  # none of the report's files
        evaluated.write(out)
        assert tree(out) == {**tree(evaluated.clean), "notes.txt": tree(out)["notes.txt"]}

    def test_cli_prints_one_line(
        self, evaluated: Evaluated, faults: Faults, tmp_path: Path
    ) -> None:
        out = tmp_path / "report"
        faults.fail(Path, "write_text", at=1)
        args = ["evaluate", str(evaluated.checkpoint), "--data", str(evaluated.data)]
        args += ["--device", "cpu", "--subsets", "rgb", "--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if "error" in line.lower()]
        assert errors == [f"error: {out}/metrics.json: {FULL}"]
        assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


def test_oserror_carries_errno() -> None:
    err = oserror(errno.EROFS)
    assert err.errno == errno.EROFS and err.strerror == "Read-only file system"
