#!/usr/bin/env bash
# Peak resident memory of semu on the ~1 GB external-data model of tools/make_big_model.py
# (made on demand under fixtures/.cache/big/): inspect, load → save round trips through
# `semu patch apply`, a forward pass, and binding the same weights from safetensors.
#   bash tools/measure_big_model.sh [path/to/semu]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SEMU="${1:-$ROOT/target/release/semu}"
BIG="$ROOT/fixtures/.cache/big"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -f "$BIG/weights.safetensors" ] || "$PY" "$ROOT/tools/make_big_model.py" --safetensors
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$PY" -c "import numpy as np; np.save('$OUT/x.npy', np.random.default_rng(0).standard_normal((4, 8192), dtype=np.float32))"

peak() { # label, command…: prints the peak RSS (MiB) and wall time of the command
  local label="$1"; shift
  /usr/bin/time -v "$@" >"$OUT/log" 2>&1 || { cat "$OUT/log"; exit 1; }
  local kb wall
  kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$OUT/log")
  printf '%-52s peak RSS %6d MiB   wall %s\n' "$label" $((kb / 1024)) "$wall"
}

echo "model: $(du -h "$BIG/model.onnx.data" | cut -f1) external data ($BIG)"
peak "semu --version (baseline: libtorch + onnxruntime loaded)" "$SEMU" --version
peak "semu inspect model.onnx" "$SEMU" inspect "$BIG/model.onnx"
peak "patch apply, head only (load → save round trip)" \
  "$SEMU" patch apply "$BIG/model.onnx" "$BIG/head.patch.safetensors" --out "$OUT/a/model.onnx"
peak "patch apply, one 8192² layer (256 MiB) changed" \
  "$SEMU" patch apply "$BIG/model.onnx" "$BIG/fc0.patch.safetensors" --out "$OUT/b/model.onnx"
peak "semu run model.onnx (all weights in libtorch)" \
  "$SEMU" run "$BIG/model.onnx" --input "input=$OUT/x.npy" --output-dir "$OUT" --device cpu
peak "semu inspect skeleton.onnx --weights (bound inline)" \
  "$SEMU" inspect "$BIG/skeleton.onnx" --weights "$BIG/weights.safetensors"
peak "semu run skeleton.onnx --weights (inline + libtorch)" \
  "$SEMU" run "$BIG/skeleton.onnx" --weights "$BIG/weights.safetensors" --input "input=$OUT/x.npy" --output-dir "$OUT" --device cpu
peak "patch apply skeleton.onnx --weights (inline save)" \
  "$SEMU" patch apply "$BIG/skeleton.onnx" "$BIG/head.patch.safetensors" --weights "$BIG/weights.safetensors" --out "$OUT/c/model.onnx"
