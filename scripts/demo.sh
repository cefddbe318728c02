#!/usr/bin/env bash
# The README's main job: set-up, then the end-to-end flow on the embedded default data:
#   numerics -> train (dense, selectors, int8 QAT) -> export -> golden eval -> RTL generation.
# Outputs go to ${VITFORGE_OUT:-out/demo}. Takes about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
out="${VITFORGE_OUT:-out/demo}"
mkdir -p "$out"

echo "== 1/4 numerics: integer nonlinear units vs float and I-BERT/PLAN"
vitforge approx --plot "$out/approx.png"

echo "== 2/4 train the demo ViT with HeatViT selectors, quantize to int8, export, evaluate (golden model)"
vitforge train --preset demo --out "$out/train"

echo "== 3/4 re-evaluate the exported artifact: must reproduce int8_pruned_acc exactly"
vitforge eval --artifact "$out/train/artifact" --backend golden --json | tee "$out/eval.json"
python - "$out/train/report.json" "$out/eval.json" <<'PY'
import json, sys
report, ev = (json.load(open(p)) for p in sys.argv[1:3])
assert ev["top1"] == report["int8_pruned_acc"], (ev["top1"], report["int8_pruned_acc"])
print(f"float dense {report['float_dense_acc']:.2f}% -> int8 pruned {ev['top1']:.2f}% at "
      f"{report['gmacs_pruned']:.5f} / {report['gmacs_dense']:.5f} GMACs "
      f"(selectors before blocks {report['selector_blocks']}, keep rates {report['keep_rates']})")
PY

echo "== 4/4 generate the accelerator's Verilog (demo preset)"
vitforge rtl generate --preset demo --out "$out/rtl"

echo "outputs in $out/: approx.png, train/report.json, train/plots/*.png, train/artifact/, rtl/"
