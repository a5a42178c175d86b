"""Crafted traffic for the drift tests: a support-desk reference, and the same traffic with planted drift.

Requests are sentences built from a topic's words, so two seeds give different requests from the same
distribution (what "traffic drawn from the reference" means), and a different topic changes the
vocabulary and what the model reads, not just one word.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from oikyo.monitor.descriptors import Item

TOPICS = {
    "billing": ("invoice payment card refund charge subscription plan price receipt account bank transfer "
                "discount coupon tax billing statement balance").split(),
    "shipping": ("parcel delivery courier tracking address package shipment warehouse box label carrier "
                 "postage arrival route driver depot customs").split(),
    "astronomy": ("telescope galaxy nebula comet asteroid orbit planet eclipse quasar pulsar supernova "
                  "constellation meteor cosmos redshift exoplanet").split(),
    "cyrillic": ("посылка доставка адрес курьер оплата счёт возврат заказ склад номер письмо скидка "
                 "карта банк чек тариф").split(),
}
OPENERS = ["How do I check my", "Why is my", "Can you help with the", "What happens to the", "I have a question about the",
           "Please explain the", "Where can I see the"]
FILLER = "the a my your this that with for about and from".split()
LABELS = {"billing": "billing", "shipping": "shipping", "astronomy": "other", "cyrillic": "shipping"}


def request_text(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic]
    parts = [rng.choice(OPENERS), rng.choice(words)]
    for _ in range(rng.randint(2, 10)):
        parts.append(rng.choice(FILLER) if rng.random() < 0.4 else rng.choice(words))
    return " ".join(parts) + "?"


def answer_text(rng: random.Random, topic: str, scale: float = 1.0) -> str:
    words = TOPICS["billing" if topic not in ("billing", "shipping") else topic]
    count = max(3, round(rng.randint(8, 30) * scale))
    return "Sure. " + " ".join(rng.choice(words + FILLER) for _ in range(count)) + "."


def stable_topic(rng: random.Random) -> str:
    return "billing" if rng.random() < 0.5 else "shipping"


def items(n: int, seed: int, *, switch: float = 0.0, to: str = "astronomy", answer_scale: float = 1.0,
          labelled: bool = False) -> list[Item]:
    """``n`` requests; a share ``switch`` of them on topic ``to``; answers ``answer_scale`` times longer."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = to if rng.random() < switch else stable_topic(rng)
        answer = LABELS[topic] if labelled else answer_text(rng, topic, answer_scale)
        out.append(Item(input=request_text(rng, topic), output=answer, id=f"req-{seed}-{i}"))
    return out


def write_reference(path: Path, n: int, seed: int = 12345, labelled: bool = False) -> Path:
    """A conversations JSONL file of ``n`` reference rows (a label column when ``labelled``)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            topic = stable_topic(rng)
            answer = LABELS[topic] if labelled else answer_text(rng, topic)
            row = {"messages": [{"role": "user", "content": request_text(rng, topic)},
                                {"role": "assistant", "content": answer}]}
            if labelled:
                row["label"] = LABELS[topic]
            f.write(json.dumps(row) + "\n")
    return path


def reference_items(n: int, seed: int = 12345) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = stable_topic(rng)
        out.append(Item(input=request_text(rng, topic), output=answer_text(rng, topic)))
    return out
