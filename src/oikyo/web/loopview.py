"""What the loop page (``/deployments/{name}/loop``) shows, read from :mod:`oikyo.loop.records`.

:func:`loop_view` gathers a deployment's policy, its cycles and its decisions into plain dicts the
template draws: each cycle with the records it links to (dataset version, and the requests it was
built from when it came from traffic; training run; evaluation jobs; model versions) and its
figures (the gate's, the canary's). No decision is taken here: the gate's figures are the ones the
controller recorded, and the canary's are its recorded verdict (or, for a canary still running,
:func:`oikyo.loop.canary.judge` on the outcomes so far, the very check the controller runs).

Usage::

    view = loop_view("support-bot")     # {"record", "policy", "open_cycle", "cycles", "decisions"}
"""

from __future__ import annotations

from oikyo.errors import OikyoError

CYCLES_SHOWN = 50
DECISIONS_SHOWN = 100
VERDICTS = ("promote", "rollback")
CANARY_FIGURES = ("challenger_requests", "challenger_bad", "champion_requests", "champion_bad",
                  "likelihood_ratio", "threshold")


def _dataset(version_id: str | None, cache: dict) -> dict | None:
    """A dataset version's name and, when it was built from traffic, the deployment and request count."""
    from oikyo.data import versions

    if not version_id:
        return None
    if version_id not in cache:
        entry = {"id": version_id, "name": None, "traffic": None}
        try:
            version = versions.resolve(version_id)
        except OikyoError:
            version = None
        if version is not None:
            lineage = version.lineage or {}
            entry["name"] = version.name
            if lineage.get("operation") == "from_traffic":
                entry["traffic"] = {"deployment": lineage.get("deployment"),
                                    "requests": len(lineage.get("request_ids") or [])}
        cache[version_id] = entry
    return cache[version_id]


def _canary_figures(cycle, policy, verdicts: dict) -> dict | None:
    """The canary's counts and likelihood ratio: recorded with the cycle or its verdict, or live."""
    from oikyo.loop import canary, controller, records

    recorded = (cycle.details or {}).get("canary") or verdicts.get(cycle.id)
    if recorded:
        return {**{k: recorded.get(k) for k in CANARY_FIGURES}, "live": False}
    if cycle.state != "canary" or policy is None or cycle.canary_started_at is None:
        return None
    started = records.aware(cycle.canary_started_at)
    verdict = canary.judge(controller.canary_outcomes(policy, cycle), share=policy.canary.share,
                           alpha=policy.rollback.alpha, min_requests=policy.canary.min_requests,
                           margin=policy.rollback.margin)
    return {**{k: getattr(verdict, k) for k in CANARY_FIGURES}, "live": True, "started_at": started}


def _cycle_row(cycle, policy, verdicts: dict, outcomes: dict, datasets: dict) -> dict:
    from oikyo.loop import records

    gate = (cycle.details or {}).get("gate")
    both_versions = bool(cycle.challenger and cycle.challenger.startswith("mv-") and cycle.champion.startswith("mv-"))
    return {**records.describe_cycle(cycle), "open": cycle.state in records.OPEN_STATES,
            "dataset": _dataset(cycle.dataset_version_id, datasets), "gate": gate,
            "canary": _canary_figures(cycle, policy, verdicts), "outcome": outcomes.get(cycle.id),
            "compare": f"/compare?a={cycle.challenger}&b={cycle.champion}" if both_versions else None}


def loop_view(deployment: str) -> dict:
    """The loop page's content for ``deployment`` (``record`` None when it has no policy)."""
    from oikyo.loop import records

    try:
        record = records.get_record(deployment)
    except OikyoError:
        return {"record": None, "policy": None, "open_cycle": None, "cycles": [], "decisions": []}
    try:
        policy = records.policy_of(record)
    except OikyoError:
        policy = None  # a stored policy that no longer validates: shown as stored, no live figures
    decisions = records.history(deployment, limit=10 * DECISIONS_SHOWN)
    verdicts, outcomes = {}, {}
    for decision in reversed(decisions):  # oldest first, so the newest of a cycle wins
        if decision.cycle_id is None:
            continue
        outcomes[decision.cycle_id] = {"action": decision.action, "reason": decision.reason}
        if decision.action in VERDICTS and decision.details:
            verdicts[decision.cycle_id] = decision.details
    datasets: dict = {}
    cycles = [_cycle_row(c, policy, verdicts, outcomes, datasets) for c in records.cycles(deployment, CYCLES_SHOWN)]
    return {"record": records.describe_policy(record), "policy": record.policy or {},
            "open_cycle": next((c for c in cycles if c["open"]), None), "cycles": cycles,
            "decisions": [records.describe_decision(d) for d in decisions[:DECISIONS_SHOWN]]}
