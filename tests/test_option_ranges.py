"""Every number option of every command has a finite range, checked while the command line is parsed: nan, inf,
1e400, -1 and 10**30 are one line naming the option and its range (exit 2), before any file is looked at."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from cli_helpers import fails

from socialfeat.cli import app

MISSING = "/nonexistent/socialfeat-option-ranges"  # every required path: a value that passed would fail on it
HOSTILE = ["nan", "inf", "-inf", "1e400", "-1", str(10**30)]
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _required(command: Any) -> list[str]:
    """The command's required arguments and options, each given a path that does not exist."""
    given: list[str] = []
    for param in command.params:
        if param.required:
            given += [MISSING] if param.param_type_name == "argument" else [param.opts[0], MISSING]
    return given


def _flag(param: Any) -> str:
    return next(o for o in param.opts if o.startswith("--"))


NUMBERS = [
    (name, param)
    for name, command in sorted(COMMANDS.items())
    for param in command.params
    if param.param_type_name == "option" and param.type_descriptor.annotation in (int, float)
]
CASES = [pytest.param(name, _flag(p), id=f"{name} {_flag(p)}") for name, p in NUMBERS]


def test_the_introspection_finds_the_number_options() -> None:
    flags = {(name, _flag(p)) for name, p in NUMBERS}
    assert len(NUMBERS) >= 30
    assert {("serve", "--max-upload-mb"), ("export", "--opset"), ("factorize", "--factors"), ("train", "--lr")} <= flags


@pytest.mark.parametrize(("command", "option"), CASES)
def test_every_number_option_has_a_finite_range(command: str, option: str) -> None:
    param = next(p for p in COMMANDS[command].params if option in p.opts)
    assert param.min is not None, option
    # --opset's top is what the installed exporter and onnxruntime support, found when the flag is given
    assert param.max is not None or (option == "--opset" and param.callback is not None), option


def _refused(command: str, option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails([command, *_required(COMMANDS[command]), f"{option}={value}"], capsys)
    assert line.startswith(f"error: {option}: expected "), line
    assert MISSING not in line  # refused while parsing: the path was never looked at


# each in-process run builds the typer app again (~0.2 s): one hostile value per option here, every value across
# the options; the whole product (200 runs) below, marked slow
SAMPLE = [pytest.param(*case.values, HOSTILE[i % len(HOSTILE)], id=case.id) for i, case in enumerate(CASES)]


@pytest.mark.parametrize(("command", "option", "value"), SAMPLE)
def test_a_hostile_number_is_one_line_naming_the_option(
    command: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(command, option, value, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("command", "option"), CASES)
def test_every_hostile_number_is_refused_by_every_option(
    command: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(command, option, value, capsys)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["factorize", MISSING, "--alpha", "0"], "--alpha"),
        (["factorize", MISSING, "--epsilon", "0"], "--epsilon"),
        (["factorize", MISSING, "--factors", "0"], "--factors"),
        (["factorize", MISSING, "--cold-fraction", "1"], "--cold-fraction"),
        (["train", MISSING, "--lr", "0"], "--lr"),
        (["train", MISSING, "--epochs", "0"], "--epochs"),
        (["simulate", "--out", MISSING, "--views-per-user", "0"], "--views-per-user"),
        (["similar", MISSING, "x", "--k", "0"], "--k"),
        (["transfer", MISSING, "--folds", "1"], "--folds"),
    ],
)
def test_a_meaningless_bound_is_refused_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(argv, capsys)
    assert line.startswith(f"error: {option}: "), line


def test_the_range_message_names_the_range_and_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["serve", MISSING, "--max-upload-mb", "nan"], capsys)
    assert (
        line == "error: --max-upload-mb: expected a number from 0.01 to 1000, got 'nan' (see: socialfeat serve --help)"
    )
    line = fails(["factorize", MISSING, "--factors", str(10**30)], capsys)
    assert line.startswith(f"error: --factors: expected an integer from 1 to 1000000, got '{10**30}'"), line
    line = fails(["export", MISSING, "--opset", "99"], capsys)
    assert line.startswith("error: --opset: expected an opset from 18 to "), line
    assert "got 99" in line


def test_the_flag_ranges_are_the_config_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    """A flag and its config key refuse the same values: ``--set`` of a value past the flag's range fails too."""
    line = fails(["factorize", MISSING, "--set", "factorize.factors=1000001"], capsys)
    assert "factorize.factors: input should be less than or equal to 1000000" in line
    line = fails(["serve", MISSING, "--set", "serve.port=65536"], capsys)
    assert "serve.port: input should be less than or equal to 65535" in line
