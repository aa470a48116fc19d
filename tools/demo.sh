#!/usr/bin/env bash
# The main job on the shipped default: make the digits CNN forget class 3 with no remaining data.
set -euo pipefail
SEMU=${1:-target/release/semu}
OUT=${DEMO_OUT:-target/demo}
mkdir -p "$OUT"
echo "== semu inspect fixtures/digits/model.onnx"
"$SEMU" inspect fixtures/digits/model.onnx
echo
echo "== semu unlearn: forget class 3, no remaining data"
"$SEMU" unlearn --model fixtures/digits/model.onnx --forget fixtures/digits/forget_class3.npz \
  --test fixtures/digits/test.npz --gamma 0.6 --lr 0.001 --device auto \
  --out "$OUT/digits-forgot3.onnx" --report "$OUT/report.json"
