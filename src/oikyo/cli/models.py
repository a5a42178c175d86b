"""`oikyo models ...`: the base-model catalog (list, add, show with a fit/time estimate, remove) and model
versions (list, show, merge, export to GGUF / Ollama / Hugging Face, leaderboard)."""

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


@app.command("versions")
def versions(
    run: Optional[str] = typer.Option(None, "--run", help="Only versions made by this run."),
    base: Optional[str] = typer.Option(None, "--base", help="Only versions of this base model."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List fine-tuned model versions (adapters, full models, merged exports), newest first."""
    from rich.table import Table

    from oikyo.jobs import model_versions

    found = model_versions.list_versions(run_id=run, base_model=base)
    if as_json:
        out.print_json(data=[model_versions.describe(mv) for mv in found])
        return
    if not found:
        out.print("No model versions yet. Train one with `oikyo train --dataset D --model M`.")
        return
    table = Table("version", "kind", "base model", "run", "dataset", "created")
    for mv in found:
        dataset = (mv.lineage or {}).get("dataset_version") or "-"
        table.add_row(mv.id, mv.kind, mv.base_model, mv.run_id or "-", dataset, mv.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@app.command("version")
def version(
    ref: str = typer.Argument(..., help="Model version id (or a unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show one model version with its full lineage (base, dataset hash, config hash, code, seed, packages)."""
    from oikyo.jobs import model_versions

    info = model_versions.describe(model_versions.get(ref))
    if as_json:
        out.print_json(data=info)
        return
    for key in ("id", "kind", "base_model", "run_id", "path", "created_at"):
        out.print(f"[bold]{key:>11}[/]  {info[key]}")
    out.print("[bold]    lineage[/]")
    out.print_json(data=info["lineage"])


@app.command("merge")
def merge(
    ref: str = typer.Argument(..., help="Adapter model version to merge into its base model."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the merged model (default: in the workspace)."),
) -> None:
    """Merge a LoRA adapter into its base model: a Hugging Face folder plain transformers loads."""
    from oikyo.jobs import model_versions

    merged = model_versions.merge(ref, out_dir)
    out.print(f"Merged into model version [bold]{merged.id}[/] at {merged.path}")


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="Model version to export (id or a unique prefix)."),
    to: str = typer.Option("gguf", "--to", help="gguf (one file for llama.cpp), ollama (a GGUF file and a Modelfile) "
                           "or hf (a merged Hugging Face folder)."),
    quant: str = typer.Option("f16", "--quant", "-q", help="For gguf and ollama: f16, q8_0 or q4_k_m (also f32, bf16)."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write (a .gguf file or a folder; "
                                            "default: exports/ in the workspace)."),
    lora: bool = typer.Option(False, "--lora", help="With --to gguf, for an adapter version: the LoRA adapter alone, "
                              "as a GGUF adapter for llama.cpp's --lora (f32, f16, bf16 or q8_0)."),
    llamacpp_python: Optional[Path] = typer.Option(None, "--llamacpp-python", help="The Python of llama.cpp's "
                                                   "environment (default: OIKYO_LLAMACPP_PYTHON, else .venv-llamacpp, "
                                                   "made by scripts/install-llamacpp.sh)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export record as JSON."),
) -> None:
    """Export a model version as GGUF (llama.cpp's own converter and quantizer), for Ollama, or as a
    merged Hugging Face folder. An adapter is merged into its base first (unless --lora). The chat
    template travels in the GGUF (tokenizer.chat_template); each export is recorded in the version's
    lineage (`oikyo models version`)."""
    from oikyo.jobs import exports

    record = exports.export(ref, to=to, quant=quant, out=out_path, lora=lora, llamacpp_python=llamacpp_python,
                            log=lambda m: err.print(m))
    if as_json:
        out.print_json(data=record)
        return
    size = f", {record['bytes'] / 2**20:,.1f} MiB, sha256 {record['sha256'][:12]}" if "bytes" in record else ""
    out.print(f"Exported {ref} as {to}{' ' + record['quant'] if 'quant' in record else ''}: {record['path']}{size}")
    if to == "ollama":
        out.print(f"  ollama create NAME -f {record['modelfile']}")
    elif to == "gguf":
        flag = "--lora" if lora else "-m"
        out.print(f"  llama-cli {flag} {record['path']}")


@app.command("leaderboard")
def leaderboard(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset version (id, name or name@id; VERSION:split narrows the split)."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Metric to rank by (default: the primary one, e.g. json_field_accuracy or accuracy)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only evaluations on this split."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Rank model versions (and base / few-shot baselines) by their evaluations on a dataset."""
    from oikyo.cli.evaluate import print_leaderboard

    print_leaderboard(dataset, metric=metric, split=split, as_json=as_json)
