"""REST routes: datasets (import by upload, list, show, quality report, rows, split, export).

Each route adapts one function of :mod:`oikyo.data` (the ones `oikyo data ...` calls). Refs are
what the CLI accepts (id, id prefix, name, ``name@id``) and are checked by :func:`check_ref` first.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from oikyo import workspace
from oikyo.api.app import error_response
from oikyo.api.routes import DB_INT_MAX
from oikyo.api.refs import check_ref
from oikyo.api.uploads import receive_upload
from oikyo.data import versions

router = APIRouter(tags=["datasets"])

MAX_ROWS_PAGE = 200


def _problem(p) -> dict:
    """One validation problem as the API shows it: where, which field, which class of error, what to do."""
    return {"line": p.line, "index": p.index, "location": p.location(), "field": p.field,
            "error_class": p.error, "message": p.message}


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").replace(",", "\n").splitlines() if line.strip()]


def _resolve(ref: str):
    return versions.resolve(check_ref(ref, "dataset ref"))


@router.get("/datasets")
def list_datasets(name: str | None = None) -> list[dict]:
    """Dataset versions, newest first (``?name=`` for one dataset's versions)."""
    return [versions.describe(v) for v in versions.list_versions(check_ref(name, "dataset name"))]


_UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL, JSON, CSV, TSV, Parquet or plain text (.txt, .md), optionally .gz"},
        "name": {"type": "string", "description": "Dataset name (default: from the file name)"},
        "format": {"type": "string", "default": "auto", "description": "auto, openai, sharegpt, alpaca, ..."},
        "on_error": {"type": "string", "enum": ["fail", "skip"], "default": "fail"},
        "map": {"type": "string", "description": "field=column pairs, one a line"},
        "drop": {"type": "string", "description": "source columns to leave out, one a line"},
        "keep": {"type": "string", "description": "source columns to keep as row metadata, one a line"},
        "text_unit": {"type": "string", "enum": ["line", "block"],
                      "description": "plain text: one document per line, or per blank-line-separated block "
                                     "(default: detected)"},
        "eval_set": {"type": "boolean", "default": False}}}}}}}


@router.post("/datasets", status_code=201, openapi_extra=_UPLOAD_FORM)
async def import_dataset(request: Request):
    """Upload a file (multipart: ``file``; optional ``name``, ``format`` (auto), ``on_error`` (fail|skip),
    ``map`` ("field=column" lines), ``drop`` and ``keep`` (column lines), ``eval_set`` (true/false), ``text_unit``
    (line|block, plain text only; default detected)) and store it as a dataset version.

    201 with the version; 422 with every problem (line, field, error_class, message) and exact counts
    per class when the file does not validate (nothing is stored); 413 past the upload limit.
    """
    upload = await receive_upload(request, max_bytes=request.app.state.max_upload_bytes)
    try:
        if upload.path is None:
            return error_response(400, "No file: send it in the multipart field 'file'.", "invalid_request")
        fields = upload.fields
        try:
            name = fields.get("name") or versions.default_name(Path(upload.filename or "dataset"))
            outcome = await run_in_threadpool(
                versions.import_dataset, upload.path, name=name, format=fields.get("format") or "auto",
                mapping=versions.parse_mapping(_lines(fields.get("map"))), drop=_lines(fields.get("drop")),
                keep=_lines(fields.get("keep")),
                on_error=fields.get("on_error") or "fail",
                eval_set=(fields.get("eval_set") or "").lower() in ("1", "true", "yes", "on"),
                lineage_extra={"upload": {"filename": upload.filename, "size": upload.size}},
                text_unit=fields.get("text_unit") or None,
            )
        except versions.ImportFailed as failure:
            result = failure.result
            return error_response(422, str(failure), "ImportFailed", problems=[_problem(p) for p in result.problems],
                          counts=result.problem_counts, question=result.question,
                          suggestions=result.suggestions, stored=False)
        except versions.DataError as error:  # a bad option (name, format, on_error, map): the request's fault
            return error_response(400, str(error), "DataError")
    finally:
        upload.discard()
    result = outcome.result
    return {"version": versions.describe(outcome.version), "existed": outcome.existed,
            "detected_format": result.format, "text_layout": result.text_layout, "dropped": result.dropped,
            "problems": [_problem(p) for p in result.problems], "counts": result.problem_counts}


@router.get("/datasets/{ref}")
def show_dataset(ref: str, dropped: bool = False) -> dict:
    """One version: kind, rows, splits, parent, lineage (``?dropped=true`` adds the rows a skip import left out)."""
    version = _resolve(ref)
    info = versions.describe(version)
    info["children"] = [v.id for v in versions.list_versions(version.name) if v.parent_id == version.id]
    if dropped:
        info["dropped_rows"] = versions.dropped_rows(version)
    return info


@router.get("/datasets/{ref}/report")
def dataset_report(ref: str, model: str | None = None) -> dict:
    """The quality report, as ``oikyo data report --json`` prints it (``?model=`` counts tokens with that model)."""
    check_ref(model, "model")
    version = _resolve(ref)
    counter = None
    if model:
        from oikyo.models.catalog import token_counter

        counter = token_counter(model)
    return versions.quality_report(version, count_tokens=counter.text if counter else None)


@router.get("/datasets/{ref}/rows")
def dataset_rows(ref: str, split: Literal["train", "validation", "test"] | None = None,
                 offset: int = Query(0, ge=0, le=DB_INT_MAX), limit: int = Query(50, ge=1, le=MAX_ROWS_PAGE)) -> dict:
    """A page of canonical rows (at most 200), optionally of one split."""
    version = _resolve(ref)
    rows = versions.page_rows(version, split=split, offset=offset, limit=limit)
    total = (version.splits or {}).get(split, 0) if split else version.rows
    return {"id": version.id, "split": split, "offset": offset, "limit": limit, "total": total, "rows": rows}


class SplitRequest(BaseModel):
    validation: float = Field(0.1, description="Share of rows for validation.")
    test: float = Field(0.1, description="Share of rows for test.")
    seed: int = Field(0, description="The same seed always gives the same split.")
    stratify: Literal["auto", "yes", "no"] = Field("auto", description="Stratify by label (auto: when rows have labels).")


@router.post("/datasets/{ref}/split", status_code=201)
def split_dataset(ref: str, body: SplitRequest | None = None) -> dict:
    """Split into train/validation/test (deterministic, label-stratified, duplicates never straddle): a new version."""
    from oikyo.data.split import split_dataset as split

    body = body or SplitRequest()
    version, existed = split(check_ref(ref, "dataset ref"), validation=body.validation, test=body.test,
                             seed=body.seed, stratify=body.stratify)
    return {"version": versions.describe(version), "existed": existed}


@router.get("/datasets/{ref}/export")
def export_dataset(ref: str, to: Literal["openai", "sharegpt", "alpaca", "jsonl", "parquet"] = "openai",
                   split: Literal["train", "validation", "test"] | None = None) -> FileResponse:
    """Download a version (or one split) as openai / sharegpt / alpaca JSONL, canonical JSONL or Parquet."""
    from oikyo.data.export import export_version

    check_ref(ref, "dataset ref")
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=workspace.subdir("tmp")))
    try:
        path, _count = export_version(ref, to, folder, split=split)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    media = "application/vnd.apache.parquet" if to == "parquet" else "application/x-ndjson"
    return FileResponse(path, media_type=media, filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


class EvalSetRequest(BaseModel):
    eval_set: bool = Field(True, description="True registers the version as an evaluation set, false removes the mark.")


@router.put("/datasets/{ref}/eval-set")
def mark_eval_set(ref: str, body: EvalSetRequest) -> dict:
    """(Un)register a version as an evaluation set: quality reports then flag other data leaking into it."""
    version = versions.set_eval_set(check_ref(ref, "dataset version"), body.eval_set)
    return versions.describe(version)
