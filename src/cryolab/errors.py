"""Errors that mean "the input is wrong", as opposed to a bug in cryolab.

The command line turns an :class:`InputError` into a one-line message and exit status 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file that cannot be read, a missing column, a value out of range.

    The message names the offending file (when there is one) and the problem, in one line.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)
