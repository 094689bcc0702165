"""`sgma profile` on the command line: the table, the JSON schema, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app

runner = CliRunner()


def test_json_schema() -> None:
    result = runner.invoke(
        app,
        [
            "profile",
            "--backbone",
            "test_convnext",
            "--modalities",
            "rgb,dsm",
            "--size",
            "64",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"params", "macs", "config"}
    assert set(data["params"]["fusion_parts"]) == {"mp", "csf", "sp", "rp"}
    assert {"backbone", "fusion", "head", "total"} <= set(data["params"]) and {
        "backbone",
        "fusion",
        "head",
        "total",
    } <= set(data["macs"])
    assert all(isinstance(v, int) for v in data["macs"].values() if not isinstance(v, dict))
    assert [m["name"] for m in data["config"]["modalities"]] == ["rgb", "dsm"]
    assert data["config"]["size"] == 64


def test_table_labels_units() -> None:
    result = runner.invoke(
        app,
        [
            "profile",
            "--backbone",
            "test_resnet",
            "--modalities",
            "2",
            "--size",
            "64",
            "--num-classes",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "MACs (G)" in result.stdout and "params (M)" in result.stdout and "RP" in result.stdout


def test_latency_eager_and_compiled_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGMA_COMPILE_BACKEND", "eager")  # tracing only: no C++ to build
    base = ["profile", "--backbone", "test_convnext", "--modalities", "2", "--size", "64"]
    result = runner.invoke(app, [*base, "--latency", "--compile", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.stdout)["latency"]
    stages = ["encode", "fuse", "head", "forward"]
    assert list(latency["eager_ms"]) == stages and list(latency["compiled_ms"]) == stages
    assert all(v > 0 for v in [*latency["eager_ms"].values(), *latency["compiled_ms"].values()])
    assert latency["compile_s"] > 0 and latency["encode_strategy"] == "per_modality"
    table = runner.invoke(app, [*base, "--latency", "--compile", "--device", "cpu"])
    assert table.exit_code == 0, table.output
    for text in ("eager (ms)", "compiled (ms)", "speed-up", "fuse (SP, RP", "first compiled"):
        assert text in table.stdout, text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--compile"], 2, "--compile times the compiled model: add --latency"),
        (["--backbone", "pvt_v2_b9"], 1, "unknown backbone 'pvt_v2_b9'; did you mean"),
        (["--modalities", "0"], 2, "--modalities 0"),
        (["--size", "500"], 2, "--size 500 must be a positive multiple of 32"),
    ],
)
def test_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["profile", *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_version() -> None:
    from sgma_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"sgma {__version__}"


def test_config_error_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model config the options cannot make is the project's UsageError, not Typer's."""

    def refuse(**kwargs: object) -> None:
        raise ValueError("sp_heads=7 does not divide the channels")

    monkeypatch.setattr("sgma_cli.config.model.SGMAConfig", refuse)
    result = runner.invoke(app, ["profile", "--backbone", "test_resnet"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: sp_heads=7 does not divide the channels"]
