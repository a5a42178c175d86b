"""What the per-request quality signals cost: time per signal on a 300-token answer, in process.

The signals (:mod:`oikyo.monitor.quality`) run in the request log's writer thread, off the
request's path; this micro-benchmark says how much CPU they take there. It times, on one core:

- ``degeneration``: :func:`oikyo.evaluate.degeneration.judge` on a 300-token prose answer
  (about 1,400 characters; 300 tokens with the SmolLM2 tokenizer);
- ``refusal``: the refusal-phrase search on its opening;
- ``json+schema``: parsing a ticket answer and comparing it with its schema;
- ``check (prose)`` / ``check (json)``: every signal of one answer, as stored;
- ``hook + metrics``: the recorder hook on one record, counters included (what a request costs).

Each figure is the median of ``--repeats`` rounds of ``--number`` calls, in microseconds per call,
with the share of one 300-token answer's generation time on the bundled model at 20 tokens/s (a
slow CPU replica; on a GPU replica the generation is faster and the share larger, still far from
the request's path).

    python bench/bench_quality_signals.py [--number 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

SENTENCES = [
    "To reset your password, open the sign-in page and choose 'Forgot password'.",
    "We send a link to the email address on your account; it works for one hour.",
    "If the email does not arrive, look in the spam folder, then ask for a new link.",
    "Passwords need at least twelve characters, with a number and a symbol.",
    "After the reset, every device that was signed in is signed out for your safety.",
    "Two-factor authentication stays on, so keep your phone close when you sign in again.",
    "Business accounts may have a password policy set by your administrator.",
    "In that case the administrator can also reset the password for you from the admin console.",
    "Should the link say it has expired, request a new one: older links stop working at once.",
    "Our support team never asks for your password by email or on the phone.",
    "If someone does, please forward the message to security@example.com.",
    "You can review recent sign-ins under Settings, Security, Devices.",
    "Remove any device you do not recognise and change your password again.",
    "For shared accounts, each person should have their own seat instead of sharing one login.",
    "Seats can be added under Billing; the price is prorated for the current month.",
    "Let us know if anything is unclear, and we will walk you through it step by step.",
]
TICKET = '{"category": "account", "priority": "medium", "sentiment": "neutral"}'


def timed(fn, number: int, repeats: int) -> float:
    """Median microseconds per call of ``fn()`` over ``repeats`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds (the median is reported)")
    args = parser.parse_args()

    from oikyo.evaluate import degeneration
    from oikyo.monitor import quality
    from oikyo.serve.gateway.metrics import RouterMetrics
    from oikyo.serve.gateway.request_log import RequestRecord

    prose = " ".join(SENTENCES * 2)[:1400]
    schema = quality.schema_from_answers([TICKET] * 10)
    hook = quality.RequestQuality(RouterMetrics("bench"), schema_for=lambda model: None)
    record = RequestRecord(id="chatcmpl-bench", deployment="bench", variant="a", model="mv-bench", endpoint="chat",
                           status=200, latency_s=1.0, completion_tokens=300, text=prose)
    cases = {
        "degeneration": lambda: degeneration.judge(prose),
        "refusal": lambda: quality.is_refusal(prose),
        "json+schema": lambda: schema.compare(quality.parse_json(TICKET)),
        "check (prose)": lambda: quality.check(prose, completion_tokens=300),
        "check (json)": lambda: quality.check(TICKET, completion_tokens=20, schema=schema),
        "hook + metrics": lambda: hook([record]),
    }
    generation_us = 300 / 20 * 1e6
    print(f"answer: {len(prose)} characters, {len(degeneration.tokens(prose))} word/symbol tokens")
    print(f"{'signal':<16} {'us/call':>9} {'share of a 300-token generation at 20 tok/s':>46}")
    for name, fn in cases.items():
        us = timed(fn, args.number, args.repeats)
        print(f"{name:<16} {us:>9.1f} {us / generation_us:>46.2e}")


if __name__ == "__main__":
    main()
