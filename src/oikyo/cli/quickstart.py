"""`oikyo quickstart`: the whole loop on the bundled model and sample data, step by step."""

from __future__ import annotations

import typer

from oikyo.cli.console import out


def quickstart(
    tune: bool = typer.Option(False, "--tune", help="Tune instead of using the fixed recipe: a small study "
                              "(json_field_accuracy and forgetting on the validation split, see docs/tuning.md), "
                              "then the chosen trial trained and evaluated once on the test split. Takes longer."),
    trials: int = typer.Option(6, "--trials", min=2, max=50, help="Trials of the --tune study."),
) -> None:
    """Run the platform's loop offline on the bundled model and sample dataset, saying what each step does.

    Steps: prepare the bundled model; import and validate the sample data; report its quality; split
    it; fine-tune with LoRA as a background job; evaluate against the base model; deploy the result
    behind an OpenAI-compatible API and ask it one question.
    """
    import time

    from oikyo import workspace
    from oikyo.quickstart import run_quickstart

    start = time.perf_counter()
    out.print(f"[bold]oikyo quickstart[/] (workspace {workspace.home()})")
    made = run_quickstart(lambda message: out.print(message), out=out, tune_trials=trials if tune else None)
    out.print(f"[bold green]Done[/] in {time.perf_counter() - start:.0f} s. Next: `oikyo data list`, "
              f"`oikyo runs list`, `oikyo models version {made['model_version']}`, `oikyo deploy {made['model_version']}`.")
