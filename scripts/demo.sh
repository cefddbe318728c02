#!/usr/bin/env bash
# The README's main job: set-up, then the end-to-end flow on the embedded default data.
# Outputs go to ${VITFORGE_OUT:-out/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
out="${VITFORGE_OUT:-out/demo}"
mkdir -p "$out"
echo "== 1. numerics: integer nonlinear units vs float and I-BERT/PLAN"
vitforge approx --plot "$out/approx.png"
vitforge approx --json > "$out/approx.json"
echo "demo outputs in $out/"
