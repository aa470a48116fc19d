"""Makes fixtures/deployed/: the digits CNN (fixtures/digits/model.onnx) as deployment tools
hand it over — half precision, a fixed batch of 1, and quantized by onnxruntime's own
quantization tools. Idempotent: skips when every output exists (FORCE=1 regenerates).

Output:
  digits_fp32.onnx     the digits weights re-exported by torch.onnx (TorchScript exporter,
                       dynamic batch): the float model the quantized ones are made from
  digits_half.onnx     model.half() exported: float16 input, weights and logits
  digits_static1.onnx  batch fixed to 1 (no dynamic axes)
  digits_qdq.onnx      quantize_static, QDQ format, per-tensor, int8 weights, uint8 activations
  digits_qdq_pc.onnx   quantize_static, QDQ format, per-channel, int8 weights and activations
  digits_dyn.onnx      quantize_dynamic, int8 weights (DynamicQuantizeLinear + ConvInteger +
                       MatMulInteger)
  digits_dyn_u8.onnx   quantize_dynamic, uint8 weights
  digits_qop.onnx      quantize_static, QOperator format, per-tensor: QuantizeLinear, QLinearConv,
                       MaxPool and Flatten on uint8, com.microsoft QGemm, DequantizeLinear (the
                       ReLUs are folded into the uint8 output ranges); int8 weights, int32 biases
  digits_qop_pc.onnx   the same, per-channel weight scales and zero points

Calibration: the first 200 training images, one per batch, in order (deterministic).
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "fixtures", "digits")
OUT = os.path.join(ROOT, "fixtures", "deployed")
NAMES = ["digits_fp32", "digits_half", "digits_static1", "digits_qdq", "digits_qdq_pc", "digits_dyn",
         "digits_dyn_u8", "digits_qop", "digits_qop_pc", "text_cls_nbits"]


class Digits(nn.Module):
    """The architecture of fixtures/digits/model.onnx (tools/make_digits.py), flat."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 64, 3, padding=1)
        self.l1 = nn.Linear(1024, 64)
        self.l2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.c3(x))
        return self.l2(torch.relu(self.l1(x.flatten(1))))


def load_digits():
    m = onnx.load(os.path.join(SRC, "model.onnx"))
    w = {t.name: torch.tensor(numpy_helper.to_array(t)) for t in m.graph.initializer}
    net = Digits()
    pairs = [(net.c1, "onnx::Conv_41", "onnx::Conv_42"), (net.c2, "onnx::Conv_44", "onnx::Conv_45"),
             (net.c3, "onnx::Conv_47", "onnx::Conv_48"), (net.l1, "classifier.1.weight", "classifier.1.bias"),
             (net.l2, "classifier.3.weight", "classifier.3.bias")]
    with torch.no_grad():
        for layer, wn, bn in pairs:
            layer.weight.copy_(w[wn])
            layer.bias.copy_(w[bn])
    return net.eval()


def export(net, example, path, dynamic):
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    torch.onnx.export(net, example, path, input_names=["input"], output_names=["logits"], dynamic_axes=axes,
                      dynamo=False)


def main():
    paths = {n: os.path.join(OUT, n + ".onnx") for n in NAMES}
    if all(os.path.exists(p) for p in paths.values()) and os.environ.get("FORCE") != "1":
        return
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    net = load_digits()
    x = np.load(os.path.join(SRC, "train.npz"))["x"][:200].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    half = Digits()
    half.load_state_dict(net.state_dict())
    export(half.half().eval(), torch.zeros(2, 1, 8, 8, dtype=torch.float16), paths["digits_half"], True)
    export(net, torch.zeros(1, 1, 8, 8), paths["digits_static1"], False)
    src = paths["digits_fp32"]
    export(net, torch.zeros(2, 1, 8, 8), src, True)
    quantize_static(src, paths["digits_qdq"], Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    quantize_static(src, paths["digits_qdq_pc"], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    for name, pc in [("digits_qop", False), ("digits_qop_pc", True)]:
        quantize_static(src, paths[name], Reader(), quant_format=QuantFormat.QOperator, per_channel=pc,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    quantize_dynamic(src, paths["digits_dyn"], weight_type=QuantType.QInt8)
    quantize_dynamic(src, paths["digits_dyn_u8"], weight_type=QuantType.QUInt8)
    # 4-bit blocks (onnxruntime's MatMulNBits quantizer, as for LLMs) of the BERT-style text
    # classifier's MatMul weights, asymmetric: uint8-packed zero points.
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    q = MatMulNBitsQuantizer(onnx.load(os.path.join(ROOT, "fixtures", "text_cls", "model.onnx")), block_size=32,
                             is_symmetric=False)
    q.process()
    q.model.save_model_to_file(paths["text_cls_nbits"])
    for n, p in paths.items():
        onnx.checker.check_model(onnx.load(p))
        print(f"{n}: {os.path.getsize(p)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
