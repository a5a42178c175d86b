"""REST routes: keys (placeholder: being written)."""

from fastapi import APIRouter

router = APIRouter(tags=["keys"])
