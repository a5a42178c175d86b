"""The drift benchmark's traffic simulator (bench/bench_drift.py): where it sends, what it plants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_drift  # noqa: E402


def test_live_traffic_goes_only_to_this_machine():
    bench_drift.require_local("http://127.0.0.1:8000/v1")
    bench_drift.require_local("http://localhost:9/v1")
    for url in ("http://10.0.0.5:8000/v1", "https://api.openai.com/v1", "http://127.0.0.1.example.com/v1"):
        with pytest.raises(SystemExit, match="only to this machine"):
            bench_drift.require_local(url)


def test_topic_drift_switches_30_percent_to_a_held_out_category_after_the_change():
    items = bench_drift.ticket_items()
    stream = bench_drift.make_stream("topic", items, seed=3, stable=500, after=2000, stride=100, tokenizer=None)
    held = {it.input for it in items} - {it.input for it in stream.items[:stream.change]}
    categories = {it.label for it in items}
    gone = sorted(categories)[3 % len(categories)]
    assert 500 <= stream.change < 600 and len(stream.items) == stream.change + 2000
    assert all(it.label != gone for it in stream.items[:stream.change])  # stable: never the held-out topic
    share = sum(it.label == gone for it in stream.items[stream.change:]) / 2000
    assert 0.26 < share < 0.34
    assert held  # the stable phase does not replay every row
    assert {it.input for it in stream.reference} <= {it.input for it in items if it.label != gone}


def test_live_stream_switches_to_general_requests_in_its_second_part():
    stream = bench_drift.live_stream(requests=400, after=200, seed=0)
    tickets = {it.input for it in bench_drift.ticket_items()}
    assert stream.change == 200 and len(stream.items) == 400
    assert all(it.input in tickets for it in stream.items[:200])
    share = sum(it.input not in tickets for it in stream.items[200:]) / 200
    assert 0.2 < share < 0.4
