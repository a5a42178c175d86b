"""REST routes: datasets (placeholder: being written)."""

from fastapi import APIRouter

router = APIRouter(tags=["datasets"])
