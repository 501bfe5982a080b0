"""Errors raised for user mistakes.

Every error a user can cause (a bad scenario file, an unknown catalog id, an impossible
configuration) is a :class:`PlannerError`. The CLI prints its message as one paragraph and
exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

import re

#: Exit status of the ``planner`` command (documented in ``planner --help`` and the README).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INFEASIBLE = 3
EXIT_NO_PLAN = 4

#: Longest echoed value (a user's bogus id or number) in an error message, characters.
MAX_ECHO_CHARS = 80
#: Longest error message printed, characters (the rest is cut with a note).
MAX_MESSAGE_CHARS = 4000

# C0 and C1 control characters except tab and newline (ESC would let a name clear the screen)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """``text`` with control characters (other than tab and newline) shown as ``\\xNN``.

    Everything the CLI prints goes through this, so a name in a scenario file cannot move
    the cursor, clear the screen or change the terminal's title.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def shorten(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the full length named), for echoing
    a user's value in a message without printing a megabyte of it."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text):,} characters)"


class PlannerError(Exception):
    """A problem with the user's input, explained in plain words."""

    exit_code = EXIT_USER


class ScenarioError(PlannerError):
    """A scenario file is malformed or inconsistent.

    Parameters
    ----------
    path : str or None
        The file the problem is in.
    key : str or None
        The dotted key path inside the file (``workload.chat.requests_per_day``).
    message : str
        What is wrong and what was expected.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        self.detail = message
        where = []
        if path:
            where.append(str(path) if len(str(path)) <= 300 else shorten(str(path), 300))
        if key:
            key_text = str(key) if len(str(key)) <= 200 else shorten(str(key), 200)[1:]
            where.append(f"key '{key_text}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)


class CatalogError(PlannerError):
    """A catalog reference cannot be resolved or a catalog file is malformed."""
