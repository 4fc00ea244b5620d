"""socialfeat: learn image features from how people engage with images.

``socialfeat.open_run(path)`` opens a run for questions in Python (see :mod:`socialfeat.library`).
The library loads on first use, so ``import socialfeat`` stays cheap for the CLI.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("socialfeat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from socialfeat.errors import UserError

_LIBRARY = ("Run", "open_run")  # in socialfeat.library, which imports numpy and the config on first use


def __getattr__(name: str) -> Any:
    if name in _LIBRARY:
        import importlib

        return getattr(importlib.import_module("socialfeat.library"), name)
    raise AttributeError(f"module 'socialfeat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LIBRARY])


__all__ = ["Run", "UserError", "__version__", "open_run"]
