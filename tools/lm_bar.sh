#!/usr/bin/env bash
# Issue 10's causal-LM bar on a 256-wide, 4-layer GPT-2 trained on the text-LM fixture's texts
# (tools/make_text_lm.py, made once in DIR: ~10-15 min on one thread, 16 MB per model, with the
# model retrained without the forget passages): `semu unlearn` with its defaults (remaining and
# held-out texts given), then `semu eval` against the retrained model, and the bar checked:
# forget memorisation <= the retrained model's + 5 points, retain perplexity up <= 10%, <= 1.5%
# of the parameters trained. Usage: tools/lm_bar.sh SEMU DIR. Not part of `make test`.
set -euo pipefail
SEMU=${1:?semu binary}
DIR=${2:?work folder}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$DIR/retrain.onnx" ]; then
  OMP_NUM_THREADS=1 "$PY" "$ROOT/tools/make_text_lm.py" --n-embd 256 --n-layer 4 --n-head 4 --out "$DIR"
fi
sets=(--forget "$DIR/forget.jsonl" --retain "$DIR/retain.jsonl" --test "$DIR/holdout.jsonl")
/usr/bin/time -f "unlearn wall %e s" "$SEMU" unlearn --model "$DIR/model.onnx" "${sets[@]}" \
  --out "$DIR/forgotten.onnx" --report "$DIR/report.json" -q
"$SEMU" eval --model "$DIR/forgotten.onnx" --tokenizer "$DIR/tokenizer.json" "${sets[@]}" \
  --retrained "$DIR/retrain.onnx" --json "$DIR/eval.json"
"$PY" - "$DIR/report.json" "$DIR/eval.json" <<'PY'
import json, sys
rep, ev = (json.load(open(p)) for p in sys.argv[1:])
lm = rep["language_model"]
before, after = lm["before"], lm["after"]
retrained = ev["retrained"][1]["forget"]["memorisation"]
checks = [
    ("forget memorisation", after["forget"]["memorisation"], retrained + 5, f"<= retrained {retrained:.2f} + 5"),
    ("retain perplexity", after["retain"]["perplexity"], 1.1 * before["retain"]["perplexity"],
     f"<= 1.1 x {before['retain']['perplexity']:.3f}"),
    ("trained share (%)", 100 * rep["trainable_share"], 1.5, "<= 1.5"),
]
ok = True
for name, got, bar, why in checks:
    good = got <= bar
    ok &= good
    print(f"{name:<22}{got:>10.3f}   {why:<28}{'met' if good else 'NOT met'}")
print(f"forget memorisation before {before['forget']['memorisation']:.2f}; "
      f"Min-K% AUC {lm['before'].get('min_k_auc')} -> {lm['after'].get('min_k_auc')}")
sys.exit(0 if ok else 1)
PY
