"""Tests of the run log: metrics.csv rows, truncation on resume, plots."""

from __future__ import annotations

from pathlib import Path

from sgma_cli.engine.train.run_log import RunLog, read_metrics, subset_label, write_plots

SUBSETS = [("rgb", "dsm"), ("rgb",), ("dsm",)]


def _log(run: Path, resume_step: int | None = None) -> RunLog:
    return RunLog(
        run, ["rgb", "dsm"], SUBSETS, num_scales=2, resume_step=resume_step, tensorboard=False
    )


class TestRunLog:
    def test_rows_resume_and_plots(self, tmp_path: Path) -> None:
        log = _log(tmp_path)
        for step in range(1, 5):
            mas = {"mas_s1_rgb": 0.6, "mas_s1_dsm": 0.4, "mas_s2_rgb": 0.5, "mas_s2_dsm": 0.5}
            log.log_train(
                1,
                step,
                {
                    "lr": 1e-3,
                    "loss": 3.0 / step,
                    "loss_sgf": 1.0,
                    "loss_mas": 1.0,
                    "samples_per_s": 8.0,
                },
                mas,
            )
        log.log_val(
            1,
            4,
            {"average": 0.5, "top1": 0.7, "last1": 0.3},
            {subset_label(s): 0.5 for s in SUBSETS},
        )
        rows = read_metrics(tmp_path / "metrics.csv")
        assert [r["kind"] for r in rows] == ["train"] * 4 + ["val"]
        assert (
            float(rows[1]["loss"]) == 1.5
            and rows[4]["miou_rgb+dsm"] == "0.5"
            and rows[0]["val_average"] == ""
        )
        # a resumed run drops what came after its checkpoint
        _log(tmp_path, resume_step=2).close()
        assert [int(r["step"]) for r in read_metrics(tmp_path / "metrics.csv")] == [1, 2]
        log.log_val(
            1,
            2,
            {"average": 0.5, "top1": 0.7, "last1": 0.3},
            {subset_label(s): 0.5 for s in SUBSETS},
        )
        names = sorted(p.name for p in write_plots(tmp_path))
        assert names == ["loss.png", "mas_probs.png", "val_miou.png"]
        assert all((tmp_path / n).stat().st_size > 1000 for n in names)

    def test_tensorboard_events(self, tmp_path: Path) -> None:
        log = RunLog(tmp_path, ["rgb"], [("rgb",)], num_scales=1)
        log.log_train(1, 1, {"loss": 1.0}, {"mas_s1_rgb": 1.0})
        log.close()
        assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
