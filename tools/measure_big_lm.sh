#!/usr/bin/env bash
# Peak resident memory of `semu unlearn` (γ 0.8 as the table was measured, gate included) on a big random-weight
# GPT-2 with external data (tools/make_big_lm.py, made on demand in a scratch folder), next to
# the formula it should stay within:
#   B (the process before the model loads: libtorch, onnxruntime, data)
#   + W (the weights) + G (one f32 gradient per adapted weight) + A (one batch's activations)
# B and A are read from semu's own log (-v), W from the files, G from the report's layer shapes.
#   bash tools/measure_big_lm.sh [semu] [sizes: "1g 4g"] [scratch dir]
# KEEP_FREED=1 also runs each size with the allocator settings of small models (freed memory kept
# in the heap: SEMU_KEEP_FREED=1), for comparison. Not part of `make test` (minutes per size).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SEMU="${1:-$ROOT/target/release/semu}"
SIZES="${2:-1g 4g}"
DIR="${3:-/tmp/semu-big-lm}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DIR"
head -8 "$ROOT/fixtures/text_lm/forget.jsonl" > "$DIR/forget.jsonl"

run() { # size, label, env…: one unlearn under /usr/bin/time -v; prints the row
  local size=$1 label=$2; shift 2
  local m="$DIR/$size" log="$DIR/$size-$label.log"
  env "$@" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" /usr/bin/time -v "$SEMU" -v unlearn --model "$m/model.onnx" \
    --forget "$DIR/forget.jsonl" --epochs 1 --batch-size 8 --gamma 0.8 --out "$DIR/out-$size/model.onnx" \
    --report "$DIR/$size-$label.json" >"$log" 2>&1 || { tail -20 "$log"; exit 1; }
  "$PY" - "$log" "$DIR/$size-$label.json" "$m" "$size" "$label" <<'PY'
import json, math, os, re, sys
log, rep, m, size, label = sys.argv[1:]
text = open(log).read()
gib = 2 ** 30
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) * 1024 / gib
b = float(re.search(r"memory at reading data: resident ([\d.]+) GiB", text).group(1))
a = float(re.search(r"one batch's activations take ([\d.]+) GiB", text).group(1))
w = sum(os.path.getsize(os.path.join(m, f)) for f in ("model.onnx", "model.onnx.data")) / gib
layers = json.load(open(rep))["layers"]
g = sum(4 * math.prod(l["shape"]) for l in layers) / gib
f = b + w + g + a
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
ok = "verified    passed" in text
print(f"| {size} | {label} | {b:.2f} | {w:.2f} | {g:.2f} | {a:.2f} | {f:.2f} | {peak:.2f} | {peak / f:.3f} | {wall} | {'passed' if ok else 'NOT verified'} |", flush=True)
PY
}

echo "| model | allocator | B | W | G | A | formula B+W+G+A | peak RSS | peak / formula | wall | gate |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for size in $SIZES; do
  [ -f "$DIR/$size/model.onnx.data" ] || OMP_NUM_THREADS=2 "$PY" "$ROOT/tools/make_big_lm.py" --size "$size" --out "$DIR/$size" >/dev/null 2>&1
  run "$size" large
  [ "${KEEP_FREED:-0}" = 1 ] && run "$size" keep-freed SEMU_KEEP_FREED=1
  rm -rf "$DIR/out-$size"
done
echo "(GiB; B, A from semu -v; W = model.onnx + model.onnx.data; G = 4 bytes × the adapted weights' elements)"
