"""REST routes: hyperparameter studies (read-only): list, one study's report, its plots as PNG.

Adapts :mod:`oikyo.tune.report` (the same report `oikyo tune show` prints) and
:mod:`oikyo.tune.study` (the list). Studies are started with `oikyo tune`, which drives them.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from oikyo.api.refs import check_ref

router = APIRouter(tags=["studies"])


@router.get("/studies")
async def list_studies(limit: int = Query(100, ge=1, le=1000)) -> dict:
    """Tuning studies, newest first, each with its trial counts and best trials."""
    from oikyo.tune import study as studies

    def read() -> list[dict]:
        return [studies.describe(record) for record in studies.list_studies(limit=limit)]

    return {"studies": await run_in_threadpool(read)}


@router.get("/studies/{study_ref}")
async def show_study(study_ref: str) -> dict:
    """One study: its record, trials, best trial or Pareto front, importances, history, promotions, plots."""
    from oikyo.tune import report

    check_ref(study_ref, "study")
    return await run_in_threadpool(report.study_report, study_ref)


@router.get("/studies/{study_ref}/plots/{name}", response_class=FileResponse)
async def study_plot(study_ref: str, name: str) -> FileResponse:
    """One plot of the study as a PNG image (history, importances, parallel_coordinates, pareto_front ...)."""
    from oikyo.tune import report

    check_ref(study_ref, "study")
    path = await run_in_threadpool(report.plot_file, study_ref, name.removesuffix(".png"))
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})
