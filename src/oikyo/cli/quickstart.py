"""`oikyo quickstart`: the whole loop on the bundled model and sample data, step by step."""

from __future__ import annotations

from oikyo.cli.console import out


def quickstart() -> None:
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
    made = run_quickstart(lambda message: out.print(message), out=out)
    out.print(f"[bold green]Done[/] in {time.perf_counter() - start:.0f} s. Next: `oikyo data list`, "
              f"`oikyo runs list`, `oikyo models version {made['model_version']}`, `oikyo deploy {made['model_version']}`.")
