"""What a test needs from the machine: a tool, a file-system feature, sample data, an extra, a browser.

Every such skip goes through :func:`need`, so one switch decides what a missing piece means. With
``SOCIALFEAT_REQUIRE_ALL=1`` (``.ci/run`` sets it) a missing piece fails the test. Elsewhere the test skips,
and its reason starts with ``environment:``. ``tests/test_environment.py`` checks that no other skip creeps in.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

SWITCH = "SOCIALFEAT_REQUIRE_ALL"
OLD_SWITCH = "SOCIALFEAT_REQUIRE_BROWSER"  # the browser-only switch it replaced; still honoured
PREFIX = "environment: "


def required() -> bool:
    """Whether a missing piece is a failure here (CI) rather than a skip (a developer's machine)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in (SWITCH, OLD_SWITCH))


def need(ok: object, reason: str) -> None:
    """Go on when ``ok`` holds; else skip with ``reason``, or fail under the switch.

    Args:
        ok: the condition the test needs, e.g. ``path.is_file()``.
        reason: what is missing and how to get it, in a few words.

    Raises:
        pytest.fail.Exception: ``ok`` is false and the switch is on.
        pytest.skip.Exception: ``ok`` is false and the switch is off.
    """
    if ok:
        return
    if required():
        pytest.fail(f"{PREFIX}{reason} ({SWITCH}=1 turns this skip into a failure)", pytrace=False)
    # reported at the test that needs it (as a skipif mark is), not at this helper
    raise pytest.skip.Exception(f"{PREFIX}{reason}", allow_module_level=True, _use_item_location=True)


def need_module(name: str, reason: str) -> ModuleType:
    """The module ``name``, imported; a missing one goes through :func:`need`.

    Args:
        name: the module to import, e.g. ``"onnxruntime"``.
        reason: which extra or package provides it.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        need(False, f"{reason} ({exc})")
        raise  # unreachable: need() raised; this keeps the type checker sure of the return
