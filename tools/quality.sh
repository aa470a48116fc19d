#!/usr/bin/env bash
# Issue 13's quality bar: SEMU on digits forgetting cases (split seeds × forgotten class or 10%
# random samples, made by tools/make_digits_splits.py), no remaining data unless the extra flags
# say so, each scored by `semu eval` against its retrained model. Prints one Markdown row per case.
#   tools/quality.sh SEMU_BIN [extra unlearn flags…]        e.g. tools/quality.sh target/release/semu --objective rl --lr 0.01
# Env: CASES="s0/class3 …" to pick cases (default: all), ROOT=target/quality.
set -euo pipefail
semu=$(realpath "$1"); shift
root=${ROOT:-target/quality}
cases=${CASES:-$(cd "$root" && ls -d s*/class* s*/random* | tr '\n' ' ')}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "| case | flags | UA | RA | TA | MIA | Avg. Gap | trained % | lr | epochs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for c in $cases; do
  s=${c%%/*}; d="$root/$c"
  uses_retain=0; for a in "$@"; do [[ $a == --use-retain || $a == --retain ]] && uses_retain=1; done
  data=(--forget "$d/forget.npz")
  ((uses_retain)) && data+=(--retain "$d/retain.npz")
  flags=(); for a in "$@"; do [[ $a == --use-retain ]] || flags+=("$a"); done
  "$semu" unlearn -q --model "$root/$s/model.onnx" "${data[@]}" --test "$root/$s/test.npz" \
    --no-verify --out "$work/m.onnx" --report "$work/r.json" ${flags[@]+"${flags[@]}"} >/dev/null
  "$semu" eval --model "$work/m.onnx" --forget "$d/forget.npz" --retain "$d/retain.npz" \
    --test "$root/$s/test.npz" --retrained "$d/retrain.onnx" --json "$work/e.json" >/dev/null 2>&1
  python3 - "$c" "$*" "$work/e.json" "$work/r.json" <<'EOF'
import json, sys
case, flags, e, r = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
m = e["metrics"]
lr = (r.get("lr_choice") or {}).get("lr", r["settings"]["lr"])
lr = f"auto {lr:g}" if r.get("lr_choice") else f"{lr:g}"
print(f"| {case} | {flags or 'defaults'} | {m['UA']:.2f} | {m['RA']:.2f} | {m['TA']:.2f} | {m['MIA']:.2f} | "
      f"{e['avg_gap']:.2f} | {100 * r['trainable_share']:.3f} | {lr} | {len(r.get('epochs', []))} |")
EOF
done
