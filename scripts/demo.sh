#!/usr/bin/env bash
# The README's main job: set-up, then the end-to-end flow on the embedded default data:
#   numerics -> train (dense, selectors, int8 QAT) -> export -> golden eval -> RTL generation
#   -> whole-model inference on the RTL (Verilator), checked against the golden model;
#   then co-optimization (CF-MESMO vs NSGA-II), ReRAM crossbars under noise, and the ZCU102 project.
# Outputs go to ${VITFORGE_OUT:-out/demo}. Takes about 15 minutes on 2 cores.
# VITFORGE_RTL_IMAGES: test images run on the RTL (default 16; about 7 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
out="${VITFORGE_OUT:-out/demo}"
rtl_images="${VITFORGE_RTL_IMAGES:-16}"
mkdir -p "$out"

echo "== 1/8 numerics: integer nonlinear units vs float and I-BERT/PLAN"
vitforge approx --plot "$out/approx.png"

echo "== 2/8 train the demo ViT with HeatViT selectors, quantize to int8, export, evaluate (golden model)"
vitforge train --preset demo --out "$out/train"

echo "== 3/8 re-evaluate the exported artifact: must reproduce int8_pruned_acc exactly"
vitforge eval --artifact "$out/train/artifact" --backend golden --json | tee "$out/eval.json"
python - "$out/train/report.json" "$out/eval.json" <<'PY'
import json, sys
report, ev = (json.load(open(p)) for p in sys.argv[1:3])
assert ev["top1"] == report["int8_pruned_acc"], (ev["top1"], report["int8_pruned_acc"])
print(f"float dense {report['float_dense_acc']:.2f}% -> int8 pruned {ev['top1']:.2f}% at "
      f"{report['gmacs_pruned']:.5f} / {report['gmacs_dense']:.5f} GMACs "
      f"(selectors before blocks {report['selector_blocks']}, keep rates {report['keep_rates']})")
PY

echo "== 4/8 generate the accelerator's Verilog (demo preset)"
vitforge rtl generate --preset demo --out "$out/rtl"

echo "== 5/8 run ${rtl_images} test images on the RTL (AXI top on Verilator, emulated DDR): every logit vs the golden model"
vitforge run --artifact "$out/train/artifact" --backend rtl --images "$rtl_images" --json --no-progress \
  | tee "$out/run_rtl.json"
python - "$out/run_rtl.json" "$out/train/report.json" <<'PY'
import json, sys
run, report = (json.load(open(p)) for p in sys.argv[1:3])
assert run["exact"] == run["images"], f"{run['images'] - run['exact']} images differ from the golden model"
ms = run["ms_per_image_at_clock"]
print(f"RTL: {run['exact']}/{run['images']} images bit-exact; {run['cycles_per_image']:.0f} cycles per image = "
      f"{ms:.3f} ms at {run['clock_mhz']:g} MHz; {run['wall_s_per_image']:.1f} s of simulation per image")
PY

echo "== 6/8 co-optimization: CF-MESMO and CF-MESMO-HV against NSGA-II on momf-branin-currin (one seed, hypervolume against cost)"
vitforge coopt compare --problem momf-branin-currin --methods nsga2 cfmesmo cfmesmo-hv --seeds 1 --budget 30 \
  --method-budget cfmesmo=8 cfmesmo-hv=8 --max-evals cfmesmo=22 cfmesmo-hv=40 --out "$out/coopt"

echo "== 7/8 ReRAM: a bit-slice-L1 ResNet-20 with column budgets on 8-row crossbars, 1-bit MSB / 3-bit ADCs, without and with noise"
vitforge reram train --method bitslice-l1 --channels 4 --epochs 4 1.5 3 --max-train 3000 --rows 8 --adc-bits 3,3,3,1 \
  --adc-budget --out "$out/reram" --no-progress --json
vitforge reram eval --checkpoint "$out/reram/model.safetensors" --rows 8 --adc-bits 3,3,3,1 --images 64 --seeds 0 \
  --no-progress --out "$out/reram_eval_clean.json"
vitforge reram eval --checkpoint "$out/reram/model.safetensors" --rows 8 --adc-bits 3,3,3,1 --noise --prog-sigma 0.1 \
  --frequency-mhz 1000 --temperature-k 400 --images 64 --seeds 0 --plots "$out/reram/plots" --no-progress \
  --out "$out/reram_eval.json"

echo "== 8/8 write the ZCU102 Vivado project for the demo preset (the bitstream needs Vivado: exit code 3 without it)"
set +e
vitforge board build --board zcu102 --preset demo --out "$out/zcu102" > "$out/zcu102.json"
board_rc=$?
set -e
if [ "$board_rc" -eq 3 ]; then
  echo "ZCU102 project in $out/zcu102/ (build.tcl, rtl/, include/vitforge_accel.h); no Vivado here, so no .bit:" \
       "run the command above on a machine with Vivado"
elif [ "$board_rc" -ne 0 ]; then
  exit "$board_rc"
fi

echo "outputs in $out/: approx.png, train/report.json, train/plots/*.png, train/artifact/, rtl/, run_rtl.json, coopt/hv_vs_cost.png, reram/, reram_eval.json, zcu102/"
