"""Why onnxruntime's output for a dynamically quantized int8 model (quantize_dynamic,
weight_type=QInt8: DynamicQuantizeLinear + ConvInteger / MatMulInteger) differs from the ONNX
semantics, which the engine follows.

Hypothesis: on x86 without VNNI, MLAS multiplies uint8 activations by int8 weights with
VPMADDUBSW, which adds each pair of neighbouring products (along the reduction axis K) into a
*saturating* int16 before widening to int32. 255 × 127 × 2 = 64770 does not fit in int16, so a
pair of large products is clipped to 32767 (or -32768). uint8 weights take another kernel
(16-bit products widened to int32) with no such clipping.

For every ConvInteger / MatMulInteger node, the model is cut at that node: its inputs are taken
from onnxruntime itself (every intermediate value made a graph output, optimizations off), the
node alone is run in onnxruntime, and its int32 output is compared with numpy computing
  spec:  sum over K of (a - a_zp)(b - b_zp) in int32 (the ONNX definition), and
  pairs: the same sum with each pair of raw products a·b (k = 2j, 2j+1) saturated to int16,
         the zero-point terms added afterwards in int32 (as a u8 x s8 GEMM does).
Then the whole model's logits: onnxruntime (all optimizations, and none) against
onnx.reference (the spec).

  .venv/bin/python tools/ort_int8_deviation.py [MODEL.onnx] [--ratios]

--ratios: for the gate's ALLOWANCE_FACTOR, on the quantized fixtures: onnxruntime's deviation
from the spec on exports whose int8 weights were perturbed, divided by its deviation on the input.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def session(model, optimize):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def intermediates(model, feeds):
    """Every value of the graph as onnxruntime computes it (no graph optimizations)."""
    m = onnx.shape_inference.infer_shapes(model)
    have = {o.name for o in m.graph.output}
    for v in m.graph.value_info:
        if v.name not in have:
            m.graph.output.append(v)
    s = session(m, optimize=False)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def run_node(node, model, values):
    """The node alone in onnxruntime, fed the given values."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    feeds, inputs = {}, []
    for n in node.input:
        if not n:
            continue
        v = values[n] if n in values else inits[n]
        feeds[n] = v
        inputs.append(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
    out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.INT32, None)
    g = helper.make_graph([node], "cut", inputs, [out])
    m = helper.make_model(g, opset_imports=model.opset_import)
    return session(m, optimize=False).run(None, feeds)[0], feeds


def pair_sum(a, b, saturate):
    """sum_k a[..., k] * b[k, ...] for a: (R, K), b: (K, C), products added pairwise
    (k = 2j, 2j+1), each pair clipped to int16 when `saturate`."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    k = a.shape[1]
    if k % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    p = a[:, 0::2, None] * b[None, 0::2, :] + a[:, 1::2, None] * b[None, 1::2, :]
    if saturate:
        p = np.clip(p, -32768, 32767)
    return p.sum(axis=1)


def gemm_int(a, b, a_zp, b_zp, saturate):
    """(a - a_zp)(b - b_zp) for a: (R, K) uint8 rows, b: (K, C) int8, with the raw products
    summed by `pair_sum` and the zero-point terms added in int64."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    k = a.shape[1]
    raw = pair_sum(a, b, saturate)
    return raw - b_zp * a64.sum(1, keepdims=True) - a_zp * b64.sum(0, keepdims=True) + k * a_zp * b_zp


def im2col(x, kh, kw, pads, strides, pad_value):
    """(N, C, H, W) → (N·OH·OW, C·kh·kw) with K ordered (c, i, j), padding with `pad_value`."""
    n, c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=pad_value)
    oh = (x.shape[2] - kh) // strides[0] + 1
    ow = (x.shape[3] - kw) // strides[1] + 1
    cols = np.empty((n, oh, ow, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, :, i, j] = x[:, :, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1]] \
                .transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, c * kh * kw), (n, oh, ow)


class PairedMatMulInteger(OpRun):
    """onnx.reference's MatMulInteger with u8 × s8 products summed in saturating int16 pairs."""
    op_domain = ""

    def _run(self, a, b, a_zero_point=None, b_zero_point=None):
        a_zp = 0 if a_zero_point is None else int(np.asarray(a_zero_point).reshape(-1)[0])
        b_zp = 0 if b_zero_point is None else int(np.asarray(b_zero_point).reshape(-1)[0])
        sat = a.dtype == np.uint8 and b.dtype == np.int8
        y = gemm_int(a.reshape(-1, a.shape[-1]), b, a_zp, b_zp, sat)
        return (y.reshape(*a.shape[:-1], b.shape[-1]).astype(np.int32),)


PairedMatMulInteger.__name__ = "MatMulInteger"


def node_int(node, feeds, saturate):
    a = feeds[node.input[0]]
    b = feeds[node.input[1]]
    scalar = lambda i, d: int(np.asarray(feeds[node.input[i]]).reshape(-1)[0]) if len(node.input) > i and \
        node.input[i] else d
    a_zp, b_zp = scalar(2, 0), scalar(3, 0)
    if node.op_type == "MatMulInteger":
        rows = a.reshape(-1, a.shape[-1])
        return gemm_int(rows, b, a_zp, b_zp, saturate).reshape(*a.shape[:-1], b.shape[-1])
    attrs = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    m, c, kh, kw = b.shape
    assert attrs.get("group", 1) == 1 and all(d == 1 for d in attrs.get("dilations", [1, 1]))
    cols, (n, oh, ow) = im2col(a, kh, kw, attrs.get("pads", [0, 0, 0, 0]), attrs.get("strides", [1, 1]), a_zp)
    y = gemm_int(cols, b.reshape(m, -1).T, a_zp, b_zp, saturate)
    return y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)


def deviation(model, x):
    """max |onnxruntime − spec| of the logits: (all optimizations, none)."""
    spec = ReferenceEvaluator(model).run(None, {"input": x})[0]
    return tuple(float(np.abs(session(model, o).run(None, {"input": x})[0] - spec).max()) for o in (True, False))


def explain(path, x):
    model = onnx.load(path)
    print(f"{os.path.relpath(path, ROOT)}: {len(x)} test images")
    nodes = [n for n in model.graph.node if n.op_type in ("ConvInteger", "MatMulInteger")]
    values = intermediates(model, {"input": x}) if nodes else {}
    for node in nodes:
        got, feeds = run_node(node, model, values)
        spec = node_int(node, feeds, saturate=False)
        wdt = feeds[node.input[1]].dtype
        line = (f"  {node.op_type:<13} {node.name:<24} {feeds[node.input[0]].dtype}×{wdt}, {got.size} outputs: "
                f"onnxruntime − spec: max |Δ| {int(np.abs(got - spec).max())}, {int((got != spec).sum())} differ")
        if wdt == np.int8:  # the int16 pairs exist only in the u8 × s8 kernel
            pairs = node_int(node, feeds, saturate=True)
            line += (f"; onnxruntime − pairs: max |Δ| {int(np.abs(got - pairs).max())}, "
                     f"{int((got != pairs).sum())} differ")
        print(line)
    opt, none = deviation(model, x)
    print(f"  logits: onnxruntime − spec max abs {opt:.4f} (optimized), {none:.4f} (ORT_DISABLE_ALL)")
    if not any(n.op_type == "MatMulInteger" for n in nodes):
        return
    emulated = ReferenceEvaluator(model, new_ops=[PairedMatMulInteger]).run(None, {"input": x})[0]
    for optimize in (True, False):
        ort_out = session(model, optimize).run(None, {"input": x})[0]
        print(f"  logits: onnxruntime − spec with MatMulInteger's pairs saturated: max abs "
              f"{float(np.abs(ort_out - emulated).max()):.2e} ({'optimized' if optimize else 'ORT_DISABLE_ALL'})")


def ratios(x, trials=8):
    rng = np.random.default_rng(0)
    for name in ("digits_qdq", "digits_qdq_pc", "digits_dyn"):
        m = onnx.load(os.path.join(ROOT, "fixtures", "deployed", name + ".onnx"))
        d0 = deviation(m, x)[0]
        ints = [i for i, t in enumerate(m.graph.initializer)
                if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
        out = []
        for share, step in ((0.2, 2), (0.5, 6)):
            for _ in range(trials):
                p = onnx.ModelProto()
                p.CopyFrom(m)
                for i in ints:
                    t = p.graph.initializer[i]
                    a = numpy_helper.to_array(t).astype(np.int32)
                    moved = rng.random(a.shape) < share
                    a = np.where(moved, np.clip(a + rng.integers(-step, step + 1, a.shape), -127, 127), a)
                    t.CopyFrom(numpy_helper.from_array(a.astype(np.int8), t.name))
                out.append(deviation(p, x)[0] / d0)
        print(f"{name}: input deviation {d0:.4f}; export / input over {len(out)} perturbed exports: "
              f"min {min(out):.2f}, max {max(out):.2f}")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else os.path.join(ROOT, "fixtures", "deployed", "digits_dyn.onnx")
    x = np.load(os.path.join(ROOT, "fixtures", "digits", "test.npz"))["x"][:64].astype(np.float32)
    if "--ratios" in sys.argv:
        ratios(x)
        return
    explain(path, x)


if __name__ == "__main__":
    main()
