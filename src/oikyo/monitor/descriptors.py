"""What a request or an answer looks like, in cheap numbers: the inputs of the drift detectors.

The drift check (:mod:`oikyo.monitor.drift`) compares live traffic with a reference dataset. Both
sides become :class:`Item` s first: the text the user sent (every user turn, joined), the answer,
a label when the task has one, and the answer's quality signals. Descriptors of an item:

- :func:`script_of`: the writing system most of its letters belong to (Unicode ranges), refined
  to a language for Latin-script text when a few very common words say which (``Latin:en``,
  ``Latin:fr``, ...): a cheap classifier, right often enough to see a share move by 30 points.
- :func:`words`: lower-cased word tokens (letters only); :func:`oov_share` the share of an item's
  words missing from the reference's vocabulary.
- :func:`label_of`: the class an answer gives, read against the reference's labels (the answer
  itself, or a string value of a JSON object), ``<other>`` when none matches.

Usage::

    item = item_from_request(served_request_row)          # or item_from_row(dataset_row)
    script_of(item.input)                                   # "Latin:en", "Cyrillic", ...
    oov_share(words(item.input), vocabulary)                # 0.0 .. 1.0
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

OTHER_LABEL = "<other>"
NO_LETTERS = "none"

# Scripts by the first word of a letter's Unicode name: cheap, and needs no table of ranges.
_SCRIPT_NAMES = {
    "LATIN": "Latin", "CYRILLIC": "Cyrillic", "GREEK": "Greek", "ARABIC": "Arabic", "HEBREW": "Hebrew",
    "CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul", "DEVANAGARI": "Devanagari",
    "THAI": "Thai", "ARMENIAN": "Armenian", "GEORGIAN": "Georgian", "BENGALI": "Bengali", "TAMIL": "Tamil",
}
# A handful of the most frequent words of each language: two or more hits (and more than any other
# language) name the language of Latin-script text.
_COMMON_WORDS = {
    "en": "the and is are of to in what how you for with this that it can please",
    "fr": "le la les est et des une un que pour dans vous avec pas sur qui",
    "de": "der die das und ist nicht ein eine ich sie mit für wie auf den",
    "es": "el los las es y que una por para con cómo qué del está son",
    "it": "il lo gli è che una per con come sono della non del questo",
    "pt": "o os as é que uma para com não como são do da em você",
    "nl": "de het een en is van dat niet zijn op met voor hoe wat",
}
_LANGUAGE_WORDS = {lang: set(words.split()) for lang, words in _COMMON_WORDS.items()}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass
class Item:
    """One request (or one reference row) as the detectors see it."""

    input: str
    output: str | None = None
    label: str | None = None
    quality: dict | None = None
    id: str | None = None  # the served request's id (None for reference rows)
    extra: dict = field(default_factory=dict)


def _content_text(content) -> str:
    """A message's content as text: a string, or OpenAI's list of parts (the text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def user_text(messages: list[dict]) -> str:
    """Every user turn's text, joined: what the user asked (system prompts are the app's, not the user's)."""
    return "\n".join(_content_text(m.get("content")) for m in messages or [] if m.get("role") == "user").strip()


def item_from_request(request: dict | None, response: str | None, *, id: str | None = None,
                      quality: dict | None = None) -> Item:
    """An item from a logged request (``{"messages": [...]}`` or ``{"prompt": ...}``) and its answer."""
    request = request or {}
    if request.get("messages") is not None:
        text = user_text(request["messages"])
    else:
        prompt = request.get("prompt")
        text = prompt if isinstance(prompt, str) else "\n".join(p for p in prompt or [] if isinstance(p, str))
    return Item(input=text, output=response, quality=quality, id=id)


def item_from_row(row: dict) -> Item | None:
    """An item from a canonical dataset row (conversations, text or preference); None when it has no input."""
    if row.get("messages"):
        messages = row["messages"]
        last_answer = max((i for i, m in enumerate(messages) if m.get("role") in ("assistant", "tool_call")),
                          default=None)
        prompt = messages if last_answer is None else messages[:last_answer]
        answer = row.get("chosen") if last_answer is None else messages[last_answer].get("content")
        text = user_text(prompt)
        return Item(input=text, output=answer, label=row.get("label")) if text else None
    if row.get("text"):
        return Item(input=row["text"])
    return None


def script_of(text: str) -> str:
    """The script most of ``text``'s letters are written in, with the language for Latin text when clear."""
    counts: Counter = Counter()
    for char in text[:2000]:  # enough to tell; keeps one huge input cheap
        if char.isalpha():
            name = unicodedata.name(char, "")
            counts[_SCRIPT_NAMES.get(name.split(" ", 1)[0], "other")] += 1
    if not counts:
        return NO_LETTERS
    script = counts.most_common(1)[0][0]
    if script != "Latin":
        return script
    tokens = words(text[:2000])
    hits = Counter({lang: sum(t in vocab for t in tokens) for lang, vocab in _LANGUAGE_WORDS.items()})
    (best, n), *rest = hits.most_common(2) or [("", 0)]
    if n >= 2 and (not rest or rest[0][1] < n):
        return f"Latin:{best}"
    return "Latin"


def words(text: str) -> list[str]:
    """Lower-cased runs of letters (digits and punctuation left out: numbers are not vocabulary)."""
    return _WORD.findall(text.lower())


def oov_share(tokens: list[str], vocabulary: set[str]) -> float:
    """The share of ``tokens`` not in ``vocabulary`` (0 for an input without words)."""
    if not tokens:
        return 0.0
    return sum(t not in vocabulary for t in tokens) / len(tokens)


def label_of(answer: str | None, labels: dict[str, str]) -> str:
    """The label an answer gives: ``labels`` maps lower-cased labels to their spelling in the reference.

    The answer itself may be the label (``"positive"``), or a JSON object with a string value that is
    one (``{"label": "positive"}``); anything else is :data:`OTHER_LABEL`.
    """
    text = (answer or "").strip()
    found = labels.get(text.lower().strip(" .\"'"))
    if found is not None:
        return found
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return OTHER_LABEL
        if isinstance(value, dict):
            for field_value in value.values():
                if isinstance(field_value, str) and field_value.strip().lower() in labels:
                    return labels[field_value.strip().lower()]
    return OTHER_LABEL


def share_table(values: list[str]) -> dict[str, float]:
    """Each value's share of ``values``, largest first."""
    counts = Counter(values)
    total = max(1, len(values))
    return {k: n / total for k, n in counts.most_common()}
