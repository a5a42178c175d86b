"""Dataset versions in the store: immutable, content-addressed, with lineage; split; export."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from oikyo.data import versions
from oikyo.data.export import export_version
from oikyo.data.split import split_dataset
from oikyo.store import db
from oikyo.store.models import DatasetVersion


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _chat(i: int, label: str | None = None) -> dict:
    record = {"messages": [{"role": "user", "content": f"question number {i} about item {i * 7}"},
                           {"role": "assistant", "content": f"answer {i}"}]}
    return record


def _count_versions() -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(DatasetVersion))


def test_same_content_twice_gives_the_same_version(tmp_path):
    records = [_chat(i) for i in range(20)]
    first = versions.import_dataset(_write_jsonl(tmp_path / "a.jsonl", records), name="chat")
    # The same rows from a JSON array with other whitespace: same content, same version.
    (tmp_path / "b.json").write_text(json.dumps(records, indent=2))
    second = versions.import_dataset(tmp_path / "b.json", name="chat")
    assert not first.existed and second.existed
    assert first.version.id == second.version.id == first.version.content_hash[:12]
    assert _count_versions() == 1
    lineage = first.version.lineage
    assert lineage["operation"] == "import" and lineage["source"]["path"].endswith("a.jsonl")
    assert len(lineage["source"]["sha256"]) == 64 and lineage["options"]["detected_format"] == "openai"


def test_different_content_gives_a_new_version_and_resolve_finds_both(tmp_path):
    v1 = versions.import_dataset(_write_jsonl(tmp_path / "a.jsonl", [_chat(i) for i in range(5)]), name="chat").version
    v2 = versions.import_dataset(_write_jsonl(tmp_path / "b.jsonl", [_chat(i) for i in range(6)]), name="chat").version
    assert v1.id != v2.id
    assert versions.resolve("chat").id == v2.id  # a name means its newest version
    assert versions.resolve(f"chat@{v1.id[:6]}").id == v1.id
    assert versions.resolve(v1.id[:8]).id == v1.id
    with pytest.raises(versions.DataError, match="no dataset version matches"):
        versions.resolve("nope")


def test_failed_import_stores_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(versions.ImportFailed) as failure:
        versions.import_dataset(bad)
    assert failure.value.result.problem_counts
    assert _count_versions() == 0
    artifacts_dir = versions.artifacts.path_of("sha256")
    assert not artifacts_dir.exists() or not any(artifacts_dir.rglob("*.parquet"))
    assert list(versions.artifacts.workspace.subdir("tmp").iterdir()) == []


def test_skip_mode_keeps_valid_rows_and_records_dropped_ones(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(_chat(1)) + "\n{broken\n" + json.dumps(_chat(2)) + "\n")
    outcome = versions.import_dataset(path, on_error="skip")
    assert outcome.version.rows == 2 and outcome.result.dropped == 1
    dropped = versions.dropped_rows(outcome.version)
    assert dropped[0]["line"] == 2 and dropped[0]["error"] == "invalid_json"


def test_rows_round_trip_through_parquet(tmp_path):
    records = [_chat(i) for i in range(3)]
    version = versions.import_dataset(_write_jsonl(tmp_path / "a.jsonl", records)).version
    rows = list(versions.iter_rows(version))
    assert [r["messages"] for r in rows] == [r["messages"] for r in records]
    assert pq.ParquetFile(versions.parquet_path(version)).metadata.num_rows == 3


def _classification(n_per_label: dict[str, int], duplicates: int = 0) -> list[dict]:
    records, i = [], 0
    for label, n in n_per_label.items():
        for _ in range(n):
            records.append({"text": f"message {i} with words {i * 13} and {i * 31}", "label": label})
            i += 1
    records += [dict(records[k]) for k in range(duplicates)]  # exact copies of the first rows
    return records


def test_split_is_deterministic_stratified_and_keeps_duplicates_together(tmp_path):
    records = _classification({"a": 60, "b": 30, "c": 10}, duplicates=10)
    version = versions.import_dataset(_write_jsonl(tmp_path / "cls.jsonl", records)).version
    assert version.kind == "conversations"
    split1, existed1 = split_dataset(version.id, validation=0.1, test=0.2, seed=3)
    split2, existed2 = split_dataset(version.id, validation=0.1, test=0.2, seed=3)
    assert split1.id == split2.id and not existed1 and existed2
    assert split1.parent_id == version.id and split1.lineage["seed"] == 3
    assert split_dataset(version.id, validation=0.1, test=0.2, seed=4)[0].id != split1.id

    rows = list(versions.iter_rows(split1))
    assert len(rows) == 110 and sum(split1.splits.values()) == 110
    # duplicates never straddle splits
    by_text = defaultdict(set)
    for row in rows:
        by_text[row["messages"][0]["content"]].add(row["split"])
    assert all(len(s) == 1 for s in by_text.values())
    # stratified: each label's share of the test split is close to its share overall
    test_labels = Counter(r["label"] for r in rows if r["split"] == "test")
    assert sum(test_labels.values()) in range(20, 25)
    for label, total in Counter(r["label"] for r in rows).items():
        assert abs(test_labels[label] - 0.2 * total) <= 3, (label, test_labels)
    assert len(list(versions.iter_rows(split1, split="validation"))) == split1.splits["validation"]


def test_prompt_duplicates_with_other_answers_stay_in_one_split(tmp_path):
    records = [{"prompt": f"prompt {i % 10}", "completion": f"completion {i}"} for i in range(60)]
    version = versions.import_dataset(_write_jsonl(tmp_path / "pc.jsonl", records)).version
    split, _ = split_dataset(version.id, validation=0.2, test=0.2, seed=0)
    by_prompt = defaultdict(set)
    for row in versions.iter_rows(split):
        by_prompt[row["messages"][0]["content"]].add(row["split"])
    assert all(len(s) == 1 for s in by_prompt.values())
    assert set(split.splits) == {"train", "validation", "test"}


def test_split_rejects_bad_fractions(tmp_path):
    version = versions.import_dataset(_write_jsonl(tmp_path / "a.jsonl", [_chat(i) for i in range(10)])).version
    with pytest.raises(versions.DataError, match="fractions"):
        split_dataset(version.id, validation=0.6, test=0.5)
    with pytest.raises(versions.DataError, match="labelled"):
        split_dataset(version.id, stratify="yes")


def test_export_formats_round_trip(tmp_path):
    records = [{"instruction": f"Say {i}", "input": "", "output": f"{i}", "system": "Be brief."} for i in range(8)]
    version = versions.import_dataset(_write_jsonl(tmp_path / "alpaca.jsonl", records), name="alpaca").version
    (tmp_path / "out").mkdir()
    for target in ("openai", "sharegpt", "alpaca", "jsonl", "parquet"):
        path, count = export_version(version.id, target, tmp_path / "out")
        assert count == 8 and path.exists() and not list(path.parent.glob(".*partial"))
        again = versions.import_dataset(path, name=f"again-{target}")
        # Every export imports back to exactly the same content.
        assert again.version.content_hash == version.content_hash, target
    alpaca_rows = [json.loads(line) for line in (tmp_path / "out" / f"alpaca-{version.id}.alpaca.jsonl").read_text().splitlines()]
    assert alpaca_rows[0] == records[0]


def test_export_of_tool_calls_to_openai_uses_tool_calls(tmp_path):
    record = {"conversations": [
        {"from": "human", "value": "weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": json.dumps({"temp": 20})},
        {"from": "gpt", "value": "It is 20 degrees."}], "tools": json.dumps([{"name": "weather"}])}
    version = versions.import_dataset(_write_jsonl(tmp_path / "tools.jsonl", [record, record | {"tools": "[]"}])).version
    path, _ = export_version(version.id, "openai", tmp_path / "tools-openai.jsonl")
    exported = json.loads(path.read_text().splitlines()[0])
    call = exported["messages"][1]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "weather"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert exported["messages"][2]["role"] == "tool"
    with pytest.raises(versions.DataError, match="alpaca cannot hold tool calls"):
        export_version(version.id, "alpaca", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.postgres
def test_import_split_export_on_postgresql(postgres_url, tmp_path):
    records = _classification({"x": 20, "y": 20})
    outcome = versions.import_dataset(_write_jsonl(tmp_path / "cls.jsonl", records), name="pg")
    assert db.engine().dialect.name == "postgresql"
    again = versions.import_dataset(_write_jsonl(tmp_path / "cls2.jsonl", records), name="pg")
    assert again.existed and again.version.id == outcome.version.id
    split, _ = split_dataset("pg", seed=1)
    assert versions.resolve("pg").id == split.id and sum(split.splits.values()) == 40
    path, count = export_version("pg", "jsonl", tmp_path / "pg.jsonl", split="train")
    assert count == split.splits["train"]


def test_template_siblings_stay_in_one_split(tmp_path):
    # Rows that differ only in an order number are one example for leakage purposes.
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
    records = []
    for template in range(12):
        sentence = " ".join(words[(template + k * 5) % len(words)] + str(template) for k in range(9))
        for n in range(5):
            records.append({"prompt": f"template {template}: {sentence}, order {1000 * template + n}",
                            "completion": f"answer {template}-{n}"})
    version = versions.import_dataset(_write_jsonl(tmp_path / "t.jsonl", records)).version
    split, _ = split_dataset(version.id, validation=0.2, test=0.2, seed=0)
    by_template = defaultdict(set)
    for row in versions.iter_rows(split):
        by_template[row["messages"][0]["content"].split()[1]].add(row["split"])
    assert all(len(s) == 1 for s in by_template.values()), by_template
    assert {"train", "test"} <= set(split.splits)


def test_drop_leaves_out_extra_columns(tmp_path):
    records = [{"id": i, "url": f"https://example.com/{i}", "text": f"document {i}"} for i in range(5)]
    path = _write_jsonl(tmp_path / "web.jsonl", records)
    with pytest.raises(versions.ImportFailed) as failure:
        versions.import_dataset(path)
    assert "--drop" in failure.value.result.problems[0].message
    outcome = versions.import_dataset(path, drop=["id", "url"])
    assert outcome.result.format == "text" and outcome.version.rows == 5
    assert outcome.version.lineage["options"]["drop"] == ["id", "url"]
    assert list(versions.iter_rows(outcome.version))[0] == {"text": "document 0"}


def test_split_and_export_hash_like_an_import(tmp_path):
    version = versions.import_dataset(_write_jsonl(tmp_path / "a.jsonl", [_chat(i) for i in range(12)])).version
    split, _ = split_dataset(version.id, seed=0)
    path, _ = export_version(split.id, "parquet", tmp_path / "split.parquet")
    # The split's Parquet file, imported, is the split version itself (one definition of the hash).
    assert versions.import_dataset(path).version.id == split.id


def test_a_file_that_is_already_split_keeps_its_split(tmp_path):
    records = [{"text": f"doc {i}", "split": "train" if i < 4 else "test"} for i in range(6)]
    version = versions.import_dataset(_write_jsonl(tmp_path / "pre.jsonl", records)).version
    assert version.splits == {"train": 4, "test": 2}
    assert [r["text"] for r in versions.iter_rows(version, split="test")] == ["doc 4", "doc 5"]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "split": "dev"}])
    with pytest.raises(versions.ImportFailed) as failure:
        versions.import_dataset(bad)
    assert failure.value.result.problems[0].field == "split"
