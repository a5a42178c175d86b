"""Records for the lineage tests (oikyo.loop.trace, its route and its page), written straight to the store.

Deployment "bot" served base model "tiny-base", then adapter ``PARENT`` (trained on an imported
dataset, ``IMPORTED``), then adapter ``CHILD``: ``PARENT`` trained further (``start: continue``) by
loop cycle ``CYCLE`` on ``TRAFFIC``, a dataset version made from 12 of ``PARENT``'s rated answers.
``ANSWER`` is an answer of ``CHILD``, rated up and corrected.

    ids = seed()     # {"deployment", "answer", "child", "parent", "base", "traffic", "imported", ...}
"""

from __future__ import annotations

from datetime import timedelta

BASE, PARENT, CHILD = "tiny-base", "mv-parent01", "mv-child001"
IMPORTED, TRAFFIC = "aaaa00000001", "bbbb00000002"
PARENT_RUN, CHILD_RUN, CYCLE = "run-parent01", "run-child001", "lc-trace001"
ANSWER = "chatcmpl-answer0001"
TRAFFIC_IDS = [f"chatcmpl-old{i:04d}" for i in range(12)]


def seed() -> dict:
    from oikyo.store import db
    from oikyo.store.models import (DatasetVersion, Deployment, Feedback, LoopCycle, ModelVersion, Run,
                                    ServedRequest, utcnow)

    now = utcnow()
    with db.session() as s:
        s.add(Deployment(name="bot", model=CHILD, variants=[{"label": CHILD, "model": CHILD, "weight": 100}],
                         host="127.0.0.1", port=8999, state="running"))
        s.add(DatasetVersion(id=IMPORTED, content_hash=IMPORTED + "0" * 52, name="support-chats", kind="conversations",
                             format="openai", rows=500, artifact="sha256/none",
                             lineage={"source": {"path": "/data/chats.jsonl"}}, created_at=now - timedelta(days=10)))
        s.add(DatasetVersion(id=TRAFFIC, content_hash=TRAFFIC + "0" * 52, name="bot-traffic", kind="conversations",
                             format="openai", rows=12, artifact="sha256/none", created_at=now - timedelta(days=1),
                             lineage={"operation": "from_traffic", "deployment": "bot", "model_versions": [PARENT],
                                      "time_range": {"since": None, "until": (now - timedelta(days=1)).isoformat(),
                                                     "first_request": (now - timedelta(days=5)).isoformat(),
                                                     "last_request": (now - timedelta(days=2)).isoformat()},
                                      "request_ids": TRAFFIC_IDS, "feedback_ids": [1, 2, 3]}))
        for run_id, dataset, model in ((PARENT_RUN, IMPORTED, {"name": BASE}),
                                       (CHILD_RUN, TRAFFIC, {"name": PARENT, "start": "continue"})):
            s.add(Run(id=run_id, name=run_id.removeprefix("run-"), state="succeeded", kind="train",
                      config={"model": model}, config_hash="c" * 64, dataset_version_id=dataset, base_model=BASE,
                      seed=7, run_dir=f"/runs/{run_id}", created_at=now - timedelta(days=3)))
        s.flush()  # no relationships declared: rows a foreign key names go in first
        s.add(ModelVersion(id=PARENT, run_id=PARENT_RUN, base_model=BASE, kind="adapter", path="/models/parent",
                           lineage={"dataset_version": IMPORTED, "base_model": BASE}, created_at=now - timedelta(days=9)))
        s.add(ModelVersion(id=CHILD, run_id=CHILD_RUN, base_model=BASE, kind="adapter", path="/models/child",
                           lineage={"dataset_version": TRAFFIC, "base_model": BASE, "parent_model_version": PARENT,
                                    "operation": "continue"}, created_at=now - timedelta(hours=20)))
        s.add(LoopCycle(id=CYCLE, deployment="bot", state="promoted", trigger="new_examples",
                        reason="12 usable examples", champion=PARENT, challenger=CHILD, dataset_version_id=TRAFFIC,
                        run_id=CHILD_RUN, details={"gate": {"passed": True, "metric": "exact_match", "challenger": 0.7,
                                                            "champion": 0.6, "gain": 0.1, "gain_low": 0.02}},
                        created_at=now - timedelta(days=1), updated_at=now - timedelta(hours=18)))
        s.add(ServedRequest(id=ANSWER, deployment="bot", variant=CHILD, model=CHILD, endpoint="chat", status=200,
                            latency_s=0.25, prompt_tokens=12, completion_tokens=30, created_at=now - timedelta(hours=1)))
        s.add(ServedRequest(id="chatcmpl-base0001", deployment="bot", variant=BASE, model=BASE, endpoint="chat",
                            status=500, error="engine down", latency_s=0.01, created_at=now - timedelta(days=20)))
        s.add(Feedback(deployment="bot", response_id=ANSWER, rating=1, comment="close"))
        s.add(Feedback(deployment="bot", response_id=ANSWER, correction="the better answer"))
    return {"deployment": "bot", "answer": ANSWER, "child": CHILD, "parent": PARENT, "base": BASE,
            "traffic": TRAFFIC, "imported": IMPORTED, "child_run": CHILD_RUN, "parent_run": PARENT_RUN,
            "cycle": CYCLE, "traffic_ids": TRAFFIC_IDS}
