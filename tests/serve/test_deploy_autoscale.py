"""The ``--replicas auto`` policy: scale up on queue depth or latency, down when idle, with cooldowns and bounds."""

from __future__ import annotations

import pytest

from oikyo.serve.gateway.autoscale import AutoscalePolicy, Observation, decide


def _obs(replicas=1, queue=0.0, in_flight=0, p95=None, capacity=16):
    return Observation(replicas=replicas, queue_depth=queue, in_flight=in_flight, p95_latency_s=p95,
                       capacity_per_replica=capacity)


def test_scales_up_on_queue_depth_after_the_cooldown():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=3, target_queue_per_replica=2, scale_up_cooldown_s=30)
    assert decide(policy, _obs(replicas=1, queue=2, in_flight=16), now=100, last_change_at=0) == 1  # at the target
    assert decide(policy, _obs(replicas=1, queue=3, in_flight=16), now=100, last_change_at=0) == 2
    assert decide(policy, _obs(replicas=1, queue=3, in_flight=16), now=100, last_change_at=80) == 1  # cooling down
    assert decide(policy, _obs(replicas=3, queue=50, in_flight=48), now=100, last_change_at=0) == 3  # at the max


def test_scales_up_on_latency_when_a_target_is_set():
    policy = AutoscalePolicy(max_replicas=2, max_p95_latency_s=5.0)
    assert decide(policy, _obs(replicas=1, p95=6.0, in_flight=4), now=100, last_change_at=0) == 2
    assert decide(policy, _obs(replicas=1, p95=4.0, in_flight=4), now=100, last_change_at=0) == 1
    assert decide(AutoscalePolicy(max_replicas=2), _obs(replicas=1, p95=60.0), now=100, last_change_at=0) == 1


def test_scales_down_only_when_idle_and_after_the_longer_cooldown():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=3, scale_down_cooldown_s=120, idle_fraction=0.25,
                             max_p95_latency_s=4.0)
    idle = _obs(replicas=2, queue=0, in_flight=3, p95=1.0)  # 3 <= (2-1) * 16 * 0.25
    assert decide(policy, idle, now=200, last_change_at=0) == 1
    assert decide(policy, idle, now=100, last_change_at=0) == 2  # too soon after the last change
    assert decide(policy, _obs(replicas=2, queue=0, in_flight=5, p95=1.0), now=200, last_change_at=0) == 2
    assert decide(policy, _obs(replicas=2, queue=1, in_flight=0, p95=1.0), now=200, last_change_at=0) == 2
    assert decide(policy, _obs(replicas=2, queue=0, in_flight=0, p95=3.0), now=200, last_change_at=0) == 2  # p95 > 2
    assert decide(policy, _obs(replicas=1, queue=0, in_flight=0), now=999, last_change_at=0) == 1  # the min


def test_out_of_bounds_counts_are_corrected_at_once():
    policy = AutoscalePolicy(min_replicas=2, max_replicas=3)
    assert decide(policy, _obs(replicas=0), now=0, last_change_at=0) == 2
    assert decide(policy, _obs(replicas=5), now=0, last_change_at=0) == 3
    with pytest.raises(ValueError):
        AutoscalePolicy(min_replicas=3, max_replicas=2)
