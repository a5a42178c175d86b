"""The run page's chart keeps one point per step, the newest (issue 22): when a resumed run reports
steps again, ``LineChart.add`` replaces them and drops the lost attempt's later points. Runs
``static/charts.js`` under Node (skipped without it), with ``add`` called on a bare chart object."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CHARTS = Path(__file__).resolve().parents[2] / "src" / "oikyo" / "web" / "static" / "charts.js"

SCRIPT = """
const fs = require("fs");
const charts = new Function(fs.readFileSync(process.argv[1], "utf8") + "\\nreturn charts;")();
const chart = Object.create(charts.LineChart.prototype);
chart.series = new Map();
chart.schedule = () => {};
for (const [x, y] of JSON.parse(process.argv[2])) chart.add("loss", x, y);
console.log(JSON.stringify(chart.series.get("loss")));
"""


def _points(added: list[list[float]]) -> list[list[float]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    out = subprocess.run([node, "-e", SCRIPT, str(CHARTS), json.dumps(added)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def test_a_resumed_run_replaces_the_lost_attempts_points():
    # steps 1-5 from the first attempt, which died; the next resumed from step 3 and reported 4, 5, 6
    added = [[1, 9], [2, 8], [3, 7], [4, 6], [5, 5], [4, 4.5], [5, 4.4], [6, 4.3]]
    assert _points(added) == [[1, 9], [2, 8], [3, 7], [4, 4.5], [5, 4.4], [6, 4.3]]


def test_a_resume_before_the_last_point_drops_the_points_after_it():
    # the second attempt resumed from step 2 and has reported step 3 only: steps 4 and 5 are gone
    assert _points([[1, 9], [2, 8], [3, 7], [4, 6], [5, 5], [3, 6.5]]) == [[1, 9], [2, 8], [3, 6.5]]


def test_the_last_step_reported_again_is_replaced():
    assert _points([[1, 9], [2, 8], [2, 7.5], [3, 7]]) == [[1, 9], [2, 7.5], [3, 7]]
