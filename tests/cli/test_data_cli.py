"""`oikyo data ...` as a user runs it: real processes, exit codes, readable messages, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def oikyo(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def test_help_lists_every_data_command():
    result = oikyo("data", "--help")
    assert result.returncode == 0
    for command in ("import", "report", "list", "show", "split", "export", "eval-set"):
        assert command in result.stdout
    for command in ("import", "report", "list", "show", "split", "export", "eval-set"):
        sub = oikyo("data", command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, command


def test_import_report_split_export_flow(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": str(2 * i)}]} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    imported = oikyo("data", "import", str(path), "--name", "sums")
    _no_traceback(imported)
    assert imported.returncode == 0, imported.stderr
    assert "Detected format: openai" in imported.stdout and "30 rows" in imported.stdout

    listed = oikyo("data", "list", "--json")
    [version] = json.loads(listed.stdout)
    assert version["name"] == "sums" and version["rows"] == 30

    report = oikyo("data", "report", "sums", "--json")
    assert report.returncode == 0 and json.loads(report.stdout)

    split = oikyo("data", "split", "sums", "--seed", "1")
    assert split.returncode == 0 and "train" in split.stdout
    out = tmp_path / "train.jsonl"
    exported = oikyo("data", "export", "sums", "--to", "openai", "--split", "train", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(out.read_text().splitlines()) == json.loads(oikyo("data", "show", "sums", "--json").stdout)["splits"]["train"]


def test_invalid_file_exits_1_with_line_numbers_and_stores_nothing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"messages": [{"role": "wizard", "content": "hi"}]}\n'
                    "not json at all\n")
    result = oikyo("data", "import", str(path))
    _no_traceback(result)
    assert result.returncode == 1
    assert "line 2" in result.stderr and "unknown_role" in result.stderr
    assert "line 3" in result.stderr and "invalid_json" in result.stderr
    assert "Nothing was stored" in result.stderr
    assert json.loads(oikyo("data", "list", "--json").stdout) == []


@pytest.mark.parametrize("args, message", [
    (["data", "import", "/no/such/file.jsonl"], "no such file"),
    (["data", "show", "missing"], "no dataset version matches"),
    (["data", "export", "missing", "--to", "csv"], "unknown export format"),
    (["data", "import", "x.jsonl", "--map", "nonsense"], "--map takes field=column"),
])
def test_bad_input_gets_a_message_and_exit_2(args, message, tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "hello"}\n')
    result = oikyo(*args, cwd=tmp_path)
    _no_traceback(result)
    assert result.returncode == 2
    assert message in result.stderr


def test_ambiguous_csv_asks_which_columns(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\n")
    result = oikyo("data", "import", str(path))
    _no_traceback(result)
    assert result.returncode == 1 and "--map" in result.stderr + result.stdout
    mapped = oikyo("data", "import", str(path), "--format", "alpaca", "--map", "instruction=question",
                   "--map", "output=answer")
    assert mapped.returncode == 0, mapped.stderr
    assert "Detected format: alpaca" in mapped.stdout
