"""`oikyo worker`: run queued training jobs in this process until stopped.

Adapts :class:`oikyo.jobs.worker.Worker`. Several workers may run at once, on one machine or many
sharing a database; each run is held by one worker at a time through a lease.
"""

from __future__ import annotations

from typing import Optional

import typer

from oikyo.cli.console import err


def worker(
    once: bool = typer.Option(False, "--once", help="Process the runs waiting in the queue, then exit."),
    lease: Optional[float] = typer.Option(None, "--lease", help="Seconds a claimed run stays ours without a heartbeat (default 60, or $OIKYO_WORKER_LEASE_S)."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help="Seconds between heartbeats (default 5, or $OIKYO_WORKER_HEARTBEAT_S); at most half the lease."),
    poll: Optional[float] = typer.Option(None, "--poll", help="Seconds between looks at an empty queue (default 1)."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Exit after this many seconds with nothing to do (default: never)."),
) -> None:
    """Train queued runs one at a time until stopped (Ctrl-C: the current run checkpoints and is re-queued)."""
    import logging

    from oikyo.jobs.worker import Worker, install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        job_worker = Worker(lease_s=lease, heartbeat_s=heartbeat, poll_s=poll, idle_exit_s=idle_exit)
    except ValueError as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2)
    install_signal_handlers(job_worker)
    count = job_worker.run(once=once)
    err.print(f"Worker {job_worker.owner} stopped after {count} run(s).")
