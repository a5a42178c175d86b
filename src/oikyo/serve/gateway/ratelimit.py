"""Rate limits per API key on a deployment: a token bucket per key, 429 with ``Retry-After`` when empty.

A deployment started with ``--rate-limit RPM`` (settings ``rate_limit_rpm``, and ``rate_limit_burst``:
how many requests a key may send at once, default RPM) gives every API key its own bucket of
``burst`` requests, refilled at ``RPM / 60`` per second. A request finding its key's bucket empty is
answered 429 in OpenAI's shape (``type`` ``requests``, ``code`` ``rate_limit_exceeded``; the
``openai`` client raises ``RateLimitError``) with ``Retry-After``: the whole seconds until the key
may send again. One busy client then waits for its own bucket; other keys' buckets are untouched,
so it cannot starve them. Off by default (no limit), so nothing changes for deployments that do
not ask for it. Buckets live in the router process (per deployment, reset when it restarts)::

    limiter = RateLimiter(requests_per_minute=60, burst=10)
    wait_s = limiter.take(key)          # 0.0: go ahead; > 0: refused, retry after this many seconds
    app = create_router_app(..., rate_limiter=limiter)
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from fastapi import Request

from oikyo.errors import OikyoError
from oikyo.serve.gateway.openai_api import ApiError

IDLE_BUCKETS_KEPT_S = 3600.0  # a full bucket unused this long is forgotten (it would be full again anyway)


class RateLimiter:
    """Token buckets keyed by API key (by the sha256 of the secret: no secret is kept in memory)."""

    def __init__(self, requests_per_minute: float, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not requests_per_minute or requests_per_minute <= 0:
            raise OikyoError(f"rate limit must be a positive number of requests per minute, got {requests_per_minute!r}")
        burst = max(1, int(requests_per_minute)) if burst is None else int(burst)
        if burst < 1:
            raise OikyoError(f"rate limit burst must be at least 1, got {burst}")
        self.requests_per_minute = float(requests_per_minute)
        self.burst = burst
        self.rate = self.requests_per_minute / 60.0  # requests per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._swept = clock()

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket: 0.0 when allowed, else the seconds until it would be."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(digest, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[digest] = (tokens - 1.0, now)
                self._sweep(now)
                return 0.0
            self._buckets[digest] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def remaining(self, key: str) -> int:
        """Whole requests ``key`` may send right now."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(digest, (float(self.burst), now))
            return int(min(float(self.burst), tokens + (now - at) * self.rate))

    def _sweep(self, now: float) -> None:
        if now - self._swept < IDLE_BUCKETS_KEPT_S:
            return
        self._swept = now
        for digest, (_, at) in list(self._buckets.items()):
            if now - at > IDLE_BUCKETS_KEPT_S:
                del self._buckets[digest]


def from_settings(settings: dict) -> RateLimiter | None:
    """The limiter a deployment's settings ask for (``rate_limit_rpm``, ``rate_limit_burst``); None when off."""
    rpm = settings.get("rate_limit_rpm")
    if not rpm:
        return None
    return RateLimiter(float(rpm), settings.get("rate_limit_burst"))


def rate_limit(limiter: RateLimiter, on_refused: Callable[[], None] | None = None):
    """A FastAPI dependency (after authentication): 429 with ``Retry-After`` once the caller's key is
    over its limit; ``on_refused`` is called for each such request (a metric's counter)."""
    from oikyo.serve.gateway.keys import bearer_token

    async def dependency(request: Request) -> None:
        key = bearer_token(request.headers.get("authorization")) or ""
        wait_s = limiter.take(key)
        if wait_s > 0:
            if on_refused is not None:
                on_refused()
            retry_after = max(1, math.ceil(wait_s))
            raise ApiError(429, f"Rate limit reached for this API key: {limiter.requests_per_minute:g} requests "
                                f"per minute (bursts of {limiter.burst}). Try again in {retry_after} s.",
                           type="requests", code="rate_limit_exceeded",
                           headers={"Retry-After": str(retry_after),
                                    "x-ratelimit-limit-requests": f"{limiter.requests_per_minute:g}",
                                    "x-ratelimit-remaining-requests": "0",
                                    "x-ratelimit-reset-requests": f"{retry_after}s"})

    return dependency


def check_settings(rpm, burst) -> None:
    """A clear OikyoError unless ``rpm`` / ``burst`` make a valid limit (None: off / the default)."""
    if rpm is not None and (not isinstance(rpm, (int, float)) or rpm <= 0):
        raise OikyoError(f"--rate-limit must be a positive number of requests per minute, got {rpm!r}")
    if burst is not None and (not isinstance(burst, int) or burst < 1):
        raise OikyoError(f"--rate-limit-burst must be a whole number >= 1, got {burst!r}")
