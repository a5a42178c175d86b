"""Is a generated answer degenerate? Pure text rules (no torch), each saying why it fired.

The forgetting probe asks open-ended general questions and scores every answer with
:func:`judge`; a fine-tuned model that answers "My order never arrived!" with a loop of emoji is
caught here even when its short-answer accuracy and text perplexity barely moved::

    verdict = judge(reply, truncated=result.finish_reason == "length")
    if verdict.degenerate:
        print(verdict.rule, verdict.detail)        # "char_run", "'😡' repeated 61 times (95% of the answer)"

The rules, checked in this order (the first that fires is the verdict):

- ``empty``: nothing but whitespace.
- ``char_run``: one character (an emoji, a letter, a symbol) repeated, with or without spaces
  between, makes up at least :data:`RUN_SHARE` of the answer's visible characters.
- ``repeated_line``: a line said :data:`LINE_REPEATS` or more times, the repeats making up at least
  :data:`LOOP_SHARE` of the lines.
- ``repeated_ngram``: at least :data:`LOOP_SHARE` of the answer's token 4-grams already appeared
  earlier in it (a sentence or phrase loop). Tokens are words, single CJK/kana/Thai characters,
  and single symbols, so the rule reads any script and emoji runs alike.
- ``not_language``: letters, marks and digits (of any script: Chinese prose is language) are under
  :data:`MIN_LETTER_SHARE` of the visible characters, or there are none at all.
- ``long_words``: whitespace-free chunks longer than :data:`LONG_WORD` characters make up most of
  the answer (glued words, symbol soup). Scripts written without spaces (Chinese, Japanese, Thai,
  ...), URLs and paths are exempt.
- ``truncated_loop``: the answer stopped at the token limit and its last part loops (the
  repetition rules with a lower bar, on the last third of the tokens): the model started well and
  fell into a loop it never left.

An answer that merely hit the token limit while still making sense is NOT degenerate: the base model
does that on a long how-to now and then (measured: see docs/evaluation.md), and calling that
forgetting would punish the base model's own habits. Answering a general question with task
output (the support-ticket JSON) is a different failure; it counts only when it loops.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass

RUN_SHARE = 0.3  # one repeated character making up this share of the visible characters is a run
MIN_RUN = 8  # ...and it needs at least this many repeats ("!!!" or "---" are fine)
LINE_REPEATS = 3
LOOP_SHARE = 0.5  # share of repeated 4-grams (or repeated lines) that makes a loop
MIN_LOOP_TOKENS = 12  # shorter answers are too short to call a loop
TAIL_LOOP_SHARE = 0.4  # the bar for the last third of an answer cut at the token limit
MIN_LETTER_SHARE = 0.35
MIN_LETTER_CHARS = 8  # below this many visible characters the letter share is not judged (but "none" is)
LONG_WORD = 40
LONG_WORD_SHARE = 0.5
NGRAM = 4

# Scripts written without spaces between words: a long chunk of these is a sentence, not a glued word.
_SPACELESS_RANGES = ("\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\ua000-\ua4cf"
                     "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef")
_SPACELESS = re.compile(f"[{_SPACELESS_RANGES}]")
# One token: a single character of a spaceless script, a word, or a single other visible character.
_TOKEN = re.compile(f"[{_SPACELESS_RANGES}]|[^\\W{_SPACELESS_RANGES}]+|[^\\w\\s]")


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is degenerate, the rule that said so (None when it is not) and why."""

    degenerate: bool
    rule: str | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


OK = Verdict(False)


def tokens(text: str) -> list[str]:
    """Words, single spaceless-script characters and single symbols (emoji included), in order."""
    return _TOKEN.findall(text)


def repeated_share(items: list, n: int = NGRAM) -> float:
    """Share of the ``n``-grams of ``items`` that already appeared earlier (0 for fewer than n items)."""
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def _visible(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] != "C")


def _char_run(visible: str) -> Verdict:
    # The longest run of one character, spaces between ignored: "😡😡😡" and "😡 😡 😡" alike.
    best, best_char, run = 0, "", 0
    for k, ch in enumerate(visible):
        run = run + 1 if k and visible[k - 1] == ch else 1
        if run > best:
            best, best_char = run, ch
    if best >= MIN_RUN and best >= RUN_SHARE * len(visible):
        return Verdict(True, "char_run",
                       f"{best_char!r} repeated {best} times ({best / len(visible):.0%} of the answer)")
    return OK


def _repeated_line(text: str) -> Verdict:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < LINE_REPEATS:
        return OK
    line, count = Counter(lines).most_common(1)[0]
    repeats = len(lines) - len(set(lines))
    if count >= LINE_REPEATS and repeats >= LOOP_SHARE * len(lines):
        return Verdict(True, "repeated_line",
                       f"{line[:60]!r} said {count} times ({repeats} of {len(lines)} lines repeat)")
    return OK


def _loop(items: list[str], share_needed: float, rule: str) -> Verdict:
    if len(items) < MIN_LOOP_TOKENS:
        return OK
    share = repeated_share(items)
    if share >= share_needed:
        return Verdict(True, rule, f"{share:.0%} of the {NGRAM}-grams repeat earlier ones")
    return OK


def _not_language(visible: str) -> Verdict:
    letters = sum(unicodedata.category(ch)[0] in "LMN" for ch in visible)
    if letters == 0:
        return Verdict(True, "not_language", f"no letters in {len(visible)} visible characters")
    share = letters / len(visible)
    if len(visible) >= MIN_LETTER_CHARS and share < MIN_LETTER_SHARE:
        return Verdict(True, "not_language", f"letters are {share:.0%} of the visible characters")
    return OK


def _long_words(text: str, visible: str) -> Verdict:
    # URLs and paths are long by nature; spaceless scripts write whole sentences without a space.
    long = [w for w in text.split()
            if len(w) > LONG_WORD and not _SPACELESS.search(w) and "://" not in w and w.count("/") < 2]
    glued = sum(len(w) for w in long)
    if long and glued >= LONG_WORD_SHARE * len(visible):
        return Verdict(True, "long_words", f"{len(long)} chunk(s) over {LONG_WORD} characters without a space "
                                           f"({glued / len(visible):.0%} of the answer), e.g. {long[0][:40]!r}")
    return OK


def judge(text: str, *, truncated: bool = False) -> Verdict:
    """The verdict on one answer; ``truncated``: generation stopped at the token limit (not at end of turn)."""
    if not text.strip():
        return Verdict(True, "empty", "the answer is empty")
    visible = _visible(text)
    items = tokens(text)
    for verdict in (_char_run(visible), _repeated_line(text), _loop(items, LOOP_SHARE, "repeated_ngram"),
                    _not_language(visible), _long_words(text, visible)):
        if verdict.degenerate:
            return verdict
    if truncated:
        tail = items[-max(len(items) // 3, MIN_LOOP_TOKENS):]
        return _loop(tail, TAIL_LOOP_SHARE, "truncated_loop")
    return OK


def share(verdicts: list[Verdict]) -> float:
    """Share of degenerate verdicts (0 for none)."""
    return sum(v.degenerate for v in verdicts) / len(verdicts) if verdicts else 0.0
