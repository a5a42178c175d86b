"""`oikyo worker`: run queued training jobs in this process (or on a Ray cluster) until stopped.

Adapts :class:`oikyo.jobs.worker.Worker`. Several workers may run at once, on one machine or many
sharing a database; each run is held by one worker at a time through a lease. ``--executor ray
--address HOST:PORT`` trains each claimed run as a task on a Ray cluster
(:mod:`oikyo.jobs.ray_executor`; docs/scale.md, "A Ray cluster").
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
    executor: str = typer.Option("local", "--executor", help="Where claimed runs train: 'local' (this process) or 'ray' (a task on the Ray cluster at --address; needs Ray, the 'ray' extra of oikyo)."),
    address: Optional[str] = typer.Option(None, "--address", help="The Ray cluster's address, HOST:PORT of `ray start --head --port PORT` (with --executor ray; default $RAY_ADDRESS)."),
) -> None:
    """Train queued runs one at a time until stopped (Ctrl-C: the current run checkpoints and is re-queued)."""
    import logging

    from oikyo.jobs.worker import Worker, install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if executor not in ("local", "ray"):
        err.print(f"[bold red]error:[/] unknown executor {executor!r}; choose 'local' or 'ray'")
        raise typer.Exit(2)
    run_on = None
    if executor == "ray":
        import os

        from oikyo.errors import OikyoError
        from oikyo.jobs.ray_executor import RayExecutor

        address = address or os.environ.get("RAY_ADDRESS")
        if not address:
            err.print("[bold red]error:[/] --executor ray needs --address HOST:PORT (or $RAY_ADDRESS)")
            raise typer.Exit(2)
        try:
            run_on = RayExecutor(address)
        except (OikyoError, ConnectionError) as error:
            from rich.markup import escape

            err.print(f"[bold red]error:[/] {escape(str(error))}")
            raise typer.Exit(2)
    elif address:
        err.print("[bold red]error:[/] --address goes with --executor ray")
        raise typer.Exit(2)
    try:
        job_worker = Worker(lease_s=lease, heartbeat_s=heartbeat, poll_s=poll, idle_exit_s=idle_exit, executor=run_on)
    except ValueError as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2)
    install_signal_handlers(job_worker)
    count = job_worker.run(once=once)
    err.print(f"Worker {job_worker.owner} stopped after {count} run(s).")
