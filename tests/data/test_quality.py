"""The dataset quality report: what a user sees for duplicates, PII, leakage, balance and lengths."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from oikyo.data.quality import BIN_LABELS, build_report, render_report

_WORDS = ("account billing order package refund login error invoice device screen battery network "
          "update password email support delivery payment reset window printer cable sound camera").split()


def conv(user: str, assistant: str = "Sure, here is how to do that.", *, system: str | None = None,
         split: str | None = None, label: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "split": split, "label": label}


def prose(seed: int, n: int = 60) -> str:
    """A distinct pseudo-sentence of ``n`` words (different seeds share few 5-grams)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) + str(rng.randint(0, 9)) for _ in range(n))


def test_exact_and_near_duplicates_are_found_and_a_different_pair_is_not():
    base = prose(1, 120)
    words = base.split()
    near = " ".join(words[:60] + ["completely-different"] + words[61:])  # one word of 120 changed
    rows = [
        conv(base),
        conv("  " + base.upper().replace(" ", "   ") + " "),  # same text: case and spacing differ
        conv(near),
        conv(prose(2, 120)),  # same vocabulary, different text
        conv(prose(3, 120)),
    ]
    dupes = build_report(rows, "conversations")["duplicates"]
    assert dupes["exact"]["count"] == 1
    assert dupes["exact"]["examples"] == [[0, 1]]
    assert dupes["near"]["count"] == 1
    earlier, later, similarity = dupes["near"]["examples"][0]
    assert (earlier, later) == (0, 2) and similarity >= 0.8


def test_shared_system_prompt_does_not_make_rows_near_duplicates():
    system = prose(99, 200)  # a long instruction every row repeats
    rows = [conv(prose(i, 10), system=system) for i in range(30)]
    assert build_report(rows, "conversations")["duplicates"]["near"]["count"] == 0


SECRETS = {
    "email": "jane.doe@acme-corp.io",
    "phone": "+44 20 7946 0958",
    "ip_address": "203.0.113.77",
    "credit_card": "4111 1111 1111 1111",
    "secret": "sk-proj-Abc123Def456Ghi789Jkl012Mno345",
}


def test_pii_is_found_per_type_and_never_printed_in_full():
    rows = [conv("hello there"), conv(f"My details: {SECRETS['email']}, call {SECRETS['phone']}")]
    rows += [conv(f"server {SECRETS['ip_address']} is down"), conv(f"card {SECRETS['credit_card']}")]
    rows += [conv("my key", f"use OPENAI_API_KEY={SECRETS['secret']}"),
             conv("aws", "AKIAIOSFODNN7EXAMPLE and ghp_abcdefghijklmnopqrstuvwxyz0123456789")]
    report = build_report(rows, "conversations")
    by_type = report["pii"]["by_type"]
    assert {t: by_type[t]["rows"] for t in SECRETS} == {
        "email": 1, "phone": 1, "ip_address": 1, "credit_card": 1, "secret": 2}
    assert by_type["secret"]["matches"] == 3
    assert by_type["email"]["examples"][0]["row"] == 1
    assert report["pii"]["rows_with_pii"] == 5
    dumped = json.dumps(report)
    for value in [*SECRETS.values(), "AKIAIOSFODNN7EXAMPLE", "acme-corp"]:
        assert value not in dumped
    assert by_type["secret"]["examples"][0]["match"].startswith("sk-")
    assert any("email addresses" in w for w in report["warnings"])


def test_years_prices_dates_and_order_numbers_are_not_phone_numbers():
    rows = [
        conv("In 2019, 2020 and 2021 we sold 1234567 units; order #123456789 cost $1,299.99 on 2023-01-15."),
        conv("Version 1.2.3.4.5 shipped in 1999. Call extension 4412. ISBN 978-3-16-148410-0."),
        conv("Compute 472547338 + 960397912423686 = 960398384971024 please."),
        conv("Write to test@example.com (a documentation address)."),
    ]
    by_type = build_report(rows, "conversations")["pii"]["by_type"]
    assert {t: e["matches"] for t, e in by_type.items()} == {t: 0 for t in by_type}


def test_leakage_between_splits_exact_and_ngram():
    train = [conv(prose(i), split="train") for i in range(10)]
    test = [
        conv(prose(3).upper(), split="test"),  # exact copy of train row 3
        conv(prose(5) + " " + prose(500, 20), split="test"),  # most of its 8-grams are in train row 5
        conv(prose(600), split="test"),  # new
        conv(prose(700), split="validation"),
    ]
    report = build_report(train + test, "conversations")
    splits = report["leakage"]["splits"]
    assert splits["rows_by_split"] == {"test": 3, "train": 10, "validation": 1}
    entry = splits["checked"]["test"]
    assert (entry["rows"], entry["exact"], entry["ngram"], entry["leaked"]) == (3, 1, 1, 2)
    assert [e["row"] for e in entry["examples"]] == [10, 11]
    assert entry["examples"][0]["train_row"] == 3
    assert splits["checked"]["validation"]["leaked"] == 0
    assert any("test split also occur in train" in w for w in report["warnings"])
    # Rows come in any order: held-out rows read before the train rows still leak.
    assert build_report(test + train, "conversations")["leakage"]["splits"]["checked"]["test"]["leaked"] == 2


def test_no_split_leakage_section_without_splits():
    report = build_report([conv(prose(i)) for i in range(3)], "conversations")
    assert report["leakage"]["splits"] is None


def test_leakage_against_an_eval_set():
    rows = [conv(prose(i)) for i in range(20)]
    eval_rows = [
        conv(prose(7)),  # a copy of dataset row 7
        conv(prose(8)[: len(prose(8)) * 3 // 4] + " " + prose(900, 5)),  # most of row 8
        conv(prose(999)),  # new
        conv(prose(7).upper()),  # the eval set repeats its own example: both count
    ]
    report = build_report(rows, "conversations", eval_sets={"support-eval": iter(eval_rows)})
    entry = report["leakage"]["eval_sets"]["support-eval"]
    assert (entry["rows"], entry["exact"], entry["ngram"], entry["leaked"]) == (4, 2, 1, 3)
    assert [(e["eval_row"], e["row"]) for e in entry["examples"]] == [(0, 7), (1, 8), (3, 7)]
    assert any("'support-eval'" in w and "contaminated" in w for w in report["warnings"])


def test_label_balance_flags_a_rare_class():
    rows = [conv(prose(i, 8), label="ok") for i in range(60)]
    rows += [conv(prose(100 + i, 8), label="spam") for i in range(38)]
    rows += [conv(prose(200 + i, 8), label="fraud") for i in range(2)]
    labels = build_report(rows, "conversations")["labels"]
    assert labels["counts"] == {"ok": 60, "spam": 38, "fraud": 2}
    assert labels["shares"]["fraud"] == 0.02
    assert labels["rarest"]["label"] == "fraud"
    assert labels["imbalanced"] and not labels["single_class"]


def test_label_balance_flags_a_single_class_and_is_absent_without_labels():
    report = build_report([conv(prose(i, 8), label="yes") for i in range(5)], "conversations")
    assert report["labels"]["single_class"]
    assert any("same label" in w for w in report["warnings"])
    balanced = build_report([conv(prose(i, 8), label=str(i % 2)) for i in range(10)], "conversations")
    assert not balanced["labels"]["imbalanced"]
    assert build_report([conv("hi")], "conversations")["labels"] is None


def test_histograms_sum_to_row_counts_and_lengths_match_word_counts():
    rows = [conv(" ".join(["w"] * n), " ".join(["a"] * (2 * n)), system="be brief" if n % 2 else None)
            for n in range(1, 101)]
    report = build_report(rows, "conversations")
    hist = report["histograms"]
    assert hist["bins"] == BIN_LABELS and len(hist["example"]) == len(BIN_LABELS)
    assert sum(hist["example"]) == 100
    assert sum(hist["by_role"]["user"]) == sum(hist["by_role"]["assistant"]) == 100
    assert sum(hist["by_role"]["system"]) == 50  # only the rows that have a system prompt
    assert hist["by_role"]["user"][BIN_LABELS.index("64-127")] == 37  # users of 64..100 words
    assert report["tokenizer"] is None and report["token_unit"] == "whitespace words"
    assert report["tokens"]["by_role"] == {"system": 100, "user": 5050, "assistant": 10100}
    user = report["lengths"]["by_role"]["user"]
    assert (user["max"], user["median"], user["mean"]) == (100, 50.5, 50.5)
    assert report["lengths"]["example"]["max"] == 300  # row 100: 100 + 200 words, no system prompt


def test_a_tokenizer_is_used_and_named():
    def count_chars(text: str) -> int:
        return len(text)

    count_chars.name = "chars"
    report = build_report([conv("abcd", "xy")], "conversations", count_tokens=count_chars)
    assert report["tokenizer"] == "chars" and report["token_unit"] == "tokens"
    assert report["tokens"] == {"total": 6, "by_role": {"user": 4, "assistant": 2}}


def test_empty_and_short_answers_and_bad_endings():
    rows = [
        conv("q1", ""),
        conv("q2", "ok"),
        conv("q3", "A real answer."),
        conv("q4", "B", label="B"),  # a class answer is short on purpose
        {"messages": [{"role": "user", "content": "anyone there?"}]},
    ]
    report = build_report(rows, "conversations")
    answers = report["answers"]
    assert (answers["empty"], answers["short"]) == (1, 1)
    assert answers["examples"] == {"empty": [0], "short": [1]}
    turns = report["turns"]
    assert (turns["bad_ending"], turns["no_assistant"], turns["bad_ending_examples"]) == (1, 1, [4])
    assert turns["per_example"] == {"1": 1, "2": 4}
    assert any("empty assistant answer" in w for w in report["warnings"])


def test_preference_and_text_kinds():
    prompt = [{"role": "user", "content": "Which is better?"}]
    pref = [{"messages": prompt, "chosen": "The first one, because it is faster.", "rejected": "Dunno."},
            {"messages": prompt, "chosen": "Same", "rejected": "same"}]
    report = build_report(pref, "preference")
    assert report["answers"]["identical_pairs"] == 1
    assert report["lengths"]["example"]["max"] == 3 + 7  # prompt + the longer answer
    assert set(report["tokens"]["by_role"]) == {"user", "chosen", "rejected"}
    text = build_report(iter([{"text": "hello world"}, {"text": "  "}]), "text")
    assert text["answers"]["empty"] == 1 and text["turns"] is None


def test_streams_a_generator_reports_progress_and_rejects_unknown_kinds():
    seen = []
    report = build_report((conv(prose(i, 5)) for i in range(2500)), "conversations", progress=seen.append)
    assert report["rows"] == 2500
    assert seen == [1000, 2000, 2500]
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_report([], "images")
    assert build_report([], "text")["warnings"] == ["The dataset has no rows."]


def test_report_survives_a_json_round_trip():
    rows = [conv(prose(i), split="train" if i % 4 else "test", label=str(i % 3)) for i in range(40)]
    rows.append(conv("mail me: bob@contoso.org"))
    report = build_report(rows, "conversations", eval_sets={"ev": [conv(prose(1))]})
    assert json.loads(json.dumps(report)) == report
    assert {"rows", "tokens", "lengths", "histograms", "duplicates", "answers", "turns", "labels",
            "pii", "leakage", "warnings"} <= set(report)


def test_render_report_prints_the_tables_and_warnings_in_100_columns():
    rows = [conv(prose(i), split="train") for i in range(8)]
    rows += [conv(prose(2), split="test"), conv(f"reach me at {SECRETS['email']}", "", label="x[bold]")]
    report = build_report(rows, "conversations")
    console = Console(record=True, width=100, color_system=None)
    render_report(report, console)
    out = console.export_text()
    for needle in ("Dataset quality: 10 conversations rows", "whole example", "Histogram", "Duplicates",
                   "exact", "jane.***@", "test vs train", "Warnings", "! 1 row contains possible email",
                   "x[bold]"):
        assert needle in out, needle
    assert SECRETS["email"] not in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "█" in out


# ---------------------------------------------------------------------------- length units

CHINESE = ["请问我的订单什么时候发货？", "您的订单将在三天内发货。", "我想修改收货地址，可以吗？", "可以，请在订单页面修改。"]
ENGLISH = ["When will my order ship?", "Your order ships within three days.", "Can I change the address?",
           "Yes, edit it on the order page."]


def test_chinese_lengths_are_in_characters_not_whitespace_words():
    rows = [conv(CHINESE[i], CHINESE[i + 1]) for i in (0, 2)]
    report = build_report(rows, "conversations")
    assert report["tokenizer"] is None and report["token_unit"] == "characters"
    assert report["texts_without_spaces"] == {"count": 4, "of": 4}
    assert "written without spaces" in report["token_unit_reason"]
    user = report["lengths"]["by_role"]["user"]
    assert (user["total"], user["max"]) == (len(CHINESE[0]) + len(CHINESE[2]), 13)  # whitespace words: 1 each
    assert report["lengths"]["example"]["max"] == len(CHINESE[2]) + len(CHINESE[3])


def test_english_lengths_are_in_whitespace_words():
    rows = [conv(ENGLISH[i], ENGLISH[i + 1]) for i in (0, 2)]
    report = build_report(rows, "conversations")
    assert report["token_unit"] == "whitespace words" and report["texts_without_spaces"]["count"] == 0
    assert report["tokens"]["by_role"] == {"user": 5 + 5, "assistant": 6 + 7}


def test_one_text_without_spaces_makes_the_whole_dataset_count_characters():
    rows = [conv(ENGLISH[0], ENGLISH[1]), conv(ENGLISH[2], CHINESE[3])]
    report = build_report(rows, "conversations")
    assert report["token_unit"] == "characters" and report["texts_without_spaces"] == {"count": 1, "of": 4}
    assert report["tokens"]["by_role"]["user"] == len(ENGLISH[0]) + len(ENGLISH[2])


@pytest.mark.parametrize("text, dense", [
    ("東京の天気は晴れです。", True),  # Japanese
    ("สวัสดีครับ วันนี้อากาศดี", True),  # Thai (spaces between phrases, not words)
    ("ខ្ញុំស្រឡាញ់ភាសាខ្មែរ", True),  # Khmer
    ("안녕하세요 오늘 날씨가 좋네요", False),  # Korean puts spaces between words
    ("The word 你好 means hello in Mandarin Chinese.", False),  # a Chinese word quoted in English
    ("Привет, как дела?", False),
    ("plain ascii", False),
])
def test_which_texts_are_written_without_spaces(text, dense):
    from oikyo.data.quality import written_without_spaces

    assert written_without_spaces(text) is dense
    unit = build_report([{"text": text}], "text")["token_unit"]
    assert unit == ("characters" if dense else "whitespace words")


@given(st.lists(st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=40),
                min_size=1, max_size=10))
@settings(max_examples=50, deadline=None)
def test_property_cjk_text_is_measured_in_characters(documents):
    report = build_report([{"text": d} for d in documents], "text")
    assert report["token_unit"] == "characters"
    assert report["tokens"]["total"] == sum(map(len, documents))
    assert report["lengths"]["example"]["max"] == max(map(len, documents))


@pytest.fixture(scope="module")
def token_counter(tmp_path_factory):
    """The bundled SmolLM2 tokenizer as ``oikyo data report --model`` uses it (a TokenCounter)."""
    from oikyo.models import bundled
    from oikyo.models.chat_template import TokenCounter

    try:
        folder = bundled.ensure_bundled_tokenizer(models_dir=tmp_path_factory.mktemp("bundled-tokenizer"))
    except bundled.BundledModelMissing as err:
        pytest.skip(str(err))
    return TokenCounter(folder)


def test_with_a_tokenizer_chinese_lengths_are_in_tokens(token_counter):
    def count(text: str) -> int:
        return token_counter.text(text)

    count.name = "SmolLM2"
    report = build_report([{"text": t} for t in CHINESE], "text", count_tokens=count)
    assert report["token_unit"] == "tokens" and report["tokenizer"] == "SmolLM2"
    assert report["token_unit_reason"] == "counted by the tokenizer SmolLM2"
    expected = [token_counter.text(t) for t in CHINESE]
    assert report["tokens"]["total"] == sum(expected) and report["lengths"]["example"]["max"] == max(expected)
    assert expected != [len(t) for t in CHINESE]  # tokens, not characters
    # As the CLI and the API call it: the counter's bound method, named after the tokenizer's folder.
    report = build_report([{"text": t} for t in CHINESE], "text", count_tokens=token_counter.text)
    assert report["token_unit"] == "tokens" and report["tokens"]["total"] == sum(expected)
    assert report["tokenizer"] == Path(token_counter.tokenizer_dir).name != "custom"


def test_the_rendered_report_names_the_unit_and_why():
    console = Console(record=True, width=100, color_system=None)
    render_report(build_report([{"text": t} for t in CHINESE], "text"), console)
    out = console.export_text()
    assert "Lengths in characters" in out and "Histogram of characters per example" in out
    assert "4 of 4 texts are written without spaces" in out
    console = Console(record=True, width=100, color_system=None)
    render_report(build_report([{"text": t} for t in ENGLISH], "text"), console)
    out = console.export_text()
    assert "Lengths in whitespace words" in out and "no text is written without spaces" in out


def test_chinese_near_duplicates_and_leakage_compare_characters():
    """A Chinese sentence is one whitespace "word": without per-character words, texts that differ
    by one character would share no n-gram, and neither near duplicates nor leakage would be seen."""
    base = "我的订单一直没有到达，我非常生气，明天之前必须送到，否则我要取消订单并申请全额退款。请尽快处理这个问题，谢谢你们的帮助。"
    near = base.replace("生气", "着急")
    other = "请问你们的商店周末营业吗？我想在星期六下午去买一台新的笔记本电脑，顺便看看有没有打折活动。"
    dupes = build_report([conv(base), conv(near), conv(other)], "conversations")["duplicates"]
    assert dupes["near"]["count"] == 1 and dupes["near"]["examples"][0][:2] == [0, 1]
    rows = [conv(base, split="train"), conv(other, split="train"), conv(near, split="test")]
    entry = build_report(rows, "conversations")["leakage"]["splits"]["checked"]["test"]
    assert entry["leaked"] == 1 and entry["ngram"] == 1 and entry["examples"][0]["row"] == 2
