"""Write the forgetting probe's data files, deterministically: ``python -m oikyo.evaluate.probe.build``.

Two files next to this script (shipped with the package, checked by a test to equal what this
script writes):

- ``text.jsonl``: 40 held-out paragraphs of general English (:mod:`.paragraphs`), one
  ``{"id", "text"}`` per line, for perplexity.
- ``instructions.jsonl``: 60 general instructions with checkable answers, one
  ``{"id", "category", "prompt", "answers"}`` per line: arithmetic (drawn with a fixed seed),
  capitals, unit conversions, simple facts, and spelling/ordering tasks. An answer is correct when
  one of ``answers`` appears as whole words in the normalized reply (see :mod:`oikyo.evaluate.forgetting`).

Change the content here, run the script, and bump :data:`PROBE_VERSION` so stored results say
which probe they used.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from oikyo.evaluate.probe.paragraphs import PARAGRAPHS

PROBE_VERSION = "1"
HERE = Path(__file__).resolve().parent
TEXT_FILE, INSTRUCTIONS_FILE = HERE / "text.jsonl", HERE / "instructions.jsonl"
ARITHMETIC_SEED, ARITHMETIC_ITEMS = 20261125, 15
SHORT = " Answer with just the answer."

CAPITALS = (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("the United Kingdom", "London"), ("Greece", "Athens"), ("Portugal", "Lisbon"))
CONVERSIONS = (("centimeters are in one meter", "100"), ("minutes are in one hour", "60"),
               ("days are in one week", "7"), ("grams are in one kilogram", "1000"), ("hours are in one day", "24"),
               ("seconds are in one minute", "60"), ("months are in one year", "12"),
               ("meters are in one kilometer", "1000"), ("millimeters are in one centimeter", "10"),
               ("days are in a leap year", "366"))
FACTS = (("What color is the sky on a clear day?", ["blue"]),
         ("How many legs does a spider have?", ["8", "eight"]),
         ("What is the opposite of hot?", ["cold"]),
         ("What do bees make from nectar?", ["honey"]),
         ("What is frozen water called?", ["ice"]),
         ("Which planet do humans live on?", ["earth"]),
         ("What is the largest ocean on Earth?", ["pacific"]),
         ("How many continents are there on Earth?", ["7", "seven"]),
         ("Which gas do plants take in from the air to make food?", ["carbon dioxide", "co2"]),
         ("At what temperature in degrees Celsius does water boil at sea level?", ["100"]),
         ("Which animal is often called the king of the jungle?", ["lion"]),
         ("How many sides does a triangle have?", ["3", "three"]))
WORDS = (("What is the first letter of the word 'banana'?", ["b"]),
         ("Spell the word 'cat' backwards.", ["tac", "t a c"]),
         ("Which comes first in alphabetical order: 'dog' or 'cat'?", ["cat"]),
         ("What is the last letter of the word 'apple'?", ["e"]),
         ("Sort these numbers from smallest to largest: 9, 2, 5.", ["2 5 9"]),
         ("Which number is larger: 42 or 24?", ["42"]),
         ("What is the plural of 'mouse'?", ["mice"]),
         ("How many letters are in the word 'house'?", ["5", "five"]),
         ("Which day of the week comes after Monday?", ["tuesday"]),
         ("What is the next number in the sequence 2, 4, 6, 8?", ["10", "ten"]),
         ("What is the opposite of 'up'?", ["down"]))


def arithmetic_items(seed: int = ARITHMETIC_SEED, n: int = ARITHMETIC_ITEMS) -> list[tuple[str, list[str]]]:
    """``n`` small sums, differences and products, the same ones for the same seed."""
    rng = random.Random(seed)
    items = []
    for k in range(n):
        op = ("+", "-", "*")[k % 3]
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 9)
            result, shown = a * b, "times"
        else:
            a, b = rng.randint(10, 60), rng.randint(2, 30)
            if op == "-" and b > a:
                a, b = b, a
            result, shown = (a + b, "plus") if op == "+" else (a - b, "minus")
        items.append((f"What is {a} {shown} {b}?", [str(result)]))
    return items


def instructions() -> list[dict]:
    """The 60 probe instructions, in a fixed order."""
    groups = [
        ("arithmetic", [(q + " Answer with just the number.", a) for q, a in arithmetic_items()]),
        ("capital", [(f"What is the capital of {country}?{SHORT}", [city.lower()]) for country, city in CAPITALS]),
        ("conversion", [(f"How many {what}?{' Answer with just the number.'}", [n]) for what, n in CONVERSIONS]),
        ("fact", [(q + SHORT, a) for q, a in FACTS]),
        ("words", [(q + SHORT, a) for q, a in WORDS]),
    ]
    rows = []
    for category, items in groups:
        for prompt, answers in items:
            rows.append({"id": f"{category}-{len([r for r in rows if r['category'] == category]) + 1:02d}",
                         "category": category, "prompt": prompt, "answers": answers})
    return rows


def texts() -> list[dict]:
    return [{"id": f"text-{k + 1:02d}", "text": text} for k, text in enumerate(PARAGRAPHS)]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def render() -> dict[Path, str]:
    """The content of each probe file, as this script writes it."""
    return {TEXT_FILE: _jsonl(texts()), INSTRUCTIONS_FILE: _jsonl(instructions())}


def main() -> None:
    for path, content in render().items():
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path} ({content.count(chr(10))} rows)")


if __name__ == "__main__":
    main()
