"""`oikyo models ...`: the base-model catalog (list, add, show with a fit/time estimate, remove)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, out

app = typer.Typer(help="Base models to fine-tune: the bundled offline default, local folders, GGUF files, Hub ids.",
                  no_args_is_help=True)


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB"


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the base models in the catalog (the bundled default first)."""
    from rich.table import Table

    from oikyo.models import catalog

    rows = catalog.list_models()
    if as_json:
        out.print_json(data=rows)
        return
    table = Table("name", "source", "ready", "remote code", "path")
    for row in rows:
        ready = "yes" if row["ready"] else ("converted on first use" if row["source"] == "bundled" else "missing")
        table.add_row(row["name"], row["source"], ready, "on" if row["trust_remote_code"] else "off", row["path"] or "-")
    out.print(table)


@app.command("add")
def add(
    source: str = typer.Argument(..., help="A local Hugging Face folder, a .gguf file, or a Hub id (owner/name, needs network)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Catalog name (default: from the source)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow this model's own Python code to run when loading (off by default)."),
) -> None:
    """Add a base model to the catalog. Weights must be safetensors (GGUF is converted once)."""
    from oikyo.models import catalog

    info = catalog.add_model(source, name=name, trust_remote_code=trust_remote_code, log=lambda m: err.print(m))
    out.print(f"Added [bold]{info['name']}[/]: {info.get('architecture')}, {info.get('parameters') or 0:,} parameters, "
              f"context {info.get('context_length')}")


@app.command("show")
def show(
    model: str = typer.Argument(..., help="Catalog name or a local model folder."),
    method: str = typer.Option("lora", "--method", help="For the estimate: lora, full or qlora."),
    batch_size: int = typer.Option(8, "--batch-size", help="For the estimate: sequences per step."),
    max_length: int = typer.Option(512, "--max-length", help="For the estimate: tokens per sequence."),
    tokens: int = typer.Option(1_000_000, "--tokens", help="For the time estimate: tokens to train on in all."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show parameters, context length, chat template and license, and whether a config fits here."""
    from oikyo.models import catalog
    from oikyo.models.estimate import estimate

    info = catalog.describe(model, log=lambda m: err.print(m))
    guess = estimate(info, method=method, batch_size=batch_size, max_length=max_length, tokens=tokens)
    if as_json:
        out.print_json(data={"model": info, "estimate": guess})
        return
    for key in ("name", "source", "path", "architecture", "parameters", "context_length", "vocab_size",
                "has_chat_template", "license", "trust_remote_code"):
        value = info.get(key)
        out.print(f"[bold]{key:>18}[/]  {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                  else f"[bold]{key:>18}[/]  {value}")
    mem = guess["memory_bytes"]
    fits = {True: "[green]fits[/]", False: "[red]does not fit[/]", None: "unknown"}[guess["fits"]]
    out.print(f"\nEstimate for {method}, batch {batch_size} x {max_length} tokens, {guess['dtype']} on {guess['device']}:")
    out.print(f"  memory {_gib(mem['total'])} (weights {_gib(mem['weights'])}, optimizer {_gib(mem['gradients_and_optimizer'])}, "
              f"activations {_gib(mem['activations'])}) of {_gib(guess['available_bytes'])}: {fits}")
    if "seconds" in guess:
        out.print(f"  about {guess['tokens_per_second']:,.0f} tokens/s: {tokens:,} tokens in ~{guess['seconds'] / 60:.0f} min "
                  f"(rough: {guess['assumed_utilisation']:.0%} of a measured {guess['peak_flops'] / 1e9:,.0f} GFLOP/s peak)")


@app.command("remove")
def remove(name: str = typer.Argument(..., help="Catalog name to forget (its files are left alone).")) -> None:
    """Remove a model from the catalog."""
    from oikyo.models import catalog

    catalog.remove_model(name)
    out.print(f"Removed {name} from the catalog")
