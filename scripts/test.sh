#!/usr/bin/env bash
# The README's test command: set-up, then the whole suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k quant`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
set +e
# Two workers (CI has 2 cores), each test file on one worker (module fixtures are built once); the
# cocotb and Verilator build caches are locked per design, so workers may share them.
python -m pytest -n 2 --dist loadfile "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$rc" = 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$rc"
