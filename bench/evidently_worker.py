"""Evidently's text drift check, as a worker process for bench/bench_drift.py.

Runs in its own virtual environment (Evidently pins a pandas older than oikyo's): bench_drift.py
creates it (``--evidently-python``) and talks to this script over stdin/stdout, one JSON object
a line:

    {"reference": [texts]}            -> {"ok": true}             (the texts windows are compared with)
    {"current": [texts], "percentile": bool} -> {"auc": .., "drift_abs": bool[, "drift_perc": bool]}

``drift_abs``: Evidently's ``abs_text_content_drift`` stat test (a TF-IDF + logistic regression
domain classifier trained on half of reference + current, drift when its ROC AUC on the other half
is above 0.55: the threshold the issue names). ``drift_perc``: its ``perc_text_content_drift``
(the same AUC against the 95th percentile of random classifiers' AUCs, Evidently's default for a
reference of at most 1,000 rows; only when ``percentile`` is asked: it costs about 2 s a window).
Both call Evidently's own functions; nothing is re-implemented. An error (Evidently's vectorizer
refuses a window whose every term it prunes) comes back as ``{"error": ...}``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")


ABS_THRESHOLD = 0.55  # abs_text_content_drift's default threshold


def main() -> int:
    import warnings

    import pandas as pd
    from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score

    warnings.filterwarnings("ignore")  # scikit-learn's convergence warnings on small windows
    reference = None
    for line in sys.stdin:
        message = json.loads(line)
        if "reference" in message:
            reference = pd.Series(message["reference"], dtype=object)
            reply = {"ok": True}
        else:
            current = pd.Series(message["current"], dtype=object)
            try:
                # With bootstrap=False Evidently returns (auc, auc > threshold): the abs test. The
                # perc test trains the same classifier (its split's seed is fixed) and compares its
                # AUC with 1,000 random classifiers' (about 2 s a window), so it runs only when asked.
                auc, drift_abs = calculate_text_drift_score(reference, current, bootstrap=False,
                                                            threshold=ABS_THRESHOLD)
                reply = {"auc": float(auc), "drift_abs": bool(drift_abs)}
                if message.get("percentile"):
                    _, drift_perc = calculate_text_drift_score(reference, current, bootstrap=True, p_value=0.05)
                    reply["drift_perc"] = bool(drift_perc)
            except ValueError as error:  # e.g. TF-IDF pruned every term of a tiny window
                reply = {"error": str(error)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
