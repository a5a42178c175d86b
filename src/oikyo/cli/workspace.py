"""`oikyo workspace ...`: back the workspace up, restore it, check blobs against records (see docs/operations.md)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from oikyo.cli.console import err, out
from oikyo.cli.train import user_errors

app = typer.Typer(help="Back up, restore and check the workspace (database, artifacts, runs, models).",
                  no_args_is_help=True)

EXIT_PROBLEMS = 1


@contextmanager
def _progress(label: str) -> Iterator:
    """A Rich progress bar in bytes on stderr; yields the ``progress(done, total)`` callback."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@app.command("backup")
def backup(dest: Path = typer.Argument(..., help="A new folder to write the backup into (it must not exist).")) -> None:
    """Back the workspace up while workers and servers keep running.

    Copies the database as one consistent snapshot (SQLite's online backup API, or pg_dump for PostgreSQL), then artifacts/, runs/ and models/, each blob checked against its sha256 as it is copied, with a backup.json manifest of sizes, hashes and the schema revision.

    Left out, as they are rebuilt on use: cache/, tmp/ and kernels/. The folder appears only once complete. Exits 1 when corrupted blobs were found (they are left out and listed).
    """
    from oikyo.store import backup as store_backup

    with user_errors(), _progress("backing up") as progress:
        manifest = store_backup.backup(dest, progress=progress)
    files = manifest["files"].values()
    size = sum(entry.get("size", 0) for entry in files)
    database = manifest["database"]
    out.print(f"Backed up to [bold]{dest}[/]: {database['dialect']} database at revision {database['revision']} "
              f"({sum(n for name, n in database['tables'].items() if name != 'alembic_version')} rows), {len(manifest['files'])} files, {size / 1e6:.1f} MB")
    if manifest["corrupted"]:
        err.print(f"[bold red]{len(manifest['corrupted'])} corrupted blob(s) left out:[/] " + ", ".join(manifest["corrupted"]))
        err.print("Run `oikyo workspace check` to see which records they belong to.")
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("restore")
def restore(src: Path = typer.Argument(..., help="A backup folder made by `oikyo workspace backup`."),
            into: Optional[Path] = typer.Option(None, "--into", help="The workspace folder to restore into "
                                                "(default: $OIKYO_HOME). The database is $OIKYO_DATABASE_URL when set."),
            force: bool = typer.Option(False, "--force", help="Replace a workspace or database that is not empty "
                                       "(PostgreSQL: the dump's objects are dropped first).")) -> None:
    """Restore a backup: check every file's sha256 first, then load the database, the files, and migrate.

    Stop workers and servers that use the target workspace first.
    """
    from oikyo.store import backup as store_backup

    with user_errors(), _progress("restoring") as progress:
        summary = store_backup.restore(src, into=into, force=force, progress=progress)
    out.print(f"Restored {summary['files']} files ({summary['bytes'] / 1e6:.1f} MB) and the {summary['database']} "
              f"database into [bold]{summary['home']}[/]; schema {summary['revision_backed_up']} -> {summary['revision_now']}"
              + (f"; {summary['paths_rewritten']} recorded paths moved to the new workspace" if summary["paths_rewritten"] else ""))


@app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
          fix_orphans: bool = typer.Option(False, "--fix-orphans", help="Delete orphaned blobs last written over an "
                                           "hour ago (younger ones may be writes in progress)."),
          ) -> None:
    """Find corrupted blobs, orphaned blobs and records whose files are gone. Exits 1 when any is found.

    Reads only, unless --fix-orphans is given.
    """
    from oikyo.store import integrity

    with user_errors(), _progress("hashing blobs") as progress:
        problems = integrity.check(progress=progress)
    removed = integrity.remove_orphans(problems) if fix_orphans else []
    problems = [p for p in problems if not (p.kind == "orphan" and p.subject in removed)]
    if as_json:
        out.print_json(data={"problems": [p.to_dict() for p in problems], "removed_orphans": removed})
    elif problems:
        from rich.table import Table

        table = Table("problem", "subject", "detail")
        for p in problems:
            table.add_row(p.kind, p.subject, p.detail)
        out.print(table)
    else:
        out.print("No problems found: every blob matches its sha256 and every record's files are there.")
    if removed and not as_json:
        out.print(f"Removed {len(removed)} orphaned blob(s).")
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
