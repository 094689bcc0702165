"""Shared options: one declaration each, the same default in every command, the parsers."""

from __future__ import annotations

import inspect
import typing

import pytest
import typer

from sgma_cli.cli import evaluate, options, predict, prepare, profile, sample, train
from sgma_cli.cli.options import parse_device

COMMANDS = {
    "sample": sample.command,
    "prepare": prepare.command,
    "train": train.command,
    "evaluate": evaluate.command,
    "predict": predict.command,
    "profile": profile.command,
}
#: Alias name -> (its one default, the commands that take it).
SHARED = {
    "Device": ("auto", {"train", "evaluate", "predict", "profile"}),
    "Gpus": (0, {"train", "predict"}),
    "Nproc": (1, {"train", "predict"}),
    "BatchSize": (8, {"evaluate", "predict"}),
    "Window": (None, {"evaluate", "predict"}),
    "Overlap": (0.25, {"evaluate", "predict"}),
    "DataDir": (None, {"train", "evaluate"}),
    "LabelField": ("class", {"prepare", "evaluate"}),
    "AsJson": (False, {"evaluate", "profile"}),
    "Seed": (0, {"prepare", "sample"}),
}


def _flags(info: object) -> set[str]:
    """The flags of a ``typer.Option(...)``: Typer takes a first "--name" as one of them."""
    default = getattr(info, "default", None)
    first = {default} if isinstance(default, str) and default.startswith("-") else set()
    return first | set(getattr(info, "param_decls", None) or ())


def _uses() -> dict[str, dict[str, object]]:
    """Alias name -> {command: the default it gives}, from the commands' signatures."""
    aliases = {getattr(options, name): name for name in SHARED}
    found: dict[str, dict[str, object]] = {name: {} for name in SHARED}
    for command_name, command in COMMANDS.items():
        hints = typing.get_type_hints(command, include_extras=True)
        for param in inspect.signature(command).parameters.values():
            name = aliases.get(hints[param.name])
            if name is not None:
                found[name][command_name] = param.default
    return found


class TestSharedOptions:
    def test_every_command_uses_the_alias_with_its_one_default(self) -> None:
        for name, uses in _uses().items():
            default, commands = SHARED[name]
            assert set(uses) == commands, name
            assert all(value == default for value in uses.values()), (name, uses)

    def test_flags_are_declared_once(self) -> None:
        """No command declares a shared flag itself (it would drift from the alias)."""
        flags = {
            "--device",
            "--gpus",
            "--nproc",
            "--batch-size",
            "--window",
            "--overlap",
            "--data",
            "--label-field",
            "--json",
            "--seed",
        }
        for command_name, command in COMMANDS.items():
            hints = typing.get_type_hints(command, include_extras=True)
            for param_name, hint in hints.items():
                if typing.get_origin(hint) is not typing.Annotated:
                    continue
                if hint in {getattr(options, n) for n in SHARED}:
                    continue
                declared = {d for info in hint.__metadata__ for d in _flags(info)}
                assert not declared & flags, (command_name, param_name, declared & flags)


class TestParseDevice:
    @pytest.mark.parametrize(
        ("text", "value"),
        [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), (" cuda:3 ", "cuda:3")],
    )
    def test_good(self, text: str, value: str) -> None:
        assert parse_device(text) == value

    @pytest.mark.parametrize("text", ["tpu", "cuda:", "cuda:x", "gpu0", ""])
    def test_bad(self, text: str) -> None:
        with pytest.raises(typer.BadParameter, match="use auto, cpu, cuda or cuda:N"):
            parse_device(text)
