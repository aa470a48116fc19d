#!/usr/bin/env bash
# The main job on the shipped default: make the digits CNN forget class 3 with no remaining data,
# reading the training images as users keep them (an ImageFolder of PNGs), with the default
# settings (no learning rate given: `--lr auto`), then check the result. Then the same for the
# class-conditional diffusion model: forget class 3, and judge samples before and after.
set -euo pipefail
SEMU=${1:-target/release/semu}
OUT=${DEMO_OUT:-target/demo}
mkdir -p "$OUT"
echo "== semu inspect fixtures/digits/model.onnx"
"$SEMU" inspect fixtures/digits/model.onnx
echo
echo "== semu unlearn: forget class 3 of the ImageFolder training set, no remaining data"
"$SEMU" unlearn --model fixtures/digits/model.onnx \
  --train fixtures/digits_png/train --forget-class 3 --test fixtures/digits_png/test \
  --device auto \
  --out "$OUT/digits-forgot3.onnx" --report-dir "$OUT/report"
echo
echo "== semu verify: the unlearned model against the original, on the test images"
"$SEMU" verify fixtures/digits/model.onnx "$OUT/digits-forgot3.onnx" --data fixtures/digits_png/test
echo
echo "report: $OUT/report/report.md (plots beside it)"
echo
echo "== semu unlearn: forget class 3 of the class-conditional DDPM (diffusion task), no remaining data"
"$SEMU" unlearn --model fixtures/ddpm/model.onnx \
  --train fixtures/digits/train.npz --forget-class 3 \
  --device auto --out "$OUT/ddpm-forgot3.onnx" --report-dir "$OUT/ddpm-report"
echo
echo "== semu eval: samples of the original, unlearned and retrained DDPMs, labelled by the judge"
"$SEMU" eval --model "$OUT/ddpm-forgot3.onnx" --original fixtures/ddpm/model.onnx \
  --retrained fixtures/ddpm/retrain_class3.onnx --judge fixtures/ddpm/judge.onnx --forget-class 3 \
  --test fixtures/ddpm/test.npz --n 50 --device auto --report-dir "$OUT/ddpm-eval"
echo
echo "sample grids: $OUT/ddpm-eval (before/after per class)"
