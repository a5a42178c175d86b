"""Degeneration rules on crafted answers: loops and symbol soup are caught, ordinary answers in any script are not."""

from __future__ import annotations

import pytest

from oikyo.evaluate.degeneration import Verdict, judge, repeated_share, share, tokens

JSON = '{"category": "shipping", "priority": "high", "sentiment": "negative"}'
PROSE = ("I'm sorry to hear that your order has not arrived. Please contact the store's customer service with "
         "your order number; they can track the parcel and, if it is lost, send a replacement or refund you. "
         "If you need it tomorrow, ask whether express delivery is possible.")
CJK = ("天空之所以是蓝色的，是因为阳光穿过大气层时，波长较短的蓝光比其他颜色的光更容易被空气分子散射，"
       "所以我们从各个方向都能看到蓝色的光。日落时，阳光要穿过更厚的大气层，蓝光被散射掉，天空就变成了红色和橙色。")
JAPANESE = "こんにちは！今日はとても良い天気ですね。何かお手伝いできることがあれば、遠慮なく聞いてください。"
THAI = "ท้องฟ้าเป็นสีฟ้าเพราะแสงอาทิตย์กระเจิงในชั้นบรรยากาศ แสงสีฟ้ามีความยาวคลื่นสั้นจึงกระเจิงได้มากกว่าสีอื่น"
CODE = '''Here is how to read a file in Python:

```python
with open("notes.txt", encoding="utf-8") as f:
    for line in f:
        print(line.rstrip())
```

This prints every line of the file without the trailing newline.'''
LIST = """Here are some tips for your interview:

1. Research the company before the interview.
2. Practice answering common interview questions.
3. Dress appropriately for the interview.
4. Arrive early and bring copies of your resume.
5. Ask thoughtful questions at the end of the interview."""


@pytest.mark.parametrize("reply, rule", [
    ("😡" * 60, "char_run"),
    ("Oh no! " + "😡 " * 40, "char_run"),
    ("😡😤" * 30, "repeated_ngram"),
    ("I am sorry for the inconvenience. " * 12, "repeated_ngram"),
    ("I am sorry.\n" * 8, "repeated_line"),
    ("\n".join([JSON] * 6), "repeated_line"),
    (" ".join([JSON] * 6), "repeated_ngram"),
    ("", "empty"), ("   \n ", "empty"),
    ("?!?! #@$% ... ))) ***  ~~~ ^^^ +++", "not_language"),
    ("🙂", "not_language"),
    ("thankyouverymuchforyourorderwewillsenditsoonthankyouverymuchforyourorder", "long_words"),
])
def test_degenerate_answers_are_caught_with_their_rule(reply, rule):
    verdict = judge(reply)
    assert verdict.degenerate and verdict.rule == rule, verdict
    assert verdict.detail


@pytest.mark.parametrize("reply", [PROSE, CJK, JAPANESE, THAI, CODE, LIST, JSON, "Paris.", "42",
                                   "Hello! I'm doing well, thank you. How can I help you today?",
                                   "Wow!!! That is great news :)", "See https://example.com/a/long/path/to/a/page.html"])
def test_ordinary_answers_in_any_script_are_not_degenerate(reply):
    assert judge(reply) == Verdict(False), judge(reply)
    assert judge(reply, truncated=True) == Verdict(False)  # cut at the limit but still sensible: not flagged


def test_a_truncated_answer_that_falls_into_a_loop_is_caught_but_a_long_sensible_one_is_not():
    start = PROSE + " " + LIST
    looping = start + " " + "Please help me. " * 10
    assert not judge(looping).degenerate  # the whole answer is mostly sensible...
    verdict = judge(looping, truncated=True)  # ...but it ran to the token limit looping
    assert verdict.degenerate and verdict.rule == "truncated_loop"
    assert not judge(start, truncated=True).degenerate


def test_json_for_a_general_question_is_not_degeneration_by_itself():
    # A different failure (the task leaking into general use) that the probe's accuracy sees; it only
    # counts as degenerate when it loops.
    assert not judge(JSON).degenerate
    assert judge(JSON + "\n" + JSON + "\n" + JSON + "\n" + JSON).degenerate


def test_tokens_and_shares():
    assert tokens("Hi, 你好 😡😡") == ["Hi", ",", "你", "好", "😡", "😡"]
    assert repeated_share(list("abab")) == 0  # one 4-gram
    assert repeated_share(list("aaaaa")) == 0.5  # the second of two equal 4-grams repeats
    assert share([Verdict(True, "empty"), Verdict(False)]) == 0.5 and share([]) == 0
