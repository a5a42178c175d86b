"""The web dashboard (placeholder: being written)."""

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages and static assets to the server app."""
