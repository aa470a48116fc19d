#!/usr/bin/env bash
# README "Stable Diffusion 1.x scale" (`make sd-scale`): exports the SD 1.5-sized UNet
# (tools/sd_scale.py) into a scratch folder and measures semu on it: wall time and peak RSS of
# each command (/usr/bin/time -v), and the peak RSS of each phase semu logs (VmRSS sampled every
# second). Usage: sd_scale.sh SEMU [DIR (default /tmp/sd_scale)] [SIZES (default "16 32 64")]
# 7 GB of disk, and memory up to MEM_LIMIT_GB (20) of address space per command; the folder is deleted at the end unless KEEP=1.
set -euo pipefail
SEMU=$1 DIR=${2:-/tmp/sd_scale} SIZES=${3:-16 32 64}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python}
mkdir -p "$DIR/out"
[ -f "$DIR/unet.onnx" ] || "$PY" "$HERE/sd_scale.py" "$DIR" --sizes "${SIZES// /,}"

# measure NAME CMD…: runs CMD under /usr/bin/time -v, every log line and an RSS sample each
# second stamped with the same clock, then prints wall, peak RSS and the peak of each phase.
stamp() { while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done; }
measure() {
  local name=$1; shift
  local log="$DIR/$name.log" rss="$DIR/$name.rss"
  : > "$rss"
  # The address-space cap turns a run that would exhaust the machine into an allocation error.
  ( ulimit -v $((${MEM_LIMIT_GB:-20} * 1024 * 1024)); exec /usr/bin/time -v "$@" ) > >(stamp > "$log") 2>&1 &
  local tpid=$!
  while kill -0 "$tpid" 2>/dev/null; do
    local child; child=$(pgrep -P "$tpid" -x "$(basename "$1")" | head -1 || true)
    [ -n "$child" ] && awk -v t="$EPOCHREALTIME" '/VmRSS/ {print t, $2}' "/proc/$child/status" >> "$rss" 2>/dev/null || true
    sleep 1
  done
  wait "$tpid" || { echo "$name: FAILED: $(grep -m1 -o 'error: .*' "$log" | cut -c1-400)"; }
  sleep 0.2  # the stamping reader finishes the log
  "$PY" "$HERE/sd_scale.py" --phases "$log" "$rss" --name "$name"
}

cd "$DIR"
# Which runs: LAYERS (cross-attention; "cross-attention all"), ITERS (1 2: the difference is one
# training step), BATCH (2 images per step), SAMPLE=0 skips the one-step `semu sample`.
for s in $SIZES; do
  if [ "${SAMPLE:-1}" = 1 ]; then
    "$PY" -c "import numpy as np; np.save('noise_$s.npy', np.random.default_rng(0).standard_normal((1,4,$s,$s)).astype(np.float32))"
    measure "sample_$s" "$SEMU" sample --model "$DIR/unet.onnx" --prompt "a handwritten three" --n 1 --steps 1 \
      --noise "noise_$s.npy" --out "out/s_$s.npz" --device cpu
  fi
  [ -f "forget_$s.npz" ] || "$PY" -c "import numpy as np; r = np.random.default_rng($s)
np.savez('forget_$s.npz', x=r.random((2, 4, $s, $s), dtype=np.float32), y=np.zeros(2, np.int64))"
  for layers in ${LAYERS:-cross-attention}; do
    for it in ${ITERS:-1 2}; do
      name="unlearn_${layers}_${s}_b${BATCH:-2}_it$it"
      measure "$name" "$SEMU" unlearn --model "$DIR/unet.onnx" --forget "forget_$s.npz" \
        --forget-prompt "a handwritten three" --target-prompt "a handwritten four" --train-layers "$layers" \
        --iterations "$it" --batch-size "${BATCH:-2}" --no-verify --device cpu --out out/u.onnx --report "$name.json"
      rm -f out/u.onnx*
    done
  done
done
[ -n "${KEEP:-}" ] || rm -rf "$DIR"
