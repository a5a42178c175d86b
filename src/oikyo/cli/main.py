"""The `oikyo` command line: one Typer app, one module per command group.

Command modules import heavy libraries (torch, transformers, pyarrow) inside the commands that
need them, so `oikyo --help` answers at once. User errors (:class:`oikyo.errors.OikyoError`) are
printed as a plain message with exit code 2, never as a traceback; so is a full or read-only disk
(:func:`oikyo.store.disk.describe`), which the writers leave with their earlier state intact.
"""

from __future__ import annotations

import sys

import typer

from oikyo import __version__
from oikyo.cli import data as data_cli
from oikyo.cli import deploy as deploy_cli
from oikyo.cli import evaluate as evaluate_cli
from oikyo.cli import keys as keys_cli
from oikyo.cli import loop as loop_cli
from oikyo.cli import models as models_cli
from oikyo.cli import quickstart as quickstart_cli
from oikyo.cli import runs as runs_cli
from oikyo.cli import train as train_cli
from oikyo.cli import tune as tune_cli
from oikyo.cli import ui as ui_cli
from oikyo.cli import worker as worker_cli
from oikyo.cli import workspace as workspace_cli

app = typer.Typer(
    name="oikyo",
    help="Fine-tune language models: from raw data to a deployed, monitored model, offline on a laptop or on a GPU cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(models_cli.app, name="models")
app.command("quickstart")(quickstart_cli.quickstart)
app.command("train")(train_cli.train)
app.add_typer(runs_cli.app, name="runs")
app.add_typer(tune_cli.app, name="tune")
app.command("worker")(worker_cli.worker)
app.command("deploy")(deploy_cli.deploy)
app.add_typer(deploy_cli.app, name="deployments")
app.add_typer(keys_cli.app, name="keys")
app.command("eval")(evaluate_cli.eval_)
app.command("compare")(evaluate_cli.compare_)
app.add_typer(evaluate_cli.evals_app, name="evals")
app.add_typer(loop_cli.app, name="loop")
app.command("ui")(ui_cli.ui)
app.add_typer(workspace_cli.app, name="workspace")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oikyo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Workspace: $OIKYO_HOME (default ~/.oikyo); database: $OIKYO_DATABASE_URL (default SQLite in the workspace)."""


def main() -> None:
    import gc

    from oikyo.errors import OikyoError

    try:
        app()
    except OikyoError as error:
        from oikyo.cli.console import err

        err.print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        from oikyo.store import disk

        message = disk.describe(error)
        if message is None:
            raise
        from oikyo.cli.console import err

        err.print(f"[bold red]error:[/] {message}", highlight=False)
        sys.exit(2)
    finally:
        # Leaving: skip the interpreter's final garbage collection over everything torch and
        # transformers made (seconds on a busy machine, for memory the process gives back anyway).
        gc.freeze()


if __name__ == "__main__":
    main()
