"""The one switch for environment skips: ``need`` skips or fails, and every skip in tests/ goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from environment import OLD_SWITCH, PREFIX, SWITCH, need, need_module

TESTS = Path(__file__).resolve().parent
SKIP_CALL = re.compile(r"pytest\.(skip|importorskip)\(|mark\.skip(if)?\b|\bimportorskip\(")
NOT_ENVIRONMENT = "# not the environment:"  # a skip about something else says so on its line


@pytest.fixture
def switch_off(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(SWITCH, raising=False)
    monkeypatch.delenv(OLD_SWITCH, raising=False)
    return monkeypatch


def test_a_missing_piece_skips_without_the_switch(switch_off: pytest.MonkeyPatch) -> None:
    need(True, "never shown")
    with pytest.raises(pytest.skip.Exception, match=f"^{PREFIX}chattr is not installed$"):
        need(False, "chattr is not installed")
    with pytest.raises(pytest.skip.Exception, match=f"^{PREFIX}the x extra .*no_such_module_here"):
        need_module("no_such_module_here", "the x extra")
    switch_off.setenv(SWITCH, "0")
    with pytest.raises(pytest.skip.Exception):
        need(False, "off")


@pytest.mark.parametrize("name", [SWITCH, OLD_SWITCH])
def test_the_switch_turns_the_skip_into_a_failure(switch_off: pytest.MonkeyPatch, name: str) -> None:
    switch_off.setenv(name, "1")
    need(1, "present")
    with pytest.raises(pytest.fail.Exception, match=f"^{PREFIX}no sample data .*{SWITCH}=1"):
        need(False, "no sample data")
    with pytest.raises(pytest.fail.Exception):
        need_module("no_such_module_here", "the x extra")
    assert need_module("json", "the standard library").dumps([]) == "[]"


def test_every_skip_in_the_tests_goes_through_need() -> None:
    """A bare pytest.skip, importorskip or skipif would pass silently in CI; environment.py is the one place."""
    stray = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("environment.py", Path(__file__).name)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SKIP_CALL.search(line) and NOT_ENVIRONMENT not in line
    ]
    assert stray == [], "use environment.need / need_module (or mark the line '# not the environment: why'):\n" + (
        "\n".join(stray)
    )
