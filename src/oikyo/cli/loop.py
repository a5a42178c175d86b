"""`oikyo loop`: continuous training of a deployment: apply a policy, watch its cycles, act by hand.

Adapts :mod:`oikyo.loop` (policy, records, controller); no loop logic lives here.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import out
from oikyo.cli.train import user_errors

app = typer.Typer(help="Continuous training: traffic and feedback become data, triggers retrain, a gate and a "
                       "canary decide, rollback on quality (see docs/loop.md).", no_args_is_help=True)

STATE_STYLE = {"promoted": "green", "rolled_back": "yellow", "gate_failed": "yellow", "skipped": "dim",
               "failed": "red", "cancelled": "magenta", "overridden": "magenta", "canary": "cyan"}


def _dump(value) -> None:
    out.print_json(json.dumps(value, default=str))


@app.command("apply")
def apply(policy_file: Path = typer.Argument(..., help="The policy YAML (docs/loop.md, Policy reference)."),
          as_json: bool = typer.Option(False, "--json", help="Print the applied policy as JSON.")) -> None:
    """Apply a continuous-training policy to its deployment (replaces the deployment's earlier one)."""
    from oikyo.loop import policy as policy_mod, records

    with user_errors():
        policy, text = policy_mod.load(policy_file)
        applied = records.apply(policy, text)
    if as_json:
        _dump(applied)
        return
    out.print(f"[green]applied[/green] the loop policy of {policy.deployment}. A controller acts on it: "
              "`oikyo loop run`, or the platform server (`oikyo ui`) runs one.")


@app.command("status")
def status(deployment: Optional[str] = typer.Argument(None, help="A deployment (default: every one with a policy)."),
           as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The loop's policies, the cycle in progress and the last cycles."""
    from oikyo.loop import records

    with user_errors():
        chosen = [records.get_record(deployment)] if deployment else records.policies()
        report = [{**records.describe_policy(r), "cycles": [records.describe_cycle(c)
                                                            for c in records.cycles(r.deployment, limit=5)]}
                  for r in chosen]
    if as_json:
        _dump(report)
        return
    if not report:
        out.print("no loop policies yet: `oikyo loop apply POLICY.yaml` sets one")
        return
    for entry in report:
        state = "paused" if entry["paused"] else ("disabled" if not entry["policy"].get("enabled", True) else "active")
        controller = f", controller {entry['controller']}" if entry["controller"] else ", no controller yet"
        out.print(f"[bold]{entry['deployment']}[/bold]: {state}{controller}")
        for cycle in entry["cycles"]:
            style = STATE_STYLE.get(cycle["state"], "cyan")
            out.print(f"  {cycle['id']}  [{style}]{cycle['state']:<12}[/{style}] {cycle['trigger']:<12} "
                      f"champion {cycle['champion']}  challenger {cycle['challenger'] or '-'}  {cycle['created_at']}")
        if not entry["cycles"]:
            out.print("  no cycles yet")


@app.command("history")
def history(deployment: str = typer.Argument(..., help="Deployment name."),
            limit: int = typer.Option(50, "--limit", "-n", min=1, help="How many decisions, newest first."),
            as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every decision the loop took for a deployment, with its reason."""
    from oikyo.loop import records

    with user_errors():
        records.get_record(deployment)
        decisions = [records.describe_decision(d) for d in records.history(deployment, limit=limit)]
    if as_json:
        _dump(decisions)
        return
    for d in decisions:
        out.print(f"{d['time']}  {d['cycle_id'] or '-':<11}  [bold]{d['action']:<15}[/bold] {d['reason']}")
    if not decisions:
        out.print("no decisions yet")


@app.command("run")
def run(poll: float = typer.Option(2.0, "--poll", min=0.1, help="Seconds between looks at the policies "
                                   "(1 s while a canary runs)."),
        once: bool = typer.Option(False, "--once", help="Take one step for every policy and exit.")) -> None:
    """Run the loop controller in the foreground (Ctrl-C stops it; a restarted one picks up where it was)."""
    from oikyo.loop.controller import Controller

    controller = Controller(poll_s=poll, log=lambda message: out.print(message, highlight=False))
    if once:
        with user_errors():
            controller.tick()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        controller.run(stop)
    except KeyboardInterrupt:
        stop.set()


@app.command("trigger")
def trigger(deployment: str = typer.Argument(..., help="Deployment name."),
            reason: str = typer.Option("started by hand", "--reason", help="Recorded with the cycle.")) -> None:
    """Start a cycle now, whatever the triggers and the cooldown say."""
    from oikyo.loop import controller

    with user_errors():
        cycle = controller.trigger_now(deployment, reason)
    out.print(f"cycle {cycle.id} started for {deployment} (champion {cycle.champion})")


@app.command("pause")
def pause(deployment: str = typer.Argument(..., help="Deployment name.")) -> None:
    """Stop the loop deciding anything for a deployment (a running canary keeps its split)."""
    from oikyo.loop import records

    with user_errors():
        records.set_paused(deployment, True)
    out.print(f"the loop of {deployment} is paused: `oikyo loop resume {deployment}` resumes it")


@app.command("resume")
def resume(deployment: str = typer.Argument(..., help="Deployment name.")) -> None:
    """Let the loop act on a paused deployment again."""
    from oikyo.loop import records

    with user_errors():
        records.set_paused(deployment, False)
    out.print(f"the loop of {deployment} is active")


@app.command("cancel")
def cancel(deployment: str = typer.Argument(..., help="Deployment name.")) -> None:
    """End the cycle in progress: its training run is cancelled, a canary gives all traffic back to the champion."""
    from oikyo.loop import controller

    with user_errors():
        cycle = controller.cancel(deployment)
    out.print(f"cycle {cycle.id} cancelled")
