"""mkdocs hook: the docstrings use Sphinx roles (``:func:`name```) that mkdocstrings leaves as text; on the site
they read as plain code, and ``~a.b.c`` as ``c`` (Sphinx's short form)."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj|const):(?=<code>)")
_SHORT = re.compile(r"<code>~(?:[\w]+\.)*(\w+)</code>")


def on_page_content(html: str, **_: Any) -> str:
    return _SHORT.sub(r"<code>\1</code>", _ROLE.sub("", html))
