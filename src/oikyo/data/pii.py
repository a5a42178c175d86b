"""Find possible personal data and secrets in text, and redact what was found.

Used by the dataset quality report (:mod:`oikyo.data.quality`); the detectors are regular
expressions with a second check where a pattern alone would flag too much (Luhn for card numbers,
digit counts for phone numbers, character entropy for generic secrets)::

    for kind, match in find_pii("mail me at jo@example.com"):
        print(kind, redact(match))          # email jo@e*******.***

The rules, chosen to keep false positives low on ordinary text:

- ``email``: ``name@domain.tld``, except the reserved documentation domains (``example.com``,
  ``.test``, ...), which never hold a real person's address.
- ``phone``: an international number starting with ``+`` (8-15 digits), or a US-style number with
  separators, ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567``. Plain digit runs (years,
  order numbers, prices) are never phone numbers.
- ``ip_address``: dotted IPv4 with every part 0-255, not inside a longer dotted run (versions).
- ``credit_card``: a card-network first digit (3, 4, 5, 6), written in the usual groups
  (``4111 1111 1111 1111``, ``3782 822463 10005``) or as one run of 15-16 digits, that passes the
  Luhn check.

Numbers inside arithmetic (``472547338 + 960397912423686``) are neither phones nor cards: a match
next to an operator or right after another number is skipped.
- ``secret``: well-known key shapes (OpenAI/Anthropic ``sk-``, AWS ``AKIA``/``ASIA``, GitHub
  ``ghp_``..., Slack ``xox?-``, Google ``AIza``, PEM private keys), or a long value right after a
  word like key/token/secret/password that mixes letters and digits and looks random (Shannon
  entropy >= 3 bits per character).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

PII_TYPES = ("email", "phone", "ip_address", "credit_card", "secret")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_RESERVED_DOMAIN = re.compile(  # RFC 2606 documentation and test domains
    r"@(?:[\w-]+\.)*(?:example\.(?:com|org|net)|[\w-]+\.(?:example|test|invalid|localhost))$|@localhost$",
    re.I,
)
_OPERATORS = "+*=×÷^"  # not "-", "/" or "<>": "Phone - 555-...", "555-... / 555-...", "<b>"
_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])")
_PHONE_US = re.compile(r"(?<![\w()+-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
_CARD = re.compile(
    r"(?<![\w.-])(?:[3-6]\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 4-4-4-4(-3)
    r"|3\d{3}([ -])\d{6}\2\d{5}"  # American Express 4-6-5
    r"|[3-6]\d{14,15})(?![\w-]|\.\d)"  # one run of 15-16 digits
)
_KNOWN_SECRETS = re.compile(
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"
)
_LABELLED_SECRET = re.compile(
    r"(?i)\b(?:api[_-]?key|apikey|access[_-]?key|secret|token|password|passwd|auth)\w*"
    r"[\"']?\s*(?:[:=]|is)\s*[\"']?([A-Za-z0-9+/_\-.=]{16,})"
)
# Cheap substring tests that let most rows skip a regular expression entirely.
_SECRET_HINTS = ("sk-", "AKIA", "ASIA", "gh", "xox", "AIza", "PRIVATE KEY")
_LABEL_HINTS = ("key", "token", "secret", "passw", "auth")


def find_pii(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(type, matched text)`` for every possible piece of personal data in ``text``."""
    if "@" in text:
        for m in _EMAIL.finditer(text):
            if not _RESERVED_DOMAIN.search(m.group()):
                yield "email", m.group()
    yield from _find_phones(text)
    if text.count(".") >= 3:
        for m in _IPV4.finditer(text):
            yield "ip_address", m.group()
    for m in _CARD.finditer(text):
        if _is_card_number(m.group()) and not _in_arithmetic(text, *m.span()):
            yield "credit_card", m.group()
    yield from _find_secrets(text)


def _find_phones(text: str) -> Iterator[tuple[str, str]]:
    international = []
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if 8 <= _digit_count(m.group()) <= 15 and not _in_arithmetic(text, *m.span()):
                international.append(m.span())
                yield "phone", m.group()
    for m in _PHONE_US.finditer(text):
        # "+1 555 123 4567" holds a US-style number; count the phone once.
        inside = any(s <= m.start() < e for s, e in international)
        if not inside and not _in_arithmetic(text, *m.span()):
            yield "phone", m.group()


def _find_secrets(text: str) -> Iterator[tuple[str, str]]:
    known = []
    if any(hint in text for hint in _SECRET_HINTS):
        for m in _KNOWN_SECRETS.finditer(text):
            known.append(m.span())
            yield "secret", m.group()
    lowered = text.lower()
    if any(hint in lowered for hint in _LABEL_HINTS):
        for m in _LABELLED_SECRET.finditer(text):
            value = m.group(1)
            start = m.start(1)
            # A known-shape key after "api_key=" was already reported above.
            if any(s <= start < e for s, e in known):
                continue
            if _looks_random(value):
                yield "secret", value


def _in_arithmetic(text: str, start: int, end: int) -> bool:
    """True for ``1 + MATCH``, ``MATCH * 2``, or a match right after a number (a column of sums)."""
    before = text[max(0, start - 24) : start].rstrip()
    if before and before[-1] in _OPERATORS:
        before = before[:-1].rstrip()
    if before and (before[-1].isdigit() or before[-1] == ")"):
        return True
    after = text[end : end + 24].lstrip()
    return bool(after) and after[0] in _OPERATORS and after[1:].lstrip()[:1].isdigit()


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _is_card_number(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    # Luhn: double every second digit from the right; the sum must end in 0.
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _looks_random(value: str) -> bool:
    """True for key-like values: letters and digits mixed, high character entropy."""
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.0


def redact(match: str, keep: int = 4, max_len: int = 24) -> str:
    """Hide a match but keep its shape: the first few characters, then ``*`` for letters/digits.

    At most a quarter of the match (and never more than ``keep`` characters) stays readable, so
    a redacted secret can be recognised by its prefix ("sk-p****") but never reused.
    """
    shown = min(keep, len(match) // 4)
    masked = match[:shown] + "".join("*" if c.isalnum() else c for c in match[shown:])
    if len(masked) > max_len:
        masked = masked[:max_len] + "…"
    return masked
