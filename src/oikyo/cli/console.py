"""Shared terminal output: one Rich console for results and one for messages on stderr."""

from __future__ import annotations

import sys

from rich.console import Console


def _console(stream, stderr: bool) -> Console:
    """Redirected to a file or a CI log, text lines are kept whole and tables get 160 columns
    instead of Rich's 80 (``COLUMNS`` still wins where set)."""
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    import os

    # No file= here: Rich then writes to whatever sys.stdout/stderr is at the time (test runners swap them).
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if os.environ.get("COLUMNS") else 160)


out = _console(sys.stdout, stderr=False)
err = _console(sys.stderr, stderr=True)


def fail(message: str, code: int = 2):
    """Print a user-facing error and exit with ``code``."""
    import typer

    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
