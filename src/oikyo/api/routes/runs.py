"""REST routes: runs (placeholder: being written)."""

from fastapi import APIRouter

router = APIRouter(tags=["runs"])
