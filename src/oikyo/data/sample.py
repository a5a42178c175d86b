"""The bundled sample dataset: support messages triaged into a small JSON answer.

``oikyo quickstart`` fine-tunes the offline default model (SmolLM2-135M-Instruct) on this data
because the gain is visible within minutes on a CPU: the base model rarely answers with the exact
JSON, a few hundred steps of LoRA teach it the format and most of the labels. Each record is an
OpenAI-chat example::

    {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "My card was charged twice for order #48213. Please fix it today."},
        {"role": "assistant", "content": '{"category": "billing", "priority": "high", "sentiment": "neutral"}'}]}

The labels are learnable but not keyword lookups: the category comes from what the message is
about (many phrasings per category), the priority from an explicit urgency sentence *or* from how
severe the problem is, the sentiment from a friendly or angry sentence, or its absence.

    generate_support_tickets(600, seed=0)     # the same records for the same arguments
    write_sample(path, 600, seed=0)           # as JSONL; the shipped file is sample_path()
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

CATEGORIES = ("billing", "technical", "account", "shipping", "refund")
PRIORITIES = ("low", "medium", "high")
SENTIMENTS = ("positive", "neutral", "negative")
SYSTEM = (
    "Triage the customer message. Reply with only this JSON: "
    '{"category": billing|technical|account|shipping|refund, '
    '"priority": low|medium|high, "sentiment": positive|neutral|negative}'
)
SAMPLE_PATH = Path(__file__).parent / "samples" / "support_tickets.jsonl"
SAMPLE_ROWS, SAMPLE_SEED = 600, 0

_PRODUCTS = (
    "Acme Cloud", "the PixelPro camera", "the mobile app", "NoteSync", "the Orbit router", "my Pro plan",
    "the smart thermostat", "the desktop client", "StreamBox", "the web dashboard",
)
_NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Sam", "Elena", "Omar", "Grace")
_ITEMS = (
    "the blue backpack", "two phone cases", "the standing desk", "a pair of headphones", "the coffee grinder",
    "my replacement charger", "the winter jacket", "three books",
)

# Issue sentences per category, by severity: the severity is a priority cue on its own.
_ISSUES = {
    "billing": {
        "low": [
            "The invoice for {month} shows my old company name.",
            "Can I get my receipts as PDF instead of email?",
            "Is there a discount if I switch {product} to yearly billing?",
        ],
        "medium": [
            "I was charged {amount} but my plan should cost less.",
            "My {month} invoice lists a seat I removed.",
            "The price of {product} went up without any notice.",
        ],
        "high": [
            "My card was charged twice for order #{order}.", "You billed me {amount} three times this week.",
            "I am being charged for {product} after I cancelled it.",
        ],
    },
    "technical": {
        "low": [
            "The dark mode in {product} looks a bit off on my screen.",
            "Is there a keyboard shortcut to export in {product}?", "A button label in {product} has a typo.",
        ],
        "medium": [
            "{product} crashes now and then when I open large files.",
            "Sync in {product} is slow since the last update.",
            "Notifications from {product} stopped arriving on my phone.",
        ],
        "high": [
            "{product} is completely down and shows error {code}.",
            "Since the update {product} deletes my data on save.",
            "Our whole team cannot log in to {product}, error {code}.",
        ],
    },
    "account": {
        "low": [
            "How do I change the display name on my profile?",
            "Can I add a second email address to my account?", "Where do I turn off the weekly newsletter?",
        ],
        "medium": [
            "I never receive the password reset email.", "My two-factor codes are not accepted anymore.",
            "I need to move my account to a new email address.",
        ],
        "high": [
            "Someone else logged in to my account and changed the password.",
            "My account was locked and I cannot work.", "I see purchases on my account that I did not make.",
        ],
    },
    "shipping": {
        "low": [
            "Can you ship order #{order} in a gift box?", "Do you deliver to {city} on weekends?",
            "Could I change the delivery address for order #{order}? It ships next month.",
        ],
        "medium": [
            "Order #{order} has not moved in tracking for five days.",
            "{item} arrived without the instructions.",
            "The courier left order #{order} with a neighbour I do not know.",
        ],
        "high": [
            "Order #{order} was marked delivered but never arrived.", "{item} arrived smashed and unusable.",
            "I got someone else's package instead of order #{order}.",
        ],
    },
    "refund": {
        "low": [
            "How long does a refund usually take to show up?",
            "Can I get store credit instead of a refund for {item}?",
            "What is your refund policy for {product}?",
        ],
        "medium": [
            "I returned {item} two weeks ago and have no refund yet.",
            "I would like a refund for {product}, it does not fit my needs.",
            "My refund for order #{order} was only partial.",
        ],
        "high": [
            "I was promised a refund of {amount} a month ago and still have nothing.",
            "Please refund order #{order}, it was a fraud charge.",
            "The refund for {item} went to a closed card and I need the money.",
        ],
    },
}
# Explicit urgency, sometimes added (and sometimes not, so severity alone must also be read).
_URGENCY = {
    "low": [
        "No rush at all.", "Whenever you have time.", "Just wondering, not urgent.", "It can wait.",
    ],
    "medium": [
        "Could you look into it this week?", "Please check when you can.",
        "I would like an answer in a few days.",
    ],
    "high": [
        "This is urgent.", "Please fix it today.", "I need help right now.",
        "We are losing money every hour.", "Please treat this as an emergency.",
    ],
}
_TONE = {
    "positive": [
        "Thanks so much, you have always been great!", "I love {product}, by the way.",
        "Thank you, your team is awesome.", "Really happy with your service in general!",
        "Hi {name} here, big fan of your shop!",
    ],
    # Two empty entries: most neutral messages carry no tone sentence at all.
    "neutral": ["", "", "Hello.", "Hi, {name} here.", "Thanks."],
    "negative": [
        "This is really frustrating.", "I am very disappointed.", "Honestly, this is unacceptable.",
        "Terrible experience so far.", "I am about to cancel everything.",
    ],
}

def generate_support_tickets(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct support-ticket chat records, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    records: list[dict] = []
    seen: set[str] = set()
    while len(records) < n:
        category = rng.choice(CATEGORIES)
        priority = rng.choices(PRIORITIES, weights=(3, 4, 3))[0]
        # Urgent problems are more often reported angrily: a realistic, learnable correlation.
        weights = {"low": (4, 4, 2), "medium": (2, 5, 3), "high": (1, 4, 5)}[priority]
        sentiment = rng.choices(SENTIMENTS, weights=weights)[0]
        message = _message(rng, category, priority, sentiment)
        if message in seen:
            continue
        seen.add(message)
        answer = json.dumps({"category": category, "priority": priority, "sentiment": sentiment})
        records.append({"messages": [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": message},
                                     {"role": "assistant", "content": answer}]})
    return records


def _message(rng: random.Random, category: str, priority: str, sentiment: str) -> str:
    """One to three sentences: the issue, maybe an urgency sentence, maybe a tone sentence."""
    slots = {
        "product": rng.choice(_PRODUCTS),
        "name": rng.choice(_NAMES),
        "item": rng.choice(_ITEMS),
        "order": str(rng.randint(10000, 99999)),
        "amount": f"${rng.randint(5, 400)}.{rng.choice(('00', '99', '50'))}",
        "month": rng.choice(("March", "April", "May", "June", "July")),
        "city": rng.choice(("Lyon", "Austin", "Osaka")),
        "code": f"E{rng.randint(100, 599)}",
    }
    issue = rng.choice(_ISSUES[category][priority]).format(**slots)
    issue = issue[0].upper() + issue[1:]
    urgency = rng.choice(_URGENCY[priority]) if rng.random() < 0.6 else ""
    tone = rng.choice(_TONE[sentiment]).format(**slots)
    sentences = [issue, urgency]
    # A greeting goes first; any other tone sentence opens or closes the message.
    if tone:
        sentences.insert(0 if tone.startswith(("Hi", "Hello")) or rng.random() < 0.4 else 2, tone)
    return " ".join(s for s in sentences if s)


def write_sample(path: str | Path, n: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED) -> Path:
    """Write ``generate_support_tickets(n, seed)`` to ``path`` as JSONL (UTF-8, ``\\n`` endings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in generate_support_tickets(n, seed)]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    return path


def sample_path() -> Path:
    """The shipped sample file (600 records, seed 0), wherever the package is installed."""
    resource = resources.files("oikyo.data").joinpath("samples", "support_tickets.jsonl")
    return Path(str(resource))
