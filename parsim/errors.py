"""Errors a user can cause, and the one error a layout search expects.

Every user mistake is a :class:`ParsimError`: the CLI prints ``str(err)`` on one
line of stderr and exits 2, never a traceback. The message names the file, the key
path, the bad value, and what would be accepted::

    scenarios/gpt3.toml: parallel.tp = 3: must divide model.heads = 96; try 1, 2, 4, 8

:class:`Infeasible` is different: the input is well formed but the layout cannot
work (does not fit, does not divide). The planner catches it and skips the layout.
"""
from __future__ import annotations

import difflib


class ParsimError(Exception):
    """A mistake in what the user gave parsim (file, key, value)."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        prefix = ""
        if file:
            prefix += f"{file}: "
        if key and not message.startswith(key):
            prefix += f"{key}: "
        super().__init__(prefix + message)


class ScenarioError(ParsimError):
    """A scenario, topology or profile file that is malformed or inconsistent."""


class UnitError(ParsimError):
    """A quantity whose unit string cannot be parsed or has the wrong dimension."""


class Infeasible(ParsimError):
    """A well-formed layout that cannot run (memory, divisibility). Planners skip it."""


def did_you_mean(word: str, choices) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices) -> str:
    """Format accepted choices: ``one of: a, b, c``."""
    return "one of: " + ", ".join(str(c) for c in choices)
