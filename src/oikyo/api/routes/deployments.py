"""REST routes: deployments (list, create and start, show, stop, change the A/B split or its weights,
traffic stats, logs, drift checks, quality signals).

Adapts :mod:`oikyo.serve.gateway.deployments` (``oikyo deploy``, ``oikyo deployments ...``),
:mod:`oikyo.serve.gateway.traffic` (requests, errors and latency per variant and over time, from the
``served_requests`` table the router fills), :mod:`oikyo.monitor.drift` (the records that
``oikyo deployments drift`` writes) and :mod:`oikyo.monitor.quality` (flag shares of checked answers).
API keys for the served endpoints: see routes/keys.py.

Creating a deployment starts its router in the background and answers once it serves (or with
the reason it could not start). New weights for the variants a deployment already serves take
effect live (its router follows the record within about a second, no restart); a split naming
other models restarts a running deployment with it (its router loads its models when it starts).
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from oikyo.api.refs import check_ref
from oikyo.errors import OikyoError

router = APIRouter(tags=["deployments"])


class NotFound(OikyoError):
    http_status = 404


def known(name: str) -> str:
    """``name`` when a deployment has it; a 404 (with the store's message) when none does."""
    from oikyo.serve.gateway import deployments

    check_ref(name, "deployment name")
    try:
        deployments.get(name)
    except OikyoError as error:
        raise NotFound(str(error)) from None
    return name


class DeploymentRequest(BaseModel):
    model: str | None = Field(None, description="Model version id (or prefix), base model name or model folder.")
    name: str | None = Field(None, max_length=100, description="Deployment name (default: from the model).")
    split: str | None = Field(None, description="A/B split by weight, sticky per user: MODEL=WEIGHT,... "
                                                "e.g. mv-1a2b=90,mv-3c4d=10.")
    replicas: str | None = Field(None, description="Replica processes: a number, 'auto' or 'auto:MIN-MAX'.")
    port: int | None = Field(None, ge=0, le=65535, description="Port to serve on (default 8000; 0: a free one).")
    log_requests: bool | None = Field(None, description="Record request messages and responses (opt-in).")
    engine: str | None = Field(None, description="native (default), vllm or llamacpp.")
    gguf_quant: str | None = Field(None, description="With engine llamacpp: the GGUF type served (f16 default, "
                                                     "f32, bf16, q8_0, q4_k_m).")
    weights: str | None = Field(None, description="With the native engine: float32 (default) or float16 (decoding "
                                                  "steps read float16 copies of the weights; docs/deployment.md).")
    rate_limit_rpm: float | None = Field(None, gt=0, description="Requests per minute per API key (default: no "
                                                                 "limit); a key over it gets 429 with Retry-After.")
    rate_limit_burst: int | None = Field(None, ge=1, description="Requests a key may send at once (default: "
                                                                 "rate_limit_rpm).")


class SplitRequest(BaseModel):
    split: str = Field(description="MODEL=WEIGHT,... e.g. mv-1a2b=90,mv-3c4d=10.")


class WeightsRequest(BaseModel):
    weights: dict[str, float] = Field(description="Variant label or model -> weight (>= 0, positive total); "
                                                  "variants left out keep theirs. e.g. {\"mv-1a2b\": 80, \"mv-3c4d\": 20}.")


@router.get("/deployments")
def list_deployments() -> list[dict]:
    """Deployments and their state (``gone``: recorded as running, but its processes are not)."""
    from oikyo.serve.gateway import deployments

    return deployments.list_deployments()


@router.post("/deployments", status_code=201)
def create_deployment(body: DeploymentRequest) -> dict:
    """Create (or start again, with ``name`` alone) a deployment; answers once it serves."""
    from oikyo.serve.gateway import deployments

    if body.name:
        check_ref(body.name, "deployment name")
        if body.model is None and body.split is None:
            known(body.name)  # starting a recorded deployment again: it must exist
    replicas = body.replicas if body.replicas is None else str(body.replicas)
    return deployments.deploy(body.model, name=body.name, port=body.port, replicas=replicas, split=body.split,
                              log_requests=body.log_requests, engine=body.engine, detach=True,
                              settings={k: v for k in ("rate_limit_rpm", "rate_limit_burst", "gguf_quant", "weights")
                                        if (v := getattr(body, k)) is not None} or None)


@router.get("/deployments/{name}")
def show_deployment(name: str) -> dict:
    """A deployment's record, live readiness and replica processes."""
    from oikyo.serve.gateway import deployments

    return deployments.show(known(name))


@router.post("/deployments/{name}/stop")
def stop_deployment(name: str) -> dict:
    """Stop a deployment: no new requests, finish those in flight, stop the replicas."""
    from oikyo.serve.gateway import deployments

    return deployments.stop(known(name))


@router.put("/deployments/{name}/split")
def set_split(name: str, body: SplitRequest) -> dict:
    """Change the traffic split. Same models with new weights: applied live, no restart (as
    ``PUT .../weights``); other models: a running deployment restarts with them (``restarted`` says which)."""
    from oikyo.serve.gateway import deployments

    return deployments.set_split(known(name), body.split)


@router.put("/deployments/{name}/weights")
def set_weights(name: str, body: WeightsRequest) -> dict:
    """New weights for the deployment's variants, live: its router applies them within about a second
    without a restart (its ``GET /v1/models`` shows the weights in force). Weight 0: loaded, no share."""
    from oikyo.serve.gateway import deployments

    return deployments.set_weights(known(name), body.weights)


@router.get("/deployments/{name}/stats")
def deployment_stats(name: str, window_s: float = Query(3600.0, gt=0, le=90 * 24 * 3600),
                     buckets: int = Query(60, ge=1, le=500)) -> dict:
    """Requests, errors and latency percentiles over the last ``window_s`` seconds: totals, per variant
    (with weights and feedback) and in ``buckets`` time slices for charts."""
    from oikyo.serve.gateway import traffic

    return traffic.stats(known(name), window_s=window_s, buckets=buckets)


@router.get("/deployments/{name}/logs")
def deployment_logs(name: str, lines: int = Query(100, ge=1, le=10_000)) -> dict:
    """The last ``lines`` lines of the router's and replicas' log."""
    from oikyo.serve.gateway import deployments

    text = deployments.tail_log(known(name), lines)
    return {"deployment": name, "lines": text.splitlines() if text else []}


@router.get("/deployments/{name}/ab-report")
def ab_report(name: str) -> dict:
    """Per-variant requests, latency, error rate and feedback with 95% CIs, and a verdict (`oikyo deployments ab-report`)."""
    from oikyo.serve.gateway import ab

    return ab.report(known(name))


@router.get("/deployments/{name}/drift")
def deployment_drift(name: str, detector: str | None = Query(None, max_length=64),
                     variant: str | None = Query(None, max_length=200),
                     limit: int = Query(200, ge=1, le=5000)) -> dict:
    """Drift checks (``oikyo deployments drift``): ``checks``, newest first (one detector's or one
    variant's when given), and ``latest``, the newest check of each (variant, detector). A check's
    ``score`` is statistic / threshold: above 1 is an alarm; ``details`` holds what moved and examples."""
    from oikyo.monitor import drift

    known(name)
    return {"deployment": name, "latest": drift.latest(name),
            "checks": drift.history(name, detector=detector, limit=limit, variant=variant)}


@router.get("/deployments/{name}/quality")
def deployment_quality(name: str, window_s: float = Query(3600.0, gt=0, le=90 * 24 * 3600)) -> dict:
    """Quality signals of the answers checked over the last ``window_s`` seconds, per variant: shares of
    degenerate, refusal, empty, invalid-JSON and schema-mismatch answers, and of negative feedback."""
    from oikyo.monitor import quality

    return {"deployment": name, "window_s": window_s, "variants": quality.summary(known(name), window_s=window_s)}
