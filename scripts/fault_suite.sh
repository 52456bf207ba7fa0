#!/usr/bin/env bash
# The bad-input and fault suite (issue 23), with a one-line summary computed from the test results (JUnit XML):
#   bad inputs: N tried, T tracebacks, A accepted then failed; faults: M tried, L lost, D duplicated
# Bad inputs are the cases of tests/test_bad_input.py and the refusal tests of the fault files (a test named
# *refuse*): each asserts exit 2 (or a BadInputError), no traceback and nothing written. A failed one whose report
# shows a traceback counts as a traceback; any other failed one as accepted then failed. Faults are the other tests
# of tests/test_faults.py and tests/test_faults_inputs.py: each asserts that no trial or record is lost or trained
# twice; a failed one counts as duplicated when its report says trained twice / duplicated, else as lost.
# Usage: scripts/fault_suite.sh [pytest args, e.g. -m "not slow"]; exit status 1 when any count is not 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
xml=$(mktemp --suffix=.xml)
trap 'rm -f "$xml"' EXIT
"$PY" -m pytest tests/test_bad_input.py tests/test_faults.py tests/test_faults_inputs.py -q --junitxml="$xml" "$@" \
  || true  # the summary below says what failed
"$PY" - "$xml" <<'PYEOF'
import re
import sys
import xml.etree.ElementTree as ET

bad = {"tried": 0, "tracebacks": 0, "accepted": 0}
faults = {"tried": 0, "lost": 0, "duplicated": 0}
errors = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    if case.find("skipped") is not None:
        continue
    failure = case.find("failure")
    if failure is None:
        failure = case.find("error")
    text = "" if failure is None else (failure.get("message") or "") + (failure.text or "")
    name, module = case.get("name", ""), case.get("classname", "")
    if module.endswith("test_bad_input") or "refuse" in name:
        bad["tried"] += 1
        if failure is not None:
            bad["tracebacks" if "Traceback" in text else "accepted"] += 1
    else:
        faults["tried"] += 1
        if failure is not None:
            faults["duplicated" if re.search(r"twice|duplicat", text, re.I) else "lost"] += 1
    errors += failure is not None
print(
    f"bad inputs: {bad['tried']} tried, {bad['tracebacks']} tracebacks, {bad['accepted']} accepted then failed; "
    f"faults: {faults['tried']} tried, {faults['lost']} lost, {faults['duplicated']} duplicated"
)
sys.exit(1 if errors else 0)
PYEOF
