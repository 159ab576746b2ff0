"""Shared fixtures: paths to the repository's scenarios and a CLI runner."""
from __future__ import annotations

from pathlib import Path

import pytest

from parsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


@pytest.fixture
def run_cli(capsys):
    """Run ``parsim ARGS`` in-process; return (exit code, stdout, stderr)."""
    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run
