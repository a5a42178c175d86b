"""Write the forgetting probe's data files, deterministically: ``python -m oikyo.evaluate.probe.build``.

Two files next to this script (shipped with the package, checked by a test to equal what this
script writes):

- ``text.jsonl``: 40 held-out paragraphs of general English (:mod:`.paragraphs`), one
  ``{"id", "text"}`` per line, for perplexity.
- ``instructions.jsonl``: 60 general instructions with checkable answers, one
  ``{"id", "category", "prompt", "answers"}`` per line: arithmetic (drawn with a fixed seed),
  capitals, unit conversions, simple facts, and spelling/ordering tasks. An answer is correct when
  one of ``answers`` appears as whole words in the normalized reply (see :mod:`oikyo.evaluate.forgetting`).
- ``open.jsonl``: 22 open-ended general requests, one ``{"id", "category", "prompt"}`` per line
  (greetings, a complaint, advice, explanations, stories, how-tos, facts, writing). Each is asked
  once per entry of :data:`OPEN_SYSTEMS` (no system prompt, and a generic one that no training set
  uses) and its answer is scored for degeneration (:mod:`oikyo.evaluate.degeneration`), not for
  correctness.

Change the content here, run the script, and bump :data:`PROBE_VERSION` so stored results say
which probe they used.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from oikyo.evaluate.probe.paragraphs import PARAGRAPHS

PROBE_VERSION = "2"  # 2: open-ended requests scored for degeneration
HERE = Path(__file__).resolve().parent
TEXT_FILE, INSTRUCTIONS_FILE, OPEN_FILE = HERE / "text.jsonl", HERE / "instructions.jsonl", HERE / "open.jsonl"
# Each open-ended request is asked without a system prompt (the chat template's own default, as a
# user calling the model plainly gets) and with a generic one: a model tuned with a fixed system
# prompt may only hold up under that prompt.
OPEN_SYSTEMS: tuple[str | None, ...] = (None, "You are a helpful assistant.")
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
# Open-ended requests: varied kinds of everyday use, answerable in a short paragraph. The complaint
# is the one a user found the quickstart model answering with a loop of emoji. Measured on the base
# model (greedy): "How do I boil an egg?" ("Boil an egg:" repeated) and "Who wrote the play Romeo and
# Juliet?" (a phrase loop) loop within 64 tokens without a system prompt, so they were left out: an
# item the base model already fails cannot show what fine-tuning cost.
OPEN = (("greeting", "Hello! How are you today?"),
        ("greeting", "Hi there, can you introduce yourself in a sentence or two?"),
        ("complaint", "My order never arrived and I am furious, I need it tomorrow!"),
        ("complaint", "The coffee machine I bought last week already stopped working. What should I do?"),
        ("advice", "I have a job interview tomorrow. Do you have any tips?"),
        ("advice", "How can I get better sleep at night?"),
        ("advice", "What should I pack for a weekend camping trip?"),
        ("advice", "My friend is sad because her cat died. What can I say to her?"),
        ("explanation", "Why is the sky blue?"),
        ("explanation", "Explain what a computer virus is in simple words."),
        ("explanation", "Why do we have seasons on Earth?"),
        ("explanation", "What is the difference between weather and climate?"),
        ("story", "Write a short story about a dog who finds a lost key."),
        ("story", "Tell me a very short bedtime story about the moon."),
        ("howto", "How do I change a flat tire on a bicycle?"),
        ("howto", "How can I make a simple cup of tea?"),
        ("fact", "What is photosynthesis?"),
        ("fact", "How far is the Moon from the Earth?"),
        ("advice", "What are some good hobbies for someone who likes being outdoors?"),
        ("writing", "Write a polite email to my neighbor asking them to keep the noise down at night."),
        ("writing", "Give me three ideas for a birthday party for a ten-year-old."),
        ("writing", "Describe a rainy day in the city in a few sentences."))


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


def open_requests() -> list[dict]:
    """The open-ended requests, in a fixed order."""
    counts: dict[str, int] = {}
    rows = []
    for category, prompt in OPEN:
        counts[category] = counts.get(category, 0) + 1
        rows.append({"id": f"open-{category}-{counts[category]:02d}", "category": category, "prompt": prompt})
    return rows


def texts() -> list[dict]:
    return [{"id": f"text-{k + 1:02d}", "text": text} for k, text in enumerate(PARAGRAPHS)]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def render() -> dict[Path, str]:
    """The content of each probe file, as this script writes it."""
    return {TEXT_FILE: _jsonl(texts()), INSTRUCTIONS_FILE: _jsonl(instructions()), OPEN_FILE: _jsonl(open_requests())}


def main() -> None:
    for path, content in render().items():
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path} ({content.count(chr(10))} rows)")


if __name__ == "__main__":
    main()
