#!/usr/bin/env bash
# The project's test command: installs into ./.venv, then runs pytest.
#   bash scripts/test.sh          # everything except tests marked `extended` or `torch` (what CI runs)
#   bash scripts/test.sh --all    # the full suite (the `torch` tests need `pip install torch` in .venv)
#   bash scripts/test.sh -k anchors   # extra arguments go to pytest
# Tests run on YOLACT_TEST_WORKERS (default 2) pytest-xdist workers, a test module per worker at a time
# (tests/conftest.py groups); YOLACT_TEST_WORKERS=0 runs them in this process.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh || { echo "test.sh: installing requirements failed" >&2; exit 1; }
marker=(-m "not extended and not torch")
if [ "${1:-}" = "--all" ]; then marker=(); shift; fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
workers=${YOLACT_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadgroup); fi
.venv/bin/python -m pytest "${parallel[@]}" "${marker[@]}" "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
