"""Errors raised for user mistakes.

Every error a user can cause (a bad scenario file, an unknown catalog id, an impossible
configuration) is a :class:`PlannerError`. The CLI prints its message as one paragraph and
exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class PlannerError(Exception):
    """A problem with the user's input, explained in plain words."""

    exit_code = 2


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
            where.append(str(path))
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)


class CatalogError(PlannerError):
    """A catalog reference cannot be resolved or a catalog file is malformed."""
