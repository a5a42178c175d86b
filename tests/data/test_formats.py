"""Format detection and conversion: the real sample files, every format, --map and ambiguity."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from oikyo.data import formats
from oikyo.data.formats.base import Format, require_text
from oikyo.data.ingest import available_formats, convert_file, detect_format
from oikyo.data.schema import compact_row


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    """Rows read back from a Parquet file, without the columns that are null."""
    return [compact_row(row) for row in pq.read_table(path).to_pylist()]


def convert(tmp_path: Path, records: list, **kwargs):
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.parquet"
    result = convert_file(src, out, **kwargs)
    return result, (rows_of(out) if result.ok else None)


# ---------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name, fmt, kind, rows",
    [
        ("alpaca_en_demo.json", "alpaca", "conversations", 999),
        ("identity.json", "alpaca", "conversations", 91),
        ("glaive_toolcall_en_demo.json", "sharegpt", "conversations", 300),
        ("dpo_en_demo.json", "preference", "preference", 300),
        ("c4_demo.jsonl", "text", "text", 300),
    ],
)
def test_real_files_import_with_the_right_format(shared_datasets, tmp_path, name, fmt, kind, rows):
    out = tmp_path / "out.parquet"
    assert detect_format(shared_datasets / name) == (fmt, None)
    result = convert_file(shared_datasets / name, out)
    assert result.ok, result.problems[:3]
    assert (result.format, result.kind, result.rows) == (fmt, kind, rows)
    assert result.problem_counts == {} and result.problems == []
    assert pq.read_metadata(out).num_rows == rows


def test_glaive_keeps_tools_and_tool_call_turns(shared_datasets, tmp_path):
    out = tmp_path / "out.parquet"
    assert convert_file(shared_datasets / "glaive_toolcall_en_demo.json", out).ok
    rows = rows_of(out)
    source = json.loads((shared_datasets / "glaive_toolcall_en_demo.json").read_text())
    first = rows[0]
    assert first["tools"] == source[0]["tools"]  # the user's tool text, unchanged
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["user", "assistant", "user", "tool_call", "tool", "assistant", "user", "assistant"]
    call = json.loads(first["messages"][3]["content"])
    assert call["name"] == "search_recipes" and "arguments" in call
    # "[]" means no tools offered: stored as null, not as an empty list.
    assert any("tools" not in row for row in rows)


def test_dpo_rows_have_prompt_chosen_rejected(shared_datasets, tmp_path):
    out = tmp_path / "out.parquet"
    assert convert_file(shared_datasets / "dpo_en_demo.json", out).ok
    source = json.loads((shared_datasets / "dpo_en_demo.json").read_text())
    row = rows_of(out)[0]
    assert row["chosen"] == source[0]["chosen"]["value"]
    assert row["rejected"] == source[0]["rejected"]["value"]
    assert row["messages"] == [{"role": "user", "content": source[0]["conversations"][0]["value"]}]


def test_alpaca_demo_joins_instruction_and_input(shared_datasets, tmp_path):
    out = tmp_path / "out.parquet"
    assert convert_file(shared_datasets / "alpaca_en_demo.json", out).ok
    source = json.loads((shared_datasets / "alpaca_en_demo.json").read_text())
    i = next(i for i, r in enumerate(source) if r["input"])
    user, assistant = rows_of(out)[i]["messages"]
    assert user == {"role": "user", "content": source[i]["instruction"] + "\n\n" + source[i]["input"]}
    assert assistant == {"role": "assistant", "content": source[i]["output"]}


# ---------------------------------------------------------------------------- each format


def test_openai_tool_calls_become_tool_call_turns(tmp_path):
    record = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
            {"role": "assistant", "content": "It rains."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
    }
    result, rows = convert(tmp_path, [record])
    assert result.ok and result.format == "openai"
    messages = rows[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "tool_call", "tool", "assistant"]
    assert json.loads(messages[2]["content"]) == {"name": "weather", "arguments": {"city": "Oslo"}}
    assert messages[1]["content"] == "weather?"
    assert json.loads(rows[0]["tools"]) == record["tools"]


def test_sharegpt_roles_and_system(tmp_path):
    record = {
        "system": "sys",
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "b"},
            {"from": "user", "value": "c"},
            {"from": "assistant", "value": "d"},
        ],
        "tools": [{"name": "f"}],
    }
    result, rows = convert(tmp_path, [record])
    assert result.ok and result.format == "sharegpt"
    roles = [m["role"] for m in rows[0]["messages"]]
    assert roles == ["system", "user", "tool_call", "tool", "assistant", "user", "assistant"]
    assert rows[0]["messages"][0]["content"] == "sys"
    assert json.loads(rows[0]["tools"]) == [{"name": "f"}]


def test_alpaca_history_system_and_empty_input(tmp_path):
    records = [
        {"instruction": "q", "input": "", "output": "a"},
        {"instruction": "q", "input": "ctx", "output": "a", "system": "s", "history": [["h1", "r1"]]},
    ]
    result, rows = convert(tmp_path, records)
    assert result.ok and result.format == "alpaca"
    assert rows[0]["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert rows[1]["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "h1"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "q\n\nctx"},
        {"role": "assistant", "content": "a"},
    ]


def test_prompt_completion_and_text(tmp_path):
    result, rows = convert(tmp_path, [{"prompt": "p", "completion": "c"}])
    assert result.format == "prompt_completion"
    assert rows == [{"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]}]
    result, rows = convert(tmp_path, [{"text": "plain"}])
    assert (result.format, result.kind, rows) == ("text", "text", [{"text": "plain"}])


def test_classification_sets_label_and_beats_text(tmp_path):
    result, rows = convert(tmp_path, [{"text": "good film", "label": 1}, {"text": "bad", "label": "neg"}])
    assert result.ok and result.format == "classification" and result.kind == "conversations"
    assert rows[0] == {
        "messages": [{"role": "user", "content": "good film"}, {"role": "assistant", "content": "1"}],
        "label": "1",
    }
    assert rows[1]["label"] == "neg"


@pytest.mark.parametrize(
    "record",
    [
        {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "y"},
         "rejected": {"from": "gpt", "value": "n"}},
        {"prompt": "q", "chosen": "y", "rejected": "n"},
        {"messages": [{"role": "user", "content": "q"}], "chosen": "y", "rejected": "n"},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "y"}],
         "rejected": [{"role": "assistant", "content": "n"}]},
    ],
)  # fmt: skip
def test_preference_shapes(tmp_path, record):
    result, rows = convert(tmp_path, [record])
    assert result.ok and (result.format, result.kind) == ("preference", "preference")
    assert rows == [{"messages": [{"role": "user", "content": "q"}], "chosen": "y", "rejected": "n"}]


# ---------------------------------------------------------------------------- detection


def test_available_formats_lists_the_registry():
    assert set(available_formats()) == {
        "openai", "sharegpt", "alpaca", "prompt_completion", "text", "preference", "kto", "classification",
    }  # fmt: skip


def test_csv_question_answer_is_a_question_not_a_guess(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n")
    result = convert_file(src, tmp_path / "out.parquet")
    assert not result.ok and result.format is None
    assert result.problem_counts == {"ambiguous_format": 1}
    assert "question, answer" in result.question
    assert "--format alpaca --map instruction=question --map output=answer" in result.question
    assert "--format prompt_completion --map prompt=question --map completion=answer" in result.question
    assert {"format": "alpaca", "mapping": {"instruction": "question", "output": "answer"},
            "flags": "--format alpaca --map instruction=question --map output=answer"} in result.suggestions  # fmt: skip
    assert not (tmp_path / "out.parquet").exists()
    assert detect_format(src) == (None, result.question)

    # The suggested flags work.
    out = tmp_path / "out.parquet"
    mapped = convert_file(src, out, mapping={"instruction": "question", "output": "answer"})
    assert mapped.ok and mapped.format == "alpaca" and mapped.rows == 2
    assert rows_of(out)[1]["messages"][1] == {"role": "assistant", "content": "Paris"}
    assert detect_format(src, {"instruction": "question", "output": "answer"}) == ("alpaca", None)


def test_two_incomparable_formats_are_ambiguous(tmp_path):
    records = [{"instruction": "a", "output": "b", "prompt": "c", "completion": "d"}] * 3
    result, _ = convert(tmp_path, records)
    assert not result.ok and result.problems[0].error == "ambiguous_format"
    assert "alpaca" in result.question and "prompt_completion" in result.question
    assert "--format alpaca" in result.question
    # Naming the format settles it; the other columns are then unknown fields.
    result, _ = convert(tmp_path, records, format="prompt_completion")
    assert result.format == "prompt_completion"
    assert result.problem_counts == {"unknown_field": 3, "too_few_examples": 1}


def test_more_specific_format_wins(tmp_path):
    pairs = [{"conversations": [{"from": "human", "value": "q"}], "chosen": "y", "rejected": "n"}]
    assert convert(tmp_path, pairs)[0].format == "preference"
    assert convert(tmp_path, [{"text": "t", "label": "l"}])[0].format == "classification"


def test_a_few_odd_records_do_not_change_the_detected_format(tmp_path):
    records = [{"instruction": "q", "output": "a"}] * 20 + [{"text": "stray"}]
    result, _ = convert(tmp_path, records)
    assert result.format == "alpaca"
    assert result.problems[0].line == 21 and result.problems[0].error == "missing_field"


def test_nothing_matches_lists_the_formats(tmp_path):
    result, _ = convert(tmp_path, [{"foo": 1, "bar": 2}])
    assert not result.ok and result.problem_counts == {"ambiguous_format": 1}
    assert "foo, bar" in result.question
    for name in available_formats():
        assert name in result.question


def test_unknown_format_name_is_a_problem_not_a_crash(tmp_path):
    result, _ = convert(tmp_path, [{"text": "x"}], format="nope")
    assert not result.ok and result.problem_counts == {"ambiguous_format": 1}
    assert "alpaca" in result.question


def test_map_renames_columns_and_reports_source_names(tmp_path):
    records = [{"q": "a", "a": "b"}, {"q": "", "a": "b"}]
    result, _ = convert(tmp_path, records, mapping={"instruction": "q", "output": "a"})
    assert result.format == "alpaca"
    assert [(p.line, p.error, p.field) for p in result.problems] == [(2, "empty_content", "q")]


def test_map_can_swap_two_columns(tmp_path):
    result, rows = convert(tmp_path, [{"prompt": "answer", "completion": "question"}],
                           mapping={"prompt": "completion", "completion": "prompt"})  # fmt: skip
    assert result.ok
    assert rows[0]["messages"][0] == {"role": "user", "content": "question"}


def _shout(rec: dict) -> dict:
    return {"text": require_text(rec.get("words"), "words").upper()}


def test_a_new_format_is_one_registered_module(tmp_path):
    fmt = Format(name="shout", kind="text", variants=(("words",),), optional=frozenset(), convert=_shout)
    formats.register(fmt)
    try:
        result, rows = convert(tmp_path, [{"words": "hi"}])
        assert result.format == "shout" and rows == [{"text": "HI"}]
        assert "shout" in available_formats()
    finally:
        del formats.FORMATS["shout"]


def test_row_bytes_is_sorted_compact_json_without_nulls():
    from oikyo.data.ingest import row_bytes

    row = {"text": "é", "messages": None, "label": None}
    assert row_bytes(row) == orjson.dumps({"text": "é"})
    assert row_bytes({"b": "1", "a": "2"}) == b'{"a":"2","b":"1"}'


@pytest.mark.parametrize(
    "name", ["alpaca_en_demo.json", "glaive_toolcall_en_demo.json", "dpo_en_demo.json", "c4_demo.jsonl"]
)
def test_oikyo_parquet_imports_again_with_the_same_hash(shared_datasets, tmp_path, name):
    first = convert_file(shared_datasets / name, tmp_path / "first.parquet")
    again = convert_file(tmp_path / "first.parquet", tmp_path / "again.parquet")
    assert first.ok and again.ok, again.problems[:3]
    assert again.kind == first.kind and again.rows == first.rows
    assert again.content_hash == first.content_hash
