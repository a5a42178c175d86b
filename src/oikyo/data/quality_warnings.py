"""Plain-English warnings drawn from a quality report (see :mod:`oikyo.data.quality`).

``warnings_for(report)`` reads only the report dict, so a stored report can be re-explained
without the data. Each warning names a count, its share of the rows where that helps, and what
to do about it.
"""

from __future__ import annotations

_PII_NAMES = {
    "email": "email addresses",
    "phone": "phone numbers",
    "ip_address": "IP addresses",
    "credit_card": "credit-card-like numbers",
    "secret": "API keys or secrets",
}


def _rows(n: int, total: int, verb: str = "") -> str:
    """'12 rows (1.2%) are' / '1 row (0.1%) is': the count, its share, and the verb agreeing."""
    share = f" ({100 * n / total:.1f}%)" if total else ""
    verbs = {"are": "is", "have": "has", "do": "does", "contain": "contains"}
    verb = f" {verbs.get(verb, verb) if n == 1 else verb}" if verb else ""
    return f"{n:,} row{'s' if n != 1 else ''}{share}{verb}"


def warnings_for(report: dict) -> list[str]:
    """The findings in ``report`` a user should act on, most important first."""
    total = report["rows"]
    if total == 0:
        return ["The dataset has no rows."]
    out = _leakage_warnings(report["leakage"])
    out += _pii_warnings(report["pii"])
    dupes = report["duplicates"]
    exact, near = dupes["exact"]["count"], dupes["near"]["count"]
    if exact:
        out.append(f"{_rows(exact, total, 'are')} {'an exact duplicate' if exact == 1 else 'exact duplicates'} "
                   "of an earlier row: drop the copies so those examples do not weigh more in training.")
    if near:
        out.append(f"{_rows(near, total, 'are')} {'a near duplicate' if near == 1 else 'near duplicates'} "
                   f"of an earlier row (word {dupes['near']['shingle_words']}-gram Jaccard >= "
                   f"{dupes['near']['threshold']}): check whether they add anything.")
    out += _answer_warnings(report)
    out += _label_warnings(report["labels"])
    return out


def _leakage_warnings(leakage: dict) -> list[str]:
    out = []
    rule = f"exactly or with >= {leakage['min_share']:.0%} of their word {leakage['ngram']}-grams"
    splits = leakage["splits"] or {}
    if splits and not splits["rows_by_split"].get("train"):
        out.append("The dataset has splits but no train rows, so split leakage was not checked.")
    for split, entry in (splits.get("checked") or {}).items():
        if entry["leaked"]:
            occur = "occurs" if entry["leaked"] == 1 else "occur"
            out.append(f"{_rows(entry['leaked'], entry['rows'])} of the {split} split also {occur} in "
                       f"train ({rule}): scores on {split} will be optimistic; re-split or drop them.")
    for name, entry in leakage["eval_sets"].items():
        if entry["leaked"]:
            occur = "occurs" if entry["leaked"] == 1 else "occur"
            out.append(f"{entry['leaked']:,} of {entry['rows']:,} examples of evaluation set {name!r} {occur} "
                       f"in this dataset ({rule}): evaluation on {name!r} would be contaminated.")
    return out


def _pii_warnings(pii: dict) -> list[str]:
    out = []
    for kind, entry in pii["by_type"].items():
        if entry["rows"]:
            out.append(f"{_rows(entry['rows'], 0, 'contain')} possible "
                       f"{_PII_NAMES.get(kind, kind)}: review or scrub them before training.")
    return out


def _answer_warnings(report: dict) -> list[str]:
    out, total, answers = [], report["rows"], report["answers"]
    what = {"conversations": "an empty assistant answer", "preference": "an empty chosen or rejected answer",
            "unpaired_preference": "an empty assistant answer", "text": "empty text"}[report["kind"]]
    if answers["empty"]:
        out.append(f"{_rows(answers['empty'], total, 'have')} {what}.")
    if answers["short"]:
        out.append(f"{_rows(answers['short'], total, 'have')} a very short answer "
                   "(under 3 characters).")
    if answers.get("identical_pairs"):
        out.append(f"{_rows(answers['identical_pairs'], total, 'have')} identical chosen and rejected "
                   "answers: they teach a preference nothing.")
    turns = report["turns"]
    if turns is None:
        return out
    if turns["bad_ending"]:
        if report["kind"] in ("conversations", "unpaired_preference"):
            what = _rows(turns["bad_ending"], total, "do") + " not end with an assistant turn"
            if turns["no_assistant"]:
                what += f"; {turns['no_assistant']:,} of them have none at all (nothing to train on)"
        else:
            what = _rows(turns["bad_ending"], total, "have") + " a prompt that does not end with a user turn"
        out.append(what + ".")
    if turns["no_user"]:
        out.append(f"{_rows(turns['no_user'], total, 'have')} no user turn.")
    return out


def _label_warnings(labels: dict | None) -> list[str]:
    if labels is None:
        return []
    out = []
    if labels["single_class"]:
        out.append(f"Every labeled row has the same label ({labels['rarest']['label']!r}): "
                   "a classifier learns nothing from one class.")
    elif labels["imbalanced"]:
        rare = labels["rarest"]
        out.append(f"Label {rare['label']!r} is rare: {rare['count']:,} rows ({rare['share']:.1%} of "
                   "labeled rows); consider more examples of it or class weighting.")
    if labels["unlabeled"]:
        out.append(f"{_rows(labels['unlabeled'], 0, 'have')} no label while others have one.")
    return out
