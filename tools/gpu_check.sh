#!/usr/bin/env bash
# The CUDA checks, run on a GPU machine that has torch 2.11 and onnxruntime in its python3 but
# no Rust: build here with `cargo build --profile dist` (+ `cargo test --profile dist --no-run`
# for the test binaries), carry target/dist/semu, fixtures/ and this script, then run it there.
# Prints: CUDA visible, engine CUDA vs CPU on the digits model, and SEMU timings CPU vs CUDA.
set -euo pipefail
SEMU=${SEMU:-target/dist/semu}
TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
ORT=$(python3 -c 'import onnxruntime, os, glob; d=os.path.join(os.path.dirname(onnxruntime.__file__), "capi"); print(sorted(glob.glob(d + "/libonnxruntime.so*"))[-1])')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}" SEMU_ORT_DYLIB="$ORT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for dev in cpu cuda; do
  echo "== unlearn digits class 3 on $dev"
  /usr/bin/time -f "wall %es" "$SEMU" unlearn --model fixtures/digits/model.onnx \
    --forget fixtures/digits/forget_class3.npz --test fixtures/digits/test.npz \
    --gamma 0.6 --lr 0.001 --device "$dev" --out "${OUT:-/tmp}/digits-$dev.onnx" -q | grep -E "time|test, |verified"
done
"$SEMU" verify "${OUT:-/tmp}/digits-cpu.onnx" "${OUT:-/tmp}/digits-cuda.onnx" --data fixtures/digits/test.npz --device cuda
