"""`oikyo deploy` and `oikyo deployments ...`: serve model versions behind an OpenAI-compatible endpoint.

Every command adapts one function of :mod:`oikyo.serve.gateway.deployments` (or :mod:`oikyo.serve.gateway.ab`,
:mod:`oikyo.serve.gateway.request_log`, :mod:`oikyo.loop.trace`); no serving logic lives here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, out
from oikyo.cli.train import user_errors

app = typer.Typer(help="Deployments: list, show, logs, start, stop, A/B report, export logged traffic, "
                       "trace an answer's lineage, the serving API's OpenAPI document.",
                  no_args_is_help=True)

STATE_STYLE = {"running": "green", "starting": "yellow", "stopped": "dim", "failed": "red", "gone": "magenta"}


def deploy(
    model: Optional[str] = typer.Argument(None, help="Model version id (or prefix), base model name or model folder. "
                                                     "Leave out to start deployment --name again."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Deployment name (default: from the model). "
                                                                   "Also a `model` value clients may send."),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Port to serve on (default 8000; 0: a free one)."),
    host: Optional[str] = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1: this machine only)."),
    replicas: Optional[str] = typer.Option(None, "--replicas", help="Replica processes: a number, 'auto' (1-2 on "
                                                                     "queue depth and latency) or 'auto:MIN-MAX'."),
    split: Optional[str] = typer.Option(None, "--split", help="A/B traffic split by weight, sticky per user: "
                                                              "MODEL=WEIGHT,... e.g. mv-1a2b=90,mv-3c4d=10."),
    log_requests: Optional[bool] = typer.Option(None, "--log-requests/--no-log-requests",
                                                help="Record request messages and responses in the store (opt-in)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="native (default), vllm (needs vLLM: on a CUDA "
                                                                  "GPU, or its CPU build) or llamacpp (GGUF "
                                                                  "conversions served by llama.cpp's llama-server, "
                                                                  "or its Python server where llama-server is "
                                                                  "not built; scripts/install-llamacpp.sh; "
                                                                  "docs/deployment.md)."),
    vllm_python: Optional[Path] = typer.Option(None, "--vllm-python", help="With --engine vllm: the Python that "
                                               "has vLLM, e.g. another venv's bin/python (default: "
                                               "$OIKYO_VLLM_PYTHON, else oikyo's own)."),
    vllm_args: Optional[str] = typer.Option(None, "--vllm-args", help="With --engine vllm: extra flags for vLLM's "
                                            "server, quoted as one string, e.g. \"--dtype float32 --enforce-eager\"."),
    llamacpp_python: Optional[Path] = typer.Option(None, "--llamacpp-python", help="With --engine llamacpp: the "
                                                   "Python of llama.cpp's environment (default: "
                                                   "$OIKYO_LLAMACPP_PYTHON, else .venv-llamacpp)."),
    gguf_quant: Optional[str] = typer.Option(None, "--gguf-quant", help="With --engine llamacpp: the GGUF type the "
                                             "model is served at: f16 (default), f32, bf16, q8_0 or q4_k_m."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return once it serves."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="Sequences batched per replica (16)."),
    max_adapters: Optional[int] = typer.Option(None, "--max-adapters", help="LoRA adapters kept loaded per replica (8)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per replica (default: cores / replicas)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="float32 (default) or float16: the native engine's "
                                          "decoding steps read float16 copies of the weights (1.32x float32's "
                                          "speed in process on a 2-core AVX2 CPU, 1.57x on a 2-core Xeon with "
                                          "AVX-512, where decoding is memory-bound); answers may differ "
                                          "slightly from float32's. See "
                                          "docs/deployment.md."),
    target_latency: Optional[float] = typer.Option(None, "--target-latency",
                                                   help="With --replicas auto: also add a replica while the p95 "
                                                        "latency exceeds this many seconds."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", help="Requests per minute per API key (default: "
                                               "no limit); a key over it gets 429 with Retry-After."),
    rate_limit_burst: Optional[int] = typer.Option(None, "--rate-limit-burst", help="With --rate-limit: requests "
                                                   "a key may send at once (default: the per-minute figure)."),
) -> None:
    """Serve a model version behind an OpenAI-compatible API (keys required: `oikyo keys create`)."""
    from oikyo.serve.gateway import deployments

    settings = {k: v for k, v in (("max_batch_size", max_batch_size), ("max_adapters", max_adapters),
                                  ("threads", threads), ("weights", weights), ("vllm_args", vllm_args),
                                  ("rate_limit_rpm", rate_limit), ("rate_limit_burst", rate_limit_burst),
                                  ("gguf_quant", gguf_quant)) if v}
    if vllm_python:
        settings["vllm_python"] = str(vllm_python.expanduser().absolute())
    if llamacpp_python:
        settings["llamacpp_python"] = str(llamacpp_python.expanduser().absolute())
    if target_latency:
        if not (replicas or "").startswith("auto"):
            err.print("[bold red]error:[/] --target-latency needs --replicas auto")
            raise typer.Exit(2)
        settings["autoscale"] = {"max_p95_latency_s": target_latency}
    if not detach:
        err.print("Serving in the foreground; Ctrl-C stops (finishing requests in flight). --detach runs it "
                  "in the background.")
    with user_errors():
        info = deployments.deploy(model, name=name, host=host, port=port, replicas=replicas, split=split,
                                  log_requests=log_requests, engine=engine, settings=settings or None, detach=detach,
                                  log=lambda message: err.print(message))
    if detach:
        out.print(f"Deployment [bold]{info['name']}[/] is {info['status']} at [bold]{info['url']}[/]")
        variants = ", ".join(f"{v['label']} ({v['weight']:g})" for v in info["variants"])
        out.print(f"  variants: {variants}; replicas: {info['replicas']}; requests logged: "
                  f"{'yes' if info['log_requests'] else 'no'}")
        out.print(f"  send model={info['name']!r} with a key from `oikyo keys create`; stop with "
                  f"`oikyo deployments stop {info['name']}`")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Deployments and their state (``gone``: recorded as running, but its processes are not)."""
    from rich.table import Table

    from oikyo.serve.gateway import deployments

    found = deployments.list_deployments()
    if as_json:
        out.print_json(data=found)
        return
    if not found:
        out.print("No deployments yet. Serve a model with `oikyo deploy MODEL`.")
        return
    table = Table()
    for column in ("name", "status", "url", "variants", "replicas", "engine", "log"):
        table.add_column(column, overflow="fold")
    for info in found:
        style = STATE_STYLE.get(info["status"], "")
        variants = ", ".join(f"{v['label']}={v['weight']:g}" for v in info["variants"])
        table.add_row(info["name"], f"[{style}]{info['status']}[/]", info["url"], variants, str(info["replicas"]),
                      info["engine"], "yes" if info["log_requests"] else "no")
    out.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="Deployment name."),
         as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """A deployment's record, its live readiness, its replica processes, what is firing and its recent events."""
    from oikyo.monitor import events
    from oikyo.serve.gateway import deployments

    with user_errors():
        info = deployments.show(name)
    info["firing"] = [events.describe(e) for e in events.firing(name)]
    info["events"] = [events.describe(e) for e in events.list_events(name, limit=10)]
    if as_json:
        out.print_json(data=info)
        return
    style = STATE_STYLE.get(info["status"], "")
    out.print(f"[bold]{info['name']}[/]: [{style}]{info['status']}[/] at {info['url']}")
    if info["error"]:
        out.print(f"[bold red]error:[/] {info['error']}")
    for key in ("model", "variants", "replicas", "engine", "log_requests", "pid", "started_at", "stopped_at", "log"):
        out.print(f"[bold]{key:>14}[/]  {info[key]}")
    for pool, replicas in (info.get("replica_processes") or {}).items():
        for r in replicas:
            out.print(f"[bold]{'replica':>14}[/]  {r['id']} pid {r['pid']} {r['state']} ({pool})")
    if info["status"] == "gone":
        out.print(f"Its processes are gone; start it again with `oikyo deployments start {name}`.")
    _print_events(info["firing"], info["events"])


def _print_events(firing: list[dict], recent: list[dict]) -> None:
    """What is firing (red) and the recent events, newest first (events: oikyo.monitor.events)."""
    from rich.markup import escape  # titles come from alert annotations: '[' must print as itself

    for e in firing:
        out.print(f"[bold red]{'firing':>14}[/]  {escape(e['title'])} [dim]({e['severity'] or 'no severity'}, "
                  f"since {e['time'][:19]})[/]", highlight=False)
    if not recent:
        return
    out.print("[bold]recent events[/]")
    for e in recent:
        style = {"alert_firing": "red", "alert_resolved": "green"}.get(e["kind"], "yellow")
        out.print(f"  {e['time'][:19]}  [{style}]{e['kind']:<14}[/] {escape(e['title'])} [dim]({e['source']})[/]",
                  highlight=False)


@app.command("logs")
def logs(name: str = typer.Argument(..., help="Deployment name."),
         lines: int = typer.Option(100, "--lines", "-n", help="How many of the last lines."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")) -> None:
    """The router's and replicas' log."""
    from oikyo.serve.gateway import deployments

    with user_errors():
        text = deployments.tail_log(name, lines)
    if text:
        out.print(text, markup=False, highlight=False)
    if not follow:
        return
    path = deployments.log_path(name)
    with open(path, "rb") as f:
        f.seek(0, 2)
        try:
            while True:
                chunk = f.read()
                if chunk:
                    out.print(chunk.decode("utf-8", "replace"), end="", markup=False, highlight=False)
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            return


@app.command("start")
def start(name: str = typer.Argument(..., help="Deployment name."),
          detach: bool = typer.Option(True, "--detach/--foreground", help="Background (default) or foreground.")) -> None:
    """Start a stopped (or gone) deployment again with its recorded settings."""
    from oikyo.serve.gateway import deployments

    with user_errors():
        info = deployments.start(name, detach=detach, log=lambda message: err.print(message))
    out.print(f"Deployment [bold]{info['name']}[/] is {info['status']} at [bold]{info['url']}[/]")


@app.command("stop")
def stop(name: str = typer.Argument(..., help="Deployment name."),
         timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for requests in flight.")) -> None:
    """Stop a deployment: no new requests, finish those in flight, stop the replicas."""
    from oikyo.serve.gateway import deployments

    with user_errors():
        info = deployments.stop(name, timeout_s=timeout)
    out.print(f"Deployment [bold]{info['name']}[/] is {info['status']}")


def _ci(interval) -> str:
    return "-" if not interval else f"[{interval[0]:.3g}, {interval[1]:.3g}]"


def _num(value, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


@app.command("ab-report")
def ab_report(name: str = typer.Argument(..., help="Deployment name."),
              as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Per-variant requests, latency, error rate and feedback (95% CIs), and whether they differ."""
    from rich.table import Table

    from oikyo.serve.gateway import ab

    with user_errors():
        report = ab.report(name)
    if as_json:
        out.print_json(data=report)
        return
    table = Table("variant", "weight", "requests", "p50 s", "p95 s", "error rate (95% CI)", "feedback n",
                  "feedback mean (95% CI)", title=f"A/B report: {name}")
    for v in report["variants"]:
        table.add_row(v["variant"], f"{report['weights'][v['variant']]:g}", str(v["requests"]), _num(v["latency_p50_s"]),
                      _num(v["latency_p95_s"]), f"{v['error_rate']:.2%} {_ci(v['error_rate_ci95'])}",
                      str(v["feedback_count"]), f"{_num(v['feedback_mean'])} {_ci(v['feedback_ci95'])}")
    out.print(table)
    style = "bold green" if report["significant"] else "bold"
    out.print(f"[{style}]verdict:[/] {report['verdict']}")


@app.command("export")
def export(name: str = typer.Argument(..., help="Deployment name."),
           path: Path = typer.Argument(..., help="JSONL file to write (OpenAI chat format)."),
           min_rating: Optional[float] = typer.Option(None, "--min-rating", help="Only responses rated at least this.")) -> None:
    """Write logged requests and responses as a dataset `oikyo data import` reads."""
    from oikyo.serve.gateway import deployments, request_log

    with user_errors():
        deployments.get(name)
        count = request_log.export_logged_requests(name, path, min_rating=min_rating)
    out.print(f"Wrote {count} conversations to {path}; import them with `oikyo data import {path}`")


@app.command("openapi")
def openapi(out_file: Optional[Path] = typer.Option(None, "--out", help="Write the document here instead of stdout.")) -> None:
    """Print the OpenAPI 3.1 document of the serving API (what a deployment serves at GET /openapi.json).

    Request schemas come from the validators themselves; see docs/deployment.md ("OpenAPI document")."""
    import json

    from oikyo.serve.gateway.openapi import spec

    text = json.dumps(spec(), indent=1, sort_keys=True) + "\n"
    if out_file is None:
        typer.echo(text, nl=False)
    else:
        out_file.write_text(text)
        err.print(f"Wrote the OpenAPI document to {out_file}")


@app.command("trace")
def trace(name: str = typer.Argument(..., help="Deployment name."),
          response_id: str = typer.Argument(..., help="The response id a client got back (the answer's `id`, "
                                                      "chatcmpl-...; feedback names it too)."),
          as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Lineage of one served answer: the request and its feedback, the model version that answered, its
    training run and dataset version (from traffic: which requests), then each parent version the same
    way down to the base model, with the loop cycle that trained each version (docs/loop.md, Records)."""
    from oikyo.loop.trace import trace as trace_answer

    with user_errors():
        info = trace_answer(name, response_id)
    if as_json:
        out.print_json(data=info)
        return
    _print_trace(info)


def _print_trace(info: dict) -> None:
    """One block per hop: the request, then each model version with its run, dataset and cycle."""
    from rich.markup import escape

    def line(key: str, value) -> None:
        out.print(f"  [bold]{key:>10}[/]  {escape(str(value))}", highlight=False)

    r = info["request"]
    out.print(f"[bold]response {escape(r['id'])}[/] of deployment {escape(info['deployment'])}", highlight=False)
    line("served", f"{_when(r['created_at'])} by {r['model']} (variant {r['variant'] or '-'}), status {r['status']}"
                   + (f": {r['error']}" if r["error"] else ""))
    ratings = ", ".join(f"{f['rating'] if f['rating'] is not None else 'no rating'}"
                        + (" + correction" if f["corrected"] else "") for f in r["feedback"])
    line("feedback", f"{r['verdict']}" + (f" ({ratings})" if ratings else ""))
    for depth, hop in enumerate(info["chain"]):
        mv = hop["model_version"]
        title = "answered by" if depth == 0 else f"{'  ' * depth}from"
        if hop["missing"]:
            out.print(f"[bold]{title} {escape(mv['id'])}[/] [red](no such model version in the store)[/]")
            continue
        out.print(f"[bold]{title} {escape(mv['id'])}[/] ({mv['kind']}, base {escape(mv['base_model'])}, "
                  f"created {_when(mv['created_at'])})", highlight=False)
        if mv["parent"]:
            line("parent", f"{mv['parent']} ({mv['operation']})")
        run = hop["run"]
        line("run", "-" if run is None else f"{run['id']} {run['name']} ({run['state']})")
        line("dataset", _dataset_text(hop["dataset"]))
        traffic = (hop["dataset"] or {}).get("traffic")
        if traffic:
            span = traffic["time_range"]
            line("traffic", f"{traffic['requests']} requests of deployment {traffic['deployment']} from "
                            f"{_when(span.get('first_request') or span.get('since'))} to "
                            f"{_when(span.get('last_request') or span.get('until'))}")
            more = traffic["requests"] - len(traffic["request_ids"])
            line("requests", ", ".join(traffic["request_ids"]) + (f" ... (+{more})" if more > 0 else ""))
        cycle = hop["cycle"]
        if cycle:
            gate = cycle["gate"]
            verdict = "" if not gate else f", gate {'passed' if gate['passed'] else 'failed'}"
            line("cycle", f"{cycle['id']} ({cycle['trigger']}: {cycle['reason']}) {cycle['state']}{verdict}")
    if info["truncated"]:
        out.print("[yellow]... the chain goes on (cut after 20 versions, or a version names itself)[/]")
    elif info["base_model"]:
        out.print(f"[bold]base model[/] {escape(info['base_model'])}", highlight=False)


def _when(iso: str | None) -> str:
    """An ISO time to the second, in UTC as stored ('2026-12-01 08:00:00 UTC')."""
    return f"{iso[:19].replace('T', ' ')} UTC" if iso else "?"


def _dataset_text(dataset: dict | None) -> str:
    if dataset is None:
        return "-"
    if dataset["missing"]:
        return f"{dataset['id']} (no such dataset version in the store)"
    return f"{dataset['name']}@{dataset['id']}: {dataset['rows']} rows, {dataset['format'] or dataset['kind']}"


from oikyo.cli import alerts as alerts_cli  # noqa: E402  (the command lives in its own module)
app.command("alerts")(alerts_cli.alerts)
from oikyo.cli import watch as watch_cli  # noqa: E402
app.command("watch")(watch_cli.watch)
from oikyo.cli import drift as drift_cli  # noqa: E402
app.command("drift")(drift_cli.drift)
