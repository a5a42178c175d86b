"""`oikyo keys ...`: API keys for deployments (create shows the secret once; only its hash is stored)."""

from __future__ import annotations

from typing import Optional

import typer

from oikyo.cli.console import err, out
from oikyo.cli.train import user_errors

app = typer.Typer(help="API keys for the serving endpoints: create, list, revoke.", no_args_is_help=True)


@app.command("create")
def create(name: Optional[str] = typer.Option(None, "--name", "-n", help="A label to recognise the key by."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the secret (for scripts).")) -> None:
    """Create a key and print its secret: it is shown now and never again (the store keeps a hash)."""
    from oikyo.serve.gateway import keys

    record, secret = keys.create(name)
    if quiet:
        typer.echo(secret)
        return
    out.print(f"Created key [bold]{record.id}[/]{f' ({name})' if name else ''}. Its secret, shown only now:")
    typer.echo(secret)
    err.print("Send it as 'Authorization: Bearer <secret>' (the openai client's api_key).")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Keys (never their secrets, which are not stored)."""
    from rich.table import Table

    from oikyo.serve.gateway import keys

    found = [keys.describe(k) for k in keys.list_keys()]
    if as_json:
        out.print_json(data=found)
        return
    if not found:
        out.print("No keys yet. Create one with `oikyo keys create --name my-app`.")
        return
    table = Table("id", "name", "starts with", "created", "last used", "state")
    for k in found:
        state = "[green]active[/]" if k["active"] else f"[red]revoked[/] {k['revoked_at'][:19]}"
        table.add_row(k["id"], k["name"] or "-", k["prefix"] + "...", k["created_at"][:19],
                      (k["last_used_at"] or "-")[:19], state)
    out.print(table)


@app.command("revoke")
def revoke(ref: str = typer.Argument(..., help="Key id, name, or the first characters shown by `oikyo keys list`.")) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from oikyo.serve.gateway import keys

    with user_errors():
        key = keys.revoke(ref)
    out.print(f"Revoked key [bold]{key.id}[/]{f' ({key.name})' if key.name else ''}")
