#!/usr/bin/env bash
# The README's test command: set-up, then the whole suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k quant`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
set +e
python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$rc" = 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$rc"
