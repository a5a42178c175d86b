"""The platform's whole loop on the bundled model and the bundled sample data.

``run_quickstart(log)`` is what `oikyo quickstart` runs: each step calls the same stage functions
a user would call one by one, and says what it does through ``log``.
"""

from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]


def run_quickstart(log: Log, *, out=None) -> dict:
    """Run every step; returns the ids of what it made (dataset versions, ...)."""
    from oikyo.data import quality, sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.models.catalog import BUNDLED_NAME, token_counter

    made: dict = {}
    log(f"[1/4] Preparing the bundled base model {BUNDLED_NAME} (converted once from GGUF, offline)")
    counter = token_counter(BUNDLED_NAME, log=log)
    log(f"      context length {counter.context_length} tokens")

    path = sample.sample_path()
    log(f"[2/4] Importing the bundled sample dataset {path.name} (support messages -> JSON labels)")
    outcome = versions.import_dataset(path, name="support-tickets", length_fn=counter,
                                      max_tokens=counter.context_length, min_rows=50,
                                      lineage_extra={"model": BUNDLED_NAME})
    version = outcome.version
    state = "already stored as" if outcome.existed else "stored as"
    log(f"      detected format {outcome.result.format}; validated {version.rows} rows; {state} "
        f"{version.name}@{version.id}")
    made["dataset"] = version.id

    log("[3/4] Quality report (tokens counted with the base model's tokenizer)")
    report = quality.build_report(versions.iter_rows(version), version.kind, count_tokens=counter.text)
    if out is not None:
        quality.render_report(report, out)
    made["report_warnings"] = report.get("warnings", [])

    log("[4/4] Splitting into train/validation/test (seed 0, duplicates kept within one split)")
    split_version, _ = split_dataset(version.id, validation=0.1, test=0.1, seed=0)
    counts = ", ".join(f"{k} {n}" for k, n in sorted(split_version.splits.items()))
    log(f"      {split_version.name}@{split_version.id}: {counts}")
    made["split"] = split_version.id
    return made
