"""The one exception type for user mistakes: the CLI prints it as a single line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, config or flags — not a bug.

    ``where`` names the file or option at fault, ``message`` says what was expected.
    The CLI prints ``error: <where>: <message>`` without a traceback.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = str(where)
        self.message = message
