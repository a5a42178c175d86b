#!/usr/bin/env bash
# The slow part of the reliability battery (RELIABILITY.md keeps its latest figures). The fast part
# runs in the test suite (scripts/test.sh); this runs the same checks longer:
#   - schema fuzzing with schemathesis of the platform API (every phase: examples, coverage, fuzzing,
#     stateful; the suite skips coverage there) and of a deployment's serving API, with 50 examples per
#     operation instead of the suite's 5;
#   - the battery in tests/reliability at full size (OIKYO_RELIABILITY_FULL=1): repeated kills, hostile
#     files, contention and load (the suite runs each briefly).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/oikyo ] || bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OIKYO_FUZZ_EXAMPLES=${OIKYO_FUZZ_EXAMPLES:-50} OIKYO_FUZZ_PHASES=${OIKYO_FUZZ_PHASES:-examples,coverage,fuzzing,stateful}
export OIKYO_FUZZ_TIMEOUT_S=${OIKYO_FUZZ_TIMEOUT_S:-7000} OIKYO_RELIABILITY_FULL=1
exec .venv/bin/python -m pytest --timeout 7200 -rP tests/api/test_schema_fuzz.py \
    "tests/serve/test_openapi.py::test_schema_fuzzing_of_the_serving_api_finds_no_server_error" \
    tests/reliability "$@"
