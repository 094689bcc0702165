"""Kills at any point: SIGKILL ``prepare``, ``predict`` and ``evaluate --out``, run again.

Each killed run is a forked child that SIGKILLs itself right after a chosen write event
(a GeoTIFF block, a finished tile file, a rename, the index GeoPackage, a PNG, ...; see
``conftest.Events``), so the kill lands mid-file, between files and between renames. The
rerun must end with exactly the files of an uninterrupted run: same names (no temporaries
left), same bytes (GeoPackages: same features), hence the same tiles, index and statistics.

``make test`` runs 3-4 kill points per command; the ``slow`` tests kill ``prepare`` at 12
points, again and again during its own reruns, and by the clock, and ``predict`` and
``evaluate --out`` at 10 points each.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from sgma_cli.config.dataset import load_manifest
from sgma_cli.engine.predict.job import run_predict
from sgma_cli.engine.prepare import prepare
from tests.reliability.conftest import (
    Evaluated,
    Events,
    Predicted,
    Prepared,
    kill_after,
    kill_at,
    spread,
    tree,
)


def _event(events: list[tuple[str, str]], label: str, nth: int = 1, detail: str = "") -> int:
    """1-based number of the ``nth`` event with ``label`` (and ``detail``, if given)."""
    hits = [
        i
        for i, (lab, det) in enumerate(events, start=1)
        if lab == label and (not detail or det == detail)
    ]
    assert len(hits) >= nth, f"no {nth}th {label!r} {detail!r} event in {events}"
    return hits[nth - 1]


# ------------------------------------------------------------------------------ prepare
def _prepare_points(events: list[tuple[str, str]]) -> dict[str, int]:
    index = _event(events, "GeoPackage")
    return {
        "first tile, a GeoTIFF half made": _event(events, "raster block", 1),
        "after the 10th tile": _event(events, "rename", 10),
        "index written, not renamed": index,
        "index renamed, no dataset.toml": index + 1,
    }


class TestPrepareKills:
    def test_killed_at_four_points_then_rerun_equals_clean(
        self, prepared: Prepared, tmp_path: Path
    ) -> None:
        clean = tree(prepared.clean)
        assert "dataset.toml" in clean and len([k for k in clean if k.endswith("mask.tif")]) == 25
        for i, (what, event) in enumerate(_prepare_points(prepared.events).items()):
            out = tmp_path / f"k{i}"
            kill_at(lambda out=out: prepare(prepared.options(out)), event)
            assert not (out / "dataset.toml").exists(), what
            report = prepare(prepared.options(out))
            assert tree(out) == clean, what
            assert report.tiles_resumed + report.tiles_written == 25
        m = load_manifest(out)
        assert m.splits == {"train": 25} and m.modality("rgb").stats is not None

    @pytest.mark.slow
    def test_killed_at_twelve_points_chained_and_by_clock(
        self, prepared: Prepared, tmp_path: Path
    ) -> None:
        """12 event kills (each then rerun), one folder killed 6 times in a row during its
        own reruns, and 6 kills by the clock; every folder ends equal to the clean one."""
        clean, events = tree(prepared.clean), prepared.events
        started = time.perf_counter()
        points = spread(len(events), 12)
        for event in points:
            out = tmp_path / f"point{event}"
            kill_at(lambda out=out: prepare(prepared.options(out)), event)
            prepare(prepared.options(out))
            assert tree(out) == clean, f"killed after event {event}: {events[event - 1]}"
        # one folder, killed again at a later point of each rerun (which resumes)
        chained, chain_kills = tmp_path / "chained", 0
        for event in spread(len(events) // 2, 8)[1:-1]:  # a resumed run has fewer events
            chain_kills += kill_at(lambda: prepare(prepared.options(chained)), event, must=False)
        prepare(prepared.options(chained))
        assert tree(chained) == clean and chain_kills >= 3
        # by the clock: one uninterrupted child run sets the time scale
        out = tmp_path / "timing"
        t0 = time.perf_counter()
        assert not kill_after(lambda: prepare(prepared.options(out)), 600)
        span = time.perf_counter() - t0
        rng = random.Random(0)
        killed = 0
        for k in range(6):
            out = tmp_path / f"clock{k}"
            killed += kill_after(
                lambda out=out: prepare(prepared.options(out)), rng.uniform(0.05, 0.95) * span
            )
            prepare(prepared.options(out))
            assert tree(out) == clean
        assert killed >= 3
        print(
            f"\nprepare kills: {len(points)} points + {chain_kills}/6 chained + {killed}/6 by "
            "clock over "
            f"{len(events)} write events; clean child run {span:.1f} s; "
            f"all identical; {time.perf_counter() - started:.1f} s in all"
        )


# ------------------------------------------------------------------------------ predict
class TestPredictKills:
    def test_killed_at_three_points_then_rerun_equals_clean(
        self, predicted: Predicted, tmp_path: Path
    ) -> None:
        clean = tree(predicted.clean)
        assert sorted(clean) == [
            "map.confidence.tif",
            "map.gpkg",
            "map.probabilities.tif",
            "map.tif",
        ]
        events = predicted.events
        published = [  # the renames of finished temporaries onto the outputs
            i
            for i, (label, name) in enumerate(events, start=1)
            if label == "rename" and name.endswith((".cog.tif", ".vec.gpkg"))
        ]
        assert len(published) == 4
        points = {  # (more points in the slow test)
            "mid-raster": _event(events, "raster block", 1),
            "GeoPackage written, nothing published": _event(events, "GeoPackage"),
            "two of four outputs published": published[1],
        }
        for i, (what, event) in enumerate(points.items()):
            folder = tmp_path / f"k{i}"
            folder.mkdir()
            kill_at(lambda folder=folder: run_predict(predicted.job(folder)), event)
            run_predict(predicted.job(folder))
            assert tree(folder) == clean, what

    @pytest.mark.slow
    def test_killed_at_ten_points(self, predicted: Predicted, tmp_path: Path) -> None:
        clean, events = tree(predicted.clean), predicted.events
        started = time.perf_counter()
        points = spread(len(events), 10)
        for event in points:
            folder = tmp_path / f"point{event}"
            folder.mkdir()
            kill_at(lambda folder=folder: run_predict(predicted.job(folder)), event)
            run_predict(predicted.job(folder))
            assert tree(folder) == clean, f"killed after event {event}: {events[event - 1]}"
        print(
            f"\npredict kills: {len(points)} points over {len(events)} write events, all "
            f"identical; {time.perf_counter() - started:.1f} s"
        )


# ------------------------------------------------------------------------------ evaluate
class TestEvaluateKills:
    def test_killed_at_four_points_then_rerun_equals_clean(
        self, evaluated: Evaluated, tmp_path: Path
    ) -> None:
        clean = tree(evaluated.clean)
        assert {"metrics.json", "report.md", "subsets.csv"} <= set(clean)
        events = evaluated.events
        points = {
            "metrics.json written": _event(events, "text file", 1),
            "after the first plot": _event(events, "PNG", 1),
            "report.md written, folder not renamed": _event(events, "text file", 2),
        }
        for i, (what, event) in enumerate(points.items()):
            out = tmp_path / f"k{i}" / "report"
            out.parent.mkdir()
            # the first child runs the whole command; scoring writes nothing, so the others
            # start from the scores and die at the same write events, sooner
            job = evaluated.run if i == 0 else evaluated.write
            kill_at(lambda out=out, job=job: job(out), event)
            assert not (out / "metrics.json").exists(), what
            evaluated.write(out)  # the rerun's scores are the clean run's (asserted below)
            assert tree(out) == clean, what
            assert [p.name for p in out.parent.iterdir()] == ["report"], what  # no temporaries
        # into an existing report of another checkpoint: killed half-way through the renames
        out = tmp_path / "existing" / "report"
        evaluated.write(out, evaluated.other)
        (out / "notes.txt").write_text("mine")
        old = tree(out)
        assert old["metrics.json"] != clean["metrics.json"]
        with Events() as again:  # the events of a report written into an existing folder
            evaluated.write(out, evaluated.other)
        assert tree(out) == old
        kill_at(lambda: evaluated.write(out), _event(again.seen, "rename", 1, "robustness.png"))
        assert not (out / "metrics.json").exists() and (out / "notes.txt").exists()
        evaluated.run(out)
        assert tree(out) == {**clean, "notes.txt": old["notes.txt"]}
        assert [p.name for p in out.parent.iterdir()] == ["report"]

    @pytest.mark.slow
    def test_killed_at_ten_points(self, evaluated: Evaluated, tmp_path: Path) -> None:
        clean, events = tree(evaluated.clean), evaluated.events
        started = time.perf_counter()
        points = spread(len(events), 10)
        for event in points:
            out = tmp_path / f"point{event}" / "report"
            out.parent.mkdir()
            kill_at(lambda out=out: evaluated.run(out), event)
            evaluated.run(out)
            assert tree(out) == clean, f"killed after event {event}: {events[event - 1]}"
            assert [p.name for p in out.parent.iterdir()] == ["report"]
        print(
            f"\nevaluate kills: {len(points)} points over {len(events)} write events, all "
            f"identical; {time.perf_counter() - started:.1f} s"
        )


def test_spread_includes_both_ends() -> None:
    assert spread(100, 4) == [1, 34, 67, 100] and spread(3, 5) == [1, 2, 3]
