"""Records for the drift and quality views of the dashboard and the REST API (not a test module).

``deployment`` stores a stopped deployment; ``history`` stores drift checks as ``oikyo deployments
drift`` would have left them (three rounds, ten minutes apart, two detectors on one variant; the
newest round raises an ``input_oov`` alarm whose "what" and example hold markup that must show as
text); ``answers`` stores served requests with quality signals (one refusal in four, one rated
negatively).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from oikyo.monitor import quality
from oikyo.store import db
from oikyo.store.models import Deployment, DriftCheck, ServedRequest, utcnow

VARIANT = "mv-drift01"
MARKUP_WHAT = "13% of input words <b>unseen</b> in the reference"
MARKUP_INPUT = "<script>window.pwned = 1</script> supernova quasar meteor"
# (detector, statistic per round, oldest first); thresholds are 0.5 and 0.02: scores 0.2..3.2
ROUNDS = {"input_oov": [0.1, 0.2, 1.6], "input_embedding": [0.004, 0.006, 0.01]}
THRESHOLDS = {"input_oov": 0.5, "input_embedding": 0.02}


def deployment(name: str = "bot") -> None:
    with db.session() as s:
        s.add(Deployment(name=name, model=VARIANT, variants=[{"label": VARIANT, "model": VARIANT, "weight": 1}],
                         host="127.0.0.1", port=1, state="stopped"))


def history(name: str = "bot") -> list[DriftCheck]:
    now, rows = utcnow(), []
    for detector, statistics in ROUNDS.items():
        for i, statistic in enumerate(statistics):
            threshold = THRESHOLDS[detector]
            score = statistic / threshold
            newest = i == len(statistics) - 1
            what = MARKUP_WHAT if detector == "input_oov" and newest else f"{detector} round {i}"
            examples = [{"id": "chatcmpl-x1", "input": MARKUP_INPUT, "why": "77% unseen words: supernova, quasar"}]
            when = now - timedelta(minutes=10 * (len(statistics) - 1 - i))
            rows.append(DriftCheck(deployment=name, variant=VARIANT, detector=detector, reference="ds-ref@abc (train)",
                                   window_start=when - timedelta(minutes=5), window_end=when, requests=200,
                                   statistic=statistic, threshold=threshold, score=score, alarm=score > 1,
                                   details={"what": what, "examples": examples if score > 1 else []},
                                   created_at=when))
    with db.session() as s:
        s.add_all(rows)
    return rows


def answers(name: str = "bot") -> None:
    texts = ["I'm sorry, but I can't help with that.", "Paris is the capital of France.", "It is 4.", "Blue."]
    rows = []
    for i, text in enumerate(texts):
        signals = quality.check(text)
        if i == 1:
            signals.update(feedback=0.0, negative_feedback=True)
        rows.append(ServedRequest(id=f"chatcmpl-{secrets.token_hex(6)}", deployment=name, variant=VARIANT,
                                  model=VARIANT, endpoint="chat", status=200, latency_s=0.1, ttft_s=0.05,
                                  completion_tokens=5, quality=signals, created_at=utcnow() - timedelta(seconds=30)))
    with db.session() as s:
        s.add_all(rows)
