"""Data fidelity: KTO flags, typed content parts, reasoning, tool calls, loss weights, full-message
preference pairs and user columns are read as what they mean (or refused), and survive export.

Every shape here is written by the test itself, in the layouts other fine-tuning tools document.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oikyo.data import versions
from oikyo.data.digest import table_digest
from oikyo.data.export import export_version
from oikyo.data.ingest import convert_file
from oikyo.data.schema import ARROW_SCHEMA

Q = {"role": "user", "content": "Is the sky blue?"}


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _import(path, **options):
    return versions.import_dataset(path, **options)


def _rows(version):
    return list(versions.iter_rows(version))


def _round_trip(tmp_path, version, to: str, **options):
    """Export ``version`` to ``to`` and import the file again: the new version."""
    path, _ = export_version(version.id, to, tmp_path / f"export-{to}.jsonl")
    return _import(path, name=f"again-{to}", **options).version


# ----------------------------------------------------------------------------- KTO flags


def test_boolean_labels_are_kto_flags_not_classes(tmp_path):
    records = [
        {"messages": [Q, {"role": "assistant", "content": "Yes, on a clear day."}], "label": True},
        {"messages": [Q, {"role": "assistant", "content": "Purple, always."}], "label": False},
    ]
    outcome = _import(_jsonl(tmp_path / "kto.jsonl", records))
    version = outcome.version
    assert outcome.result.format == "kto" and version.kind == "unpaired_preference"
    rows = _rows(version)
    assert [r["desirable"] for r in rows] == [True, False]
    assert all("label" not in r for r in rows)
    for to in ("openai", "sharegpt", "jsonl"):
        again = _round_trip(tmp_path, version, to)
        assert again.content_hash == version.content_hash, to
        assert again.kind == "unpaired_preference"
    exported = json.loads(export_version(version.id, "openai", tmp_path / "o.jsonl")[0].read_text().splitlines()[1])
    assert exported["label"] is False  # the flag is written, not lost
    with pytest.raises(versions.DataError, match="alpaca"):
        export_version(version.id, "alpaca", tmp_path / "a.jsonl")


def test_trl_and_llamafactory_kto_layouts(tmp_path):
    trl = [{"prompt": "Is the sky blue?", "completion": "Yes.", "label": True},
           {"prompt": [Q], "completion": [{"role": "assistant", "content": "No."}], "label": False}]
    version = _import(_jsonl(tmp_path / "trl.jsonl", trl)).version
    assert version.kind == "unpaired_preference"
    assert [r["messages"][-1]["content"] for r in _rows(version)] == ["Yes.", "No."]
    llama = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "kto_tag": False}]
    assert [r["desirable"] for r in _rows(_import(_jsonl(tmp_path / "lf.jsonl", llama)).version)] == [False]


def test_true_false_text_labels_are_a_question(tmp_path):
    records = [{"messages": [Q, {"role": "assistant", "content": "yes"}], "label": "true"}] * 3
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "ask.jsonl", records))
    assert "--format kto" in failure.value.result.question and "--format openai" in failure.value.result.question
    kto = _import(tmp_path / "ask.jsonl", format="kto").version
    assert [r["desirable"] for r in _rows(kto)] == [True] * 3
    classes = _import(tmp_path / "ask.jsonl", format="openai", name="classes").version
    assert [r["label"] for r in _rows(classes)] == ["true"] * 3


def test_forcing_openai_on_kto_flags_stops(tmp_path):
    records = [{"messages": [Q, {"role": "assistant", "content": "yes"}], "label": True}]
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "flags.jsonl", records), format="openai")
    problem = failure.value.result.problems[0]
    assert problem.field == "label" and "--format kto" in problem.message


def test_kto_rows_must_end_with_the_judged_answer(tmp_path):
    records = [{"messages": [Q, {"role": "assistant", "content": "yes"}, {"role": "user", "content": "sure?"}],
                "label": True}]
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "open.jsonl", records))
    assert failure.value.result.problems[0].error == "no_assistant_turn"


# ----------------------------------------------------------------------------- content parts


def test_typed_parts_reasoning_and_tool_calls(tmp_path):
    anthropic_style = {"messages": [
        {"role": "user", "content": [{"type": "text", "value": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call the weather tool."},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "20 C"}]},
        {"role": "assistant", "content": "It is 20 degrees.", "weight": 0},
    ]}
    openai_style = {"messages": [
        {"role": "user", "content": "Weather in Rome?", "name": "ana"},
        {"role": "assistant", "content": None, "reasoning_content": "Call the tool.",
         "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "c9", "content": "25 C", "name": "weather"},
        {"role": "assistant", "content": "25 degrees.", "loss_weight": 0.5},
    ]}
    version = _import(_jsonl(tmp_path / "parts.jsonl", [anthropic_style, openai_style])).version
    first, second = (r["messages"] for r in _rows(version))
    assert first == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "reasoning": "I should call the weather tool."},
        {"role": "tool_call", "content": json.dumps({"name": "weather", "arguments": {"city": "Paris"}}),
         "tool_call_id": "call_1"},
        {"role": "tool", "content": "20 C", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 20 degrees.", "weight": 0.0},
    ]
    assert second[0] == {"role": "user", "content": "Weather in Rome?", "name": "ana"}
    assert second[1]["role"] == "tool_call" and second[1]["reasoning"] == "Call the tool."
    assert second[1]["tool_call_id"] == "c9"
    assert second[2] == {"role": "tool", "content": "25 C", "tool_call_id": "c9", "name": "weather"}
    assert second[3]["weight"] == 0.5
    for to in ("openai", "sharegpt", "jsonl"):
        assert _round_trip(tmp_path, version, to).content_hash == version.content_hash, to


@pytest.mark.parametrize(
    "message, error, field",
    [
        ({"role": "user", "content": "q", "weight": 1}, "wrong_type", "messages[0].weight"),
        ({"role": "assistant", "content": "a", "weight": -1}, "wrong_type", "messages[1].weight"),
        ({"role": "assistant", "content": "a", "weight": True}, "wrong_type", "messages[1].weight"),
        ({"role": "assistant", "content": [{"type": "image_url", "image_url": "x"}]}, "wrong_type", "messages[1].content[0].type"),
        ({"role": "assistant", "content": [{"type": "text", "text": "a", "cache": 1}]}, "unknown_field", "messages[1].content[0].cache"),
        ({"role": "user", "content": [{"type": "thinking", "thinking": "hm"}, "q"]}, "wrong_type", "messages[0]"),
    ],
)
def test_what_cannot_be_held_is_refused_with_its_path(tmp_path, message, error, field):
    messages = [message, {"role": "assistant", "content": "a"}] if message["role"] == "user" else [Q, message]
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "bad.jsonl", [{"messages": messages}]))
    problem = failure.value.result.problems[0]
    assert (problem.error, problem.field, problem.line) == (error, field, 1)


# ----------------------------------------------------------------------------- preference pairs


def test_full_message_preference_pairs(tmp_path):
    good, bad = {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Green."}
    records = [
        {"chosen_messages": [{"role": "system", "content": "Be brief."}, Q, good],
         "rejected_messages": [{"role": "system", "content": "Be brief."}, Q, bad]},
        {"chosen": [Q, good], "rejected": [Q, bad]},  # TRL's implicit prompt
    ]
    version = _import(_jsonl(tmp_path / "pairs.jsonl", records)).version
    assert version.kind == "preference"
    rows = _rows(version)
    assert rows[0] == {"messages": [{"role": "system", "content": "Be brief."}, Q], "chosen": "Blue.", "rejected": "Green."}
    assert rows[1] == {"messages": [Q], "chosen": "Blue.", "rejected": "Green."}
    assert _round_trip(tmp_path, version, "openai").content_hash == version.content_hash


def test_full_message_pairs_that_differ_earlier_are_refused(tmp_path):
    records = [{"chosen_messages": [Q, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
                                    {"role": "assistant", "content": "c"}],
                "rejected_messages": [Q, {"role": "assistant", "content": "x"}]}]
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "pairs.jsonl", records))
    assert "share every turn but the last" in failure.value.result.problems[0].message


# ----------------------------------------------------------------------------- user columns


def _with_id(i: int) -> dict:
    return {"id": f"row-{i}", "source": "forum", "messages": [Q, {"role": "assistant", "content": f"answer {i}"}]}


def test_an_unexpected_column_is_refused_with_its_name(tmp_path):
    with pytest.raises(versions.ImportFailed) as failure:
        _import(_jsonl(tmp_path / "ids.jsonl", [_with_id(i) for i in range(3)]))
    problem = failure.value.result.problems[0]
    assert problem.error == "unknown_field" and problem.field == "id" and problem.line == 1
    assert "--keep id" in problem.message and "--drop id" in problem.message


def test_keep_stores_columns_as_metadata_and_export_keeps_them(tmp_path):
    path = _jsonl(tmp_path / "ids.jsonl", [_with_id(i) for i in range(3)])
    version = _import(path, keep=["id", "source"]).version
    rows = _rows(version)
    assert json.loads(rows[1]["metadata"]) == {"id": "row-1", "source": "forum"}
    assert version.lineage["options"]["keep"] == ["id", "source"]
    exported = export_version(version.id, "openai", tmp_path / "o.jsonl")[0].read_text().splitlines()
    assert json.loads(exported[2])["metadata"] == {"id": "row-2", "source": "forum"}
    for to in ("openai", "sharegpt", "jsonl"):
        assert _round_trip(tmp_path, version, to).content_hash == version.content_hash, to


def test_drop_leaves_columns_out_and_the_lineage_says_so(tmp_path):
    path = _jsonl(tmp_path / "ids.jsonl", [_with_id(i) for i in range(3)])
    version = _import(path, drop=["id"], keep=["source"]).version
    assert version.lineage["options"]["drop"] == ["id"] and version.lineage["options"]["keep"] == ["source"]
    assert all(json.loads(r["metadata"]) == {"source": "forum"} for r in _rows(version))
    with pytest.raises(versions.DataError, match="both --keep and --drop"):
        _import(path, drop=["id"], keep=["id"])


def test_keep_and_drop_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from oikyo.cli.main import app

    path = _jsonl(tmp_path / "ids.jsonl", [_with_id(i) for i in range(3)])
    runner = CliRunner()
    refused = runner.invoke(app, ["data", "import", str(path), "--no-report"])
    assert refused.exit_code == 1 and "id" in refused.output and "--keep" in refused.output
    kept = runner.invoke(app, ["data", "import", str(path), "--keep", "id", "--drop", "source", "--no-report"])
    assert kept.exit_code == 0, kept.output


# ----------------------------------------------------------------------------- content hash


def test_versions_without_the_new_fields_keep_their_hash():
    """A table written before the message extras and new columns existed hashes as it always did."""
    old_message = pa.struct([("role", pa.string()), ("content", pa.string())])
    old_schema = pa.schema([("messages", pa.list_(old_message))] + [
        (name, pa.string()) for name in ("text", "chosen", "rejected", "tools", "label", "split")])
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": str(i)}]} for i in range(5)]
    old = pa.Table.from_pylist(rows, schema=old_schema)
    new = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
    assert table_digest([old]) == table_digest([new])


def test_weights_and_their_position_change_the_hash():
    base = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 3
    plain = table_digest([pa.Table.from_pylist(base, schema=ARROW_SCHEMA)])
    hashes = {plain}
    for where in range(3):
        rows = [dict(r) for r in base]
        rows[where] = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.0}]}
        table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
        whole = table_digest([table])
        assert whole == table_digest([table.slice(0, 1), table.slice(1, 1), table.slice(2)])  # any chunking
        hashes.add(whole)
    assert len(hashes) == 4


# ----------------------------------------------------------------------------- round trips (property)

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: not s.isspace()
)


@st.composite
def conversations(draw):
    """A random conversation using the new message fields, with optional tools, label and metadata."""
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts)})
    for _ in range(draw(st.integers(1, 3))):
        user = {"role": "user", "content": draw(texts)}
        if draw(st.booleans()):
            user["name"] = draw(texts)
        messages.append(user)
        if draw(st.booleans()):
            call = {"role": "tool_call", "content": json.dumps({"name": draw(texts), "arguments": {"x": draw(texts)}})}
            if draw(st.booleans()):
                call["tool_call_id"] = draw(texts)
            messages.append(call)
            messages.append({"role": "tool", "content": draw(texts)})
        answer = {"role": "assistant", "content": draw(texts)}
        if draw(st.booleans()):
            answer["reasoning"] = draw(texts)
        if draw(st.booleans()):
            answer["weight"] = draw(st.sampled_from([0.0, 1.0, 0.25, 2.0]))
        messages.append(answer)
    row = {"messages": messages}
    if draw(st.booleans()):
        row["metadata"] = {"id": draw(texts), "n": draw(st.integers(0, 9))}
    return row


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(conversations(), min_size=1, max_size=4), to=st.sampled_from(["openai", "sharegpt", "jsonl"]),
       kto=st.booleans())
def test_import_export_import_gives_the_same_version(tmp_path_factory, records, to, kto):
    folder = tmp_path_factory.mktemp("roundtrip")
    if kto:
        records = [dict(r, label=i % 2 == 0) for i, r in enumerate(records)]
    first = convert_file(_jsonl(folder / "in.jsonl", records), folder / "first.parquet")
    assert first.ok, first.problems
    version = _import(folder / "in.jsonl", name="rt").version
    path, _ = export_version(version.id, to, folder / "out.jsonl")
    second = convert_file(path, folder / "second.parquet")
    assert second.ok, second.problems
    assert second.content_hash == first.content_hash


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(st.lists(texts, min_size=1, max_size=3), min_size=1, max_size=3),
       answers=st.lists(st.tuples(texts, texts), min_size=3, max_size=3),
       to=st.sampled_from(["openai", "sharegpt", "jsonl"]))
def test_full_message_pairs_round_trip(tmp_path_factory, prompts, answers, to):
    folder = tmp_path_factory.mktemp("pairs")
    records = []
    for turns, (good, bad) in zip(prompts, answers):
        prompt = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
        if prompt[-1]["role"] != "user":
            prompt.append({"role": "user", "content": "and?"})
        records.append({"chosen_messages": prompt + [{"role": "assistant", "content": good}],
                        "rejected_messages": prompt + [{"role": "assistant", "content": bad}]})
    first = convert_file(_jsonl(folder / "in.jsonl", records), folder / "first.parquet")
    assert first.ok and first.kind == "preference", first.problems
    version = _import(folder / "in.jsonl", name="pairs").version
    path, _ = export_version(version.id, to, folder / "out.jsonl")
    second = convert_file(path, folder / "second.parquet")
    assert second.ok, second.problems
    assert second.content_hash == first.content_hash
