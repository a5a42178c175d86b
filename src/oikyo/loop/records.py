"""The loop's records: applied policies, cycles and decisions (tables of migration 0011_loop).

Usage::

    records.apply(policy, source_text)        # `oikyo loop apply`: replaces the deployment's policy
    records.set_paused("support-bot", True)   # `oikyo loop pause`: the controller leaves it alone
    records.decide("support-bot", cycle.id, "rollback", "the challenger is worse: ...", key="rollback")
    records.history("support-bot")            # decisions, newest first
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from oikyo.errors import OikyoError
from oikyo.loop.policy import Policy, parse
from oikyo.processes import pid_alive
from oikyo.store import db
from oikyo.store.models import LoopCycle, LoopDecision, LoopPolicy, utcnow

OPEN_STATES = ("collecting", "training", "evaluating", "canary_prepare", "canary")
ENDED_STATES = ("promoted", "rolled_back", "gate_failed", "skipped", "failed", "cancelled", "overridden")


def aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: read them as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def new_cycle_id() -> str:
    return f"lc-{secrets.token_hex(4)}"


def apply(policy: Policy, source: str | None = None) -> dict:
    """Store ``policy`` as its deployment's policy (replacing an earlier one; paused stays as it was)."""
    from oikyo.serve.gateway import deployments

    deployments.get(policy.deployment)  # the deployment must exist (OikyoError naming it otherwise)
    with db.session() as s:
        record = s.get(LoopPolicy, policy.deployment)
        if record is None:
            record = LoopPolicy(deployment=policy.deployment, paused=False)
            s.add(record)
        record.policy, record.source, record.applied_at = policy.to_dict(), source, utcnow()
    decide(policy.deployment, None, "policy_applied", "policy applied" + ("" if policy.enabled else " (disabled)"),
           details={"policy": policy.to_dict()})
    return describe_policy(get_record(policy.deployment))


def get_record(deployment: str) -> LoopPolicy:
    with db.session() as s:
        record = s.get(LoopPolicy, deployment)
        if record is None:
            raise OikyoError(f"deployment {deployment!r} has no loop policy; `oikyo loop apply POLICY.yaml` sets one")
        return record


def policy_of(record: LoopPolicy) -> Policy:
    return parse(record.policy, source=f"the stored policy of {record.deployment}")


def policies() -> list[LoopPolicy]:
    with db.session() as s:
        return list(s.scalars(select(LoopPolicy).order_by(LoopPolicy.deployment)))


def set_paused(deployment: str, paused: bool) -> dict:
    with db.session() as s:
        record = s.get(LoopPolicy, deployment)
        if record is None:
            raise OikyoError(f"deployment {deployment!r} has no loop policy; `oikyo loop apply POLICY.yaml` sets one")
        record.paused = paused
    decide(deployment, None, "paused" if paused else "resumed", "by the user")
    return describe_policy(get_record(deployment))


def owner_name() -> str:
    """This process as a controller: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(owner: str | None) -> bool:
    """Whether ``owner`` is a controller process of this machine that no longer runs (killed, crashed)."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: only its lease's expiry frees it
    return not pid_alive(int(pid))


def claim(deployment: str, owner: str, lease_s: float) -> bool:
    """Take (or renew) the right to act on ``deployment`` for ``lease_s``; False while another
    controller holds an unexpired lease. A controller of this machine that is gone (its process no
    longer runs) loses its lease at once, so a restarted controller picks up without waiting for the
    expiry. A conditional UPDATE, so two controllers never both win."""
    now = utcnow()
    with db.session() as s:
        record = s.get(LoopPolicy, deployment)
        holder = record.owner if record is not None else None
    free = (LoopPolicy.owner == owner) | (LoopPolicy.owner.is_(None)) | (LoopPolicy.lease_until < now)
    if holder and holder != owner and _gone(holder):
        free = free | (LoopPolicy.owner == holder)
    with db.session() as s:
        result = s.execute(update(LoopPolicy).where(LoopPolicy.deployment == deployment).where(free)
                           .values(owner=owner, lease_until=now + timedelta(seconds=lease_s), checked_at=now))
        return result.rowcount == 1


def release(deployment: str, owner: str) -> None:
    with db.session() as s:
        s.execute(update(LoopPolicy).where(LoopPolicy.deployment == deployment, LoopPolicy.owner == owner)
                  .values(owner=None, lease_until=None))


def _dedupe_key(cycle_id: str | None, key: str | None) -> str | None:
    return f"{cycle_id}:{key}" if key and cycle_id else None


def decide(deployment: str, cycle_id: str | None, action: str, reason: str, *, details: dict | None = None,
           key: str | None = None) -> bool:
    """Record a decision; with ``key``, at most once per cycle (False when it was already recorded)."""
    dedupe = _dedupe_key(cycle_id, key)
    try:
        with db.session() as s:
            s.add(LoopDecision(deployment=deployment, cycle_id=cycle_id, time=utcnow(), action=action,
                               reason=reason, details=details, dedupe_key=dedupe))
    except IntegrityError:
        return False
    return True


def decided(cycle_id: str, key: str) -> str | None:
    """The action of the cycle's decision recorded under ``key``, or None when there is none yet."""
    with db.session() as s:
        return s.scalar(select(LoopDecision.action).where(LoopDecision.dedupe_key == _dedupe_key(cycle_id, key)))


def open_cycle(deployment: str) -> LoopCycle | None:
    with db.session() as s:
        return s.scalar(select(LoopCycle).where(LoopCycle.deployment == deployment,
                                                LoopCycle.state.in_(OPEN_STATES))
                        .order_by(LoopCycle.created_at.desc()))


def last_cycle(deployment: str) -> LoopCycle | None:
    with db.session() as s:
        return s.scalar(select(LoopCycle).where(LoopCycle.deployment == deployment)
                        .order_by(LoopCycle.created_at.desc()))


def get_cycle(cycle_id: str) -> LoopCycle:
    with db.session() as s:
        cycle = s.get(LoopCycle, cycle_id)
        if cycle is None:
            raise OikyoError(f"no loop cycle {cycle_id!r}; `oikyo loop status` lists them")
        return cycle


def update_cycle(cycle_id: str, **fields) -> LoopCycle:
    with db.session() as s:
        cycle = s.get(LoopCycle, cycle_id)
        for key, value in fields.items():
            setattr(cycle, key, value)
        cycle.updated_at = utcnow()
        if fields.get("state") in ENDED_STATES and cycle.finished_at is None:
            cycle.finished_at = cycle.updated_at
        return cycle


def cycles(deployment: str, limit: int = 20) -> list[LoopCycle]:
    with db.session() as s:
        return list(s.scalars(select(LoopCycle).where(LoopCycle.deployment == deployment)
                              .order_by(LoopCycle.created_at.desc()).limit(limit)))


def history(deployment: str, limit: int = 100) -> list[LoopDecision]:
    with db.session() as s:
        return list(s.scalars(select(LoopDecision).where(LoopDecision.deployment == deployment)
                              .order_by(LoopDecision.time.desc(), LoopDecision.id.desc()).limit(limit)))


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment else None


def describe_policy(record: LoopPolicy) -> dict:
    return {"deployment": record.deployment, "paused": record.paused, "policy": record.policy,
            "applied_at": _iso(record.applied_at), "controller": record.owner,
            "lease_until": _iso(record.lease_until), "checked_at": _iso(record.checked_at)}


def describe_cycle(cycle: LoopCycle) -> dict:
    return {"id": cycle.id, "deployment": cycle.deployment, "state": cycle.state, "trigger": cycle.trigger,
            "reason": cycle.reason, "champion": cycle.champion, "challenger": cycle.challenger,
            "dataset_version_id": cycle.dataset_version_id, "run_id": cycle.run_id, "eval_jobs": cycle.eval_jobs,
            "details": cycle.details, "canary_started_at": _iso(cycle.canary_started_at),
            "created_at": _iso(cycle.created_at), "updated_at": _iso(cycle.updated_at),
            "finished_at": _iso(cycle.finished_at)}


def describe_decision(decision: LoopDecision) -> dict:
    return {"id": decision.id, "deployment": decision.deployment, "cycle_id": decision.cycle_id,
            "time": _iso(decision.time), "action": decision.action, "reason": decision.reason,
            "details": decision.details}
