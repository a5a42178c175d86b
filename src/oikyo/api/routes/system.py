"""REST routes: system (placeholder: being written)."""

from fastapi import APIRouter

router = APIRouter(tags=["system"])
public_router = APIRouter(tags=["system"])
