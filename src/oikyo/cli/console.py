"""Shared terminal output: one Rich console for results and one for messages on stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2):
    """Print a user-facing error and exit with ``code``."""
    import typer

    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
