"""The CLI's entry point: usage mistakes are one line, control characters cannot split an error line, and a
programming error keeps its own traceback (never masked by the error printer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import fails

from socialfeat.cli import main, one_line


def test_usage_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["recommend", "somewhere", "--image", "x.png", "--k", "1e3"], capsys)
    assert line.startswith("error: --k: ") and line.endswith("(see: socialfeat recommend --help)")
    assert fails(["nosuch"], capsys) == "error: No such command 'nosuch' (see: socialfeat --help)"
    assert "Missing option '--out'" in fails(["ingest"], capsys)


def test_a_bare_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2 and "Commands" in capsys.readouterr().out


def test_control_characters_are_escaped() -> None:
    assert one_line("error: a\nb.png: \x00user_id\r\t") == "error: a\\nb.png: \\x00user_id\\r\\t"


def test_a_programming_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socialfeat.data.ingest as ingest_module

    def broken(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("a bug, not a user mistake")

    monkeypatch.setattr(ingest_module, "ingest", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["ingest", "--interactions", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")])
