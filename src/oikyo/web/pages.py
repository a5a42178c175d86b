"""The web dashboard: server-rendered pages over the stage packages, plus the bundled JS and CSS.

Pages read through the same functions the CLI calls (dataset versions, runs, model versions,
evaluations, deployments, keys, tuning studies, loop policies) and render Jinja2 templates from ``templates/``.
What a user does on a page (upload, start, cancel, compare, rate, deploy ...) and everything live
(training charts over server-sent events, deployment charts, a running study's trials polled from
its report) goes from the page's JavaScript to the ``/api/v1`` routes.
Assets live in ``static/`` inside the package: no CDN, no Node, nothing fetched at run time.

Every page but ``/login`` needs the browser session cookie (see :mod:`oikyo.api.auth`); without a
valid one the page redirects to ``/login?next=<where the user was going>``.

Pages stay fast with a large store: every list is limited or paged, and no page reads a run's
metric rows (charts fetch them from the API, one run at a time). ``bench/bench_ui.py`` measures it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from oikyo import __version__
from oikyo.api.auth import SESSION_COOKIE
from oikyo.errors import OikyoError

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
NAV = [("overview", "/", "Overview"), ("datasets", "/datasets", "Datasets"), ("runs", "/runs", "Runs"),
       ("studies", "/studies", "Studies"), ("compare", "/compare", "Compare"), ("rate", "/rate", "Rate"),
       ("models", "/models", "Models"), ("deployments", "/deployments", "Deployments")]
RUNS_PER_PAGE = 50
LIST_LIMIT = 200  # datasets and model versions shown in a list or a picker
STUDIES_LIMIT = 100  # studies in the list (each reads its trials from Optuna's storage)
STUDY_POLL_S = 3.0  # how often a running study's page asks the API for its report again
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}$")  # what a dataset/run/model ref may look like


class LoginRequired(Exception):
    """Raised by :func:`session_required`; answered with a redirect to the login page."""


def session_required(request: Request) -> None:
    """Page dependency: a valid browser session cookie, else a redirect to /login."""
    if request.app.state.auth.session_id(request.cookies.get(SESSION_COOKIE)) is None:
        raise LoginRequired()


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages and static assets to the server app."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _error: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    app.include_router(public)
    app.include_router(router, dependencies=[Depends(session_required)])


public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False)


# ----------------------------------------------------------------------------- rendering


def _ago(moment: datetime | str | None) -> str:
    """'3 min ago' for a timestamp (naive timestamps are UTC, as the store writes them)."""
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = (datetime.now(timezone.utc) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    end = end or datetime.now(timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    return _seconds((end - start).total_seconds())


def _seconds(seconds: float | None) -> str:
    """'2 h 5 min', '3 min 20 s', '7 s' for a length of time in seconds."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _short(text: str | None, keep: int = 40) -> str:
    """A long path or model name shortened to its end: '…/models/tiny'."""
    if not text:
        return "—"
    return text if len(text) <= keep else "…" + text[-(keep - 1):]


def _num(value, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _code(text: str) -> Markup:
    """Text with `backticked` commands shown as code (the rest escaped)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


@functools.lru_cache(maxsize=64)
def _static_url(name: str) -> str:
    """``/static/<name>?v=<hash of the file>``: a browser never runs a stale script after an upgrade."""
    digest = hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:10]
    return f"/static/{name}?v={digest}"


TEMPLATES.env.filters.update(ago=_ago, short=_short, num=_num, code=_code, seconds=_seconds)
TEMPLATES.env.globals.update(duration=_duration, oikyo_version=__version__, static=_static_url)

# Pages load scripts, styles and data only from this server, and no other site may frame them.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def render(request: Request, template: str, active: str, status_code: int = 200, **context) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, template, {"nav": NAV, "active": active, **context},
                                          status_code=status_code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def not_found(request: Request, active: str, message: str) -> HTMLResponse:
    return render(request, "error.html", active, status_code=404, title="Not found", message=message)


def check_ref(ref: str) -> str:
    """A ref from a URL path: ids, names and ``name@id`` only (no slashes, dots-only or control characters)."""
    if not REF_RE.match(ref) or ".." in ref:
        raise OikyoError(f"{ref!r} is not a valid reference")
    return ref


# ----------------------------------------------------------------------------- login and overview


@public.get("/login")
def login_page(request: Request, next: str = "/"):
    """The login form: the token (prefilled from ?token= or #token=) is POSTed to /api/v1/login."""
    target = next if next.startswith("/") and not next.startswith("//") and "\\" not in next else "/"
    return render(request, "login.html", "", title="Log in", next=target,
                  token=request.query_params.get("token", ""))


@router.get("/")
def overview(request: Request):
    from oikyo.data import versions
    from oikyo.jobs import model_versions, runs
    from oikyo.serve.gateway import deployments

    counts = runs.count_by_state()
    return render(request, "overview.html", "overview", title="Overview", counts=counts,
                  total_runs=sum(counts.values()), runs=runs.list_runs(limit=8),
                  datasets=versions.list_versions(limit=8), models=model_versions.list_versions(limit=8),
                  deployments=deployments.list_deployments())


# ----------------------------------------------------------------------------- datasets


@router.get("/datasets")
def datasets_page(request: Request):
    from oikyo.data import ingest, versions

    found = versions.list_versions(limit=LIST_LIMIT + 1)
    return render(request, "datasets.html", "datasets", title="Datasets", versions=found[:LIST_LIMIT],
                  more=len(found) > LIST_LIMIT, formats=ingest.available_formats())


@router.get("/datasets/{ref}")
def dataset_page(request: Request, ref: str):
    from oikyo.data import versions
    from oikyo.models import catalog

    try:
        version = versions.resolve(check_ref(ref))
    except OikyoError as error:
        return not_found(request, "datasets", str(error))
    family = versions.list_versions(version.name, limit=LIST_LIMIT)
    children = [v for v in family if v.parent_id == version.id]
    parent = None
    if version.parent_id:
        try:
            parent = versions.resolve(version.parent_id)
        except OikyoError:
            parent = None
    return render(request, "dataset.html", "datasets", title=f"{version.name}@{version.id}", version=version,
                  info=versions.describe(version), family=family, parent=parent, children=children,
                  model_names=[m["name"] for m in catalog.list_models()],
                  page={"ref": version.id, "splits": sorted((version.splits or {}).keys())})


# ----------------------------------------------------------------------------- runs


@router.get("/runs")
def runs_page(request: Request, state: str | None = None, page: int = 1):
    from oikyo.data import versions
    from oikyo.jobs import model_versions, queue, runs
    from oikyo.models import catalog
    from oikyo.web.runform import form_groups

    state = state if state in queue.STATES else None
    page = min(max(page, 1), (2**63 - 1) // RUNS_PER_PAGE)  # the offset stays a 64-bit integer for the database
    counts = runs.count_by_state()
    total = counts.get(state, 0) if state else sum(counts.values())
    found = runs.list_runs(state=state, limit=RUNS_PER_PAGE, offset=(page - 1) * RUNS_PER_PAGE)
    dataset_names = sorted({v.name for v in versions.list_versions(limit=LIST_LIMIT)})
    # model.name takes a base model or a model version (a run that goes on from a trained model).
    model_names = [m["name"] for m in catalog.list_models()] + [
        mv.id for mv in model_versions.list_versions(limit=LIST_LIMIT) if mv.kind != "merged"]
    return render(request, "runs.html", "runs", title="Runs", runs=found, counts=counts, state=state,
                  states=queue.STATES, page=page, pages=max(1, -(-total // RUNS_PER_PAGE)), total=total,
                  groups=form_groups(), dataset_names=dataset_names, model_names=model_names)


@router.get("/runs/{ref}")
def run_page(request: Request, ref: str):
    from oikyo.jobs import queue, runs

    try:
        info = runs.show(check_ref(ref))
    except OikyoError as error:
        return not_found(request, "runs", str(error))
    log_tail = runs.read_log(info["id"], tail=80)
    live = info["state"] not in queue.FINISHED
    return render(request, "run.html", "runs", title=f"Run {info['name']}", run=info, log_tail=log_tail,
                  events=info["events"][-30:],
                  page={"id": info["id"], "state": info["state"], "live": live,
                        "total_steps": info["progress"]["total_steps"]})


# ----------------------------------------------------------------------------- studies


@router.get("/studies")
def studies_page(request: Request):
    from oikyo.tune import study as studies

    found = studies.list_studies(limit=STUDIES_LIMIT + 1)
    return render(request, "studies.html", "studies", title="Studies",
                  studies=[studies.describe(record) for record in found[:STUDIES_LIMIT]],
                  more=len(found) > STUDIES_LIMIT)


@router.get("/studies/{ref}")
def study_page(request: Request, ref: str):
    """One study (the report `oikyo tune show` prints); study.js keeps it current while the study runs."""
    from oikyo.tune import report
    from oikyo.tune import study as studies

    try:
        info = report.study_report(check_ref(ref))
    except OikyoError as error:
        return not_found(request, "studies", str(error))
    record = info["study"]
    return render(request, "study.html", "studies", title=f"Study {record['name']}", info=info, study=record,
                  page={"id": record["id"], "state": record["state"], "live": record["state"] == studies.RUNNING,
                        "poll_ms": int(STUDY_POLL_S * 1000)})


# ----------------------------------------------------------------------------- compare and rate


def _choices() -> dict:
    """What the compare and rate pickers offer: recent runs, model versions, base models, datasets."""
    from oikyo.data import versions
    from oikyo.jobs import model_versions, runs
    from oikyo.models import catalog

    return {"runs": runs.list_runs(limit=100), "model_versions": model_versions.list_versions(limit=LIST_LIMIT),
            "base_models": [m["name"] for m in catalog.list_models()],
            "datasets": versions.list_versions(limit=LIST_LIMIT)}


def _side(ref: str) -> dict:
    """A run or model version picked on the compare page: its run (for curves) and training config."""
    from oikyo.jobs import model_versions, runs

    ref = check_ref(ref)
    if ref.startswith("mv-"):
        mv = model_versions.get(ref)
        return {"ref": mv.id, "label": mv.id, "run_id": mv.run_id, "config": (mv.lineage or {}).get("config") or {}}
    run = runs.resolve(ref)
    return {"ref": run.id, "label": f"{run.name} ({run.id})", "run_id": run.id, "config": run.config or {}}


@router.get("/compare")
def compare_page(request: Request, a: str = "", b: str = ""):
    from oikyo.evaluate.compare import config_diff

    sides, problem = [], None
    if a and b:
        try:
            sides = [_side(a), _side(b)]
        except OikyoError as error:
            problem = str(error)
    diff = config_diff(sides[0]["config"], sides[1]["config"]) if sides else {}
    page = {"a": sides[0]["ref"] if sides else None, "b": sides[1]["ref"] if sides else None,
            "runs": [s["run_id"] for s in sides], "labels": [s["label"] for s in sides]}
    return render(request, "compare.html", "compare", title="Compare", a=a, b=b, sides=sides, diff=diff,
                  problem=problem, page=page, **_choices())


@router.get("/rate")
def rate_page(request: Request):
    return render(request, "rate.html", "rate", title="Rate answers", **_choices())


# ----------------------------------------------------------------------------- models and deployments


def _deployed_models(found: list[dict]) -> dict[str, list[str]]:
    """Model ref -> names of the deployments serving it (from each deployment's variants)."""
    out: dict[str, list[str]] = {}
    for deployment in found:
        for variant in deployment.get("variants") or []:
            model = str(variant.get("model") or "")
            out.setdefault(model, []).append(deployment["name"])
    return out


@router.get("/models")
def models_page(request: Request, dataset: str = ""):
    from oikyo.data import versions
    from oikyo.evaluate import records
    from oikyo.jobs import model_versions
    from oikyo.models import catalog
    from oikyo.serve.gateway import deployments

    evaluated = {}
    for ev in records.list_evaluations(limit=LIST_LIMIT):  # datasets with evaluations, newest first
        evaluated.setdefault(ev.dataset_version_id, None)
    names = {v.id: f"{v.name}@{v.id}" for v in versions.list_versions(limit=LIST_LIMIT) if v.id in evaluated}
    dataset = dataset or next(iter(evaluated), "")
    board, problem = None, None
    if dataset:
        try:
            board = records.leaderboard(check_ref(dataset))
        except OikyoError as error:
            problem = str(error)
    return render(request, "models.html", "models", title="Models", base_models=catalog.list_models(),
                  model_versions=model_versions.list_versions(limit=LIST_LIMIT),
                  deployed=_deployed_models(deployments.list_deployments()), evaluated=names,
                  dataset=dataset, board=board, problem=problem)


@router.get("/models/{ref}/exports/{index}")
def export_download(request: Request, ref: str, index: int):
    """A recorded export's file (a GGUF file; an Ollama export's GGUF), as a download."""
    from fastapi.responses import FileResponse

    from oikyo.jobs import exports

    try:
        path = exports.export_file(check_ref(ref), index)
    except OikyoError as error:
        return not_found(request, "models", str(error))
    return FileResponse(path, filename=path.name, media_type="application/octet-stream")


def _events_by_deployment(names: list[str]) -> dict[str, dict]:
    """Per deployment: the alerts firing now and its five newest events (oikyo.monitor.events)."""
    from oikyo.monitor import events

    return {name: {"firing": [events.describe(e) for e in events.firing(name)],
                   "recent": [events.describe(e) for e in events.list_events(name, limit=5)]} for name in names}


def _drift_checked(names: list[str]) -> set[str]:
    """The deployments with at least one drift check (the others show how to start checking).

    The checks themselves (scores, examples, charts) are fetched by the page from
    ``/api/v1/deployments/{name}/drift``, like the traffic charts."""
    from oikyo.monitor import drift_records

    return {name for name in names if drift_records.history(name, limit=1)}


@router.get("/deployments")
def deployments_page(request: Request):
    from oikyo.jobs import model_versions
    from oikyo.loop import records as loop_records
    from oikyo.models import catalog
    from oikyo.serve.gateway import deployments, keys

    found = deployments.list_deployments()
    return render(request, "deployments.html", "deployments", title="Deployments", deployments=found,
                  loops={r.deployment: r.paused for r in loop_records.policies()},
                  events=_events_by_deployment([d["name"] for d in found]),
                  drift_checked=_drift_checked([d["name"] for d in found]),
                  model_versions=model_versions.list_versions(limit=LIST_LIMIT),
                  base_models=[m["name"] for m in catalog.list_models()],
                  keys=[keys.describe(k) for k in keys.list_keys()],
                  page={"names": [d["name"] for d in found if d["status"] in ("starting", "running")]})


@router.get("/deployments/{name}/loop")
def loop_page(request: Request, name: str):
    """A deployment's continuous training: its policy, the cycle in progress, every cycle with the records
    it links to and its gate and canary figures, and the decisions timeline (loop.js: the manual actions)."""
    from oikyo.serve.gateway import deployments
    from oikyo.web.loopview import loop_view

    try:
        record = deployments.get(check_ref(name))
    except OikyoError as error:
        return not_found(request, "deployments", str(error))
    view = loop_view(record.name)
    return render(request, "loop.html", "deployments", title=f"Loop of {record.name}", deployment=record, **view,
                  page={"deployment": record.name, "has_policy": view["record"] is not None})


@router.get("/deployments/{name}/requests")
def trace_form(name: str, id: str = ""):
    """The loop page's "trace a response id" form lands here: on to that answer's lineage page."""
    target = f"/deployments/{quote(name, safe='')}"
    if id.strip():
        return RedirectResponse(f"{target}/requests/{quote(id.strip(), safe='')}", status_code=303)
    return RedirectResponse(f"{target}/loop", status_code=303)


@router.get("/deployments/{name}/requests/{response_id}")
def trace_page(request: Request, name: str, response_id: str):
    """One served answer's lineage (:func:`oikyo.loop.trace.trace`): the request and its feedback, then
    each model version back to the base model with its run, dataset version and loop cycle."""
    from oikyo.loop.trace import trace

    try:
        info = trace(check_ref(name), check_ref(response_id))
    except OikyoError as error:
        return not_found(request, "deployments", str(error))
    return render(request, "trace.html", "deployments", title=f"Lineage of {info['request']['id']}", info=info)
