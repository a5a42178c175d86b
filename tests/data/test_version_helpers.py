"""The small service functions the REST API and the CLI share: --map parsing, row pages, the report."""

from __future__ import annotations

import json

import pytest

from oikyo.data import quality, split, versions


def test_parse_mapping():
    assert versions.parse_mapping(["instruction=question", " output = answer "]) == {
        "instruction": "question", "output": "answer"}
    assert versions.parse_mapping([]) == {}
    for bad in ("nonsense", "=col", "field=", "field= "):
        with pytest.raises(versions.DataError, match="field=column"):
            versions.parse_mapping([bad])


def test_default_name():
    from pathlib import Path

    assert versions.default_name(Path("support tickets.jsonl.gz")) == "support-tickets"
    assert versions.default_name(Path("...")) == "dataset"


@pytest.fixture
def version(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)))
    return versions.import_dataset(path, name="rows").version


def test_page_rows(version):
    every = list(versions.iter_rows(version))
    assert versions.page_rows(version, offset=0, limit=5) == every[:5]
    assert versions.page_rows(version, offset=18, limit=5) == every[18:]
    assert versions.page_rows(version, offset=50, limit=5) == []
    assert versions.page_rows(version, offset=3, limit=0) == []
    with pytest.raises(versions.DataError):
        versions.page_rows(version, offset=-1)
    parted, _ = split.split_dataset(version.id, validation=0.25, test=0.0, seed=1)
    validation = versions.page_rows(parted, split="validation", offset=1, limit=100)
    assert len(validation) == parted.splits["validation"] - 1
    assert all(r["split"] == "validation" for r in validation)


def test_quality_report_checks_leakage_into_eval_sets(version, tmp_path):
    report = versions.quality_report(version)
    expected = quality.build_report(versions.iter_rows(version), version.kind)
    report.pop("seconds"), expected.pop("seconds")
    assert report == expected
    held_out = tmp_path / "held.jsonl"
    held_out.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)))
    versions.import_dataset(held_out, name="held", eval_set=True)
    leaked = versions.quality_report(version)
    assert leaked != report and "held" in json.dumps(leaked)
