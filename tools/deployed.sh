#!/usr/bin/env bash
# README "Deployed models": `semu unlearn` with the defaults on each export in fixtures/deployed
# and fixtures/contrib (made by `make fixtures`), one report each, then one table row per model.
# Usage: tools/deployed.sh SEMU_BINARY [OUT_DIR]
set -euo pipefail
SEMU=$1
OUT=${2:-target/deployed}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
F=$ROOT/fixtures
mkdir -p "$OUT"
digits=(--forget "$F/digits/forget_class3.npz" --test "$F/digits/test.npz")
text=(--tokenizer "$F/text_cls/tokenizer.json" --train "$F/text_cls/train.jsonl" --forget-class 4
      --test "$F/text_cls/test.jsonl")
run() {
  local name=$1 model=$2; shift 2
  "$SEMU" unlearn -q --model "$model" "$@" --out "$OUT/$name.onnx" --report "$OUT/$name.json" \
    > "$OUT/$name.log" 2>&1 || echo "$name: exit $? (see $OUT/$name.log)" >&2
}
for m in digits_qdq digits_qdq_pc digits_qop digits_qop_pc digits_dyn digits_dyn_u8 digits_half digits_static1; do
  run "$m" "$F/deployed/$m.onnx" "${digits[@]}"
done
run text_cls_nbits "$F/deployed/text_cls_nbits.onnx" "${text[@]}"
run text_cls_opt "$F/contrib/text_cls_opt.onnx" "${text[@]}"
run vit_opt "$F/contrib/vit_opt.onnx" --forget "$F/contrib/vit/forget.npz" --test "$F/contrib/vit/test.npz"
"$ROOT/.venv/bin/python" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| export | forget acc. | other classes (test) | quantized weights: format | integers changed | fold rounding (steps) | onnxruntime vs engine: input model / export (allowed) | verified |")
print("|---|---|---|---|---|---|---|---|")
for name in ["digits_qdq", "digits_qdq_pc", "digits_qop", "digits_qop_pc", "digits_dyn", "digits_dyn_u8",
             "digits_half", "digits_static1",
             "text_cls_nbits", "text_cls_opt", "vit_opt"]:
    p = os.path.join(out, name + ".json")
    if not os.path.exists(p):
        print(f"| {name} | (no report) |||||||"); continue
    r = json.load(open(p))
    fa = r["forget_accuracy"]
    other = (r.get("test_accuracy") or {}).get("on_other_classes") or {}
    q = r.get("quantization")
    qf = f'{q["weights"]}: {", ".join(q["formats"])}' if q else "–"
    qc = f'{q["changed_integers"]}' if q else "–"
    qr = f'{q["rounding_max_steps"]:.2f}' if q else "–"
    rows = [x for x in (r.get("verification") or {}).get("rows", [])
            if x["runtime"] == "onnxruntime" and x["reference"] == "engine (adapters)"]
    dev = max(rows, key=lambda x: x["max_abs"]) if rows else None
    d = (f'{dev.get("input_max_abs", 0):.2e} / {dev["max_abs"]:.2e} ({dev.get("allowance", 0):.2e})' if dev else "–")
    o = f'{100*other["before"]:.2f}% → {100*other["after"]:.2f}%' if other else "–"
    print(f'| {name} | {100*fa["before"]:.2f}% → {100*fa["after"]:.2f}% | {o} | {qf} | {qc} | {qr} | {d} | {r["verified"]} |')
PY
