"""How many replicas a pool should run (``--replicas auto``): a small, documented policy with cooldowns.

Every supervisor tick (half a second) the router observes, per pool: the queue depth (requests
waiting for a batch slot: in the engines' queues plus those the router holds while no replica is
free), the requests in flight, and the p95 latency of the requests finished in the last minute.

- **Scale up** by one when the pool is overloaded, i.e. more than ``target_queue_per_replica``
  requests wait per replica, or the p95 latency is above ``max_p95_latency_s`` (when set), and the
  last change is at least ``scale_up_cooldown_s`` old.
- **Scale down** by one when the pool is idle enough: nothing waits, the requests in flight would
  fit in one replica fewer at ``idle_fraction`` of its batch capacity, the p95 latency (when a
  target is set) is under half of it, and the last change is at least ``scale_down_cooldown_s`` old.
- Always stay within ``[min_replicas, max_replicas]``.

Scaling up is quick and scaling down slow (cooldowns of 30 s and 120 s by default) so a burst does
not make the pool flap; a new replica needs its model load time before it helps. A replica taken
away drains: it gets no new requests and exits once its requests in flight are done::

    policy = AutoscalePolicy(min_replicas=1, max_replicas=3)
    desired = decide(policy, Observation(replicas=1, queue_depth=9, in_flight=25, p95_latency_s=4.0,
                                         capacity_per_replica=16), now=120.0, last_change_at=0.0)   # 2
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class AutoscalePolicy:
    """The knobs of ``--replicas auto`` (stored in the deployment's settings)."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_queue_per_replica: float = 2.0  # waiting requests per replica above which to add one
    max_p95_latency_s: float | None = None  # p95 latency above which to add one (None: queue only)
    idle_fraction: float = 0.25  # remove one when in-flight fits in n-1 replicas at this share of capacity
    scale_up_cooldown_s: float = 30.0
    scale_down_cooldown_s: float = 120.0
    latency_window_s: float = 60.0

    def __post_init__(self):
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Observation:
    """A pool's load at one tick."""

    replicas: int  # replicas running or starting (not draining)
    queue_depth: float
    in_flight: int
    p95_latency_s: float | None
    capacity_per_replica: int  # the engine's batch size


def decide(policy: AutoscalePolicy, obs: Observation, now: float, last_change_at: float) -> int:
    """The number of replicas the pool should have now."""
    current = obs.replicas
    if current < policy.min_replicas:
        return policy.min_replicas
    if current > policy.max_replicas:
        return policy.max_replicas
    since = now - last_change_at
    latency_high = policy.max_p95_latency_s is not None and (obs.p95_latency_s or 0.0) > policy.max_p95_latency_s
    overloaded = obs.queue_depth > policy.target_queue_per_replica * current or latency_high
    if overloaded:
        if current < policy.max_replicas and since >= policy.scale_up_cooldown_s:
            return current + 1
        return current
    latency_low = (policy.max_p95_latency_s is None or obs.p95_latency_s is None
                   or obs.p95_latency_s < policy.max_p95_latency_s / 2)
    idle = (obs.queue_depth == 0 and latency_low
            and obs.in_flight <= (current - 1) * obs.capacity_per_replica * policy.idle_fraction)
    if idle and current > policy.min_replicas and since >= policy.scale_down_cooldown_s:
        return current - 1
    return current
