"""Run the CLI in-process the way the tests need it: expect success, or expect one clean user-error line."""

from __future__ import annotations

import pytest

from socialfeat.cli import main


def ok(argv: list[str]) -> None:
    """Run the CLI and expect exit code 0."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect a user error: exit 2 and exactly one line on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]
