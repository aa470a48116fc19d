"""Writes fixtures/contrib/: one-node models of onnxruntime's com.microsoft contrib ops (and
SimplifiedLayerNormalization), each with fixed-seed random inputs and onnxruntime's outputs
(`<case>.onnx` + `<case>.npz`, keys `in.<name>` / `out.<name>`), plus the text classifier and
the GPT-2 LM fixtures as onnxruntime's transformer optimizer rewrites them (`text_cls_opt.onnx`,
`text_lm_opt.onnx`), and a tiny ViT image classifier likewise (`vit_opt.onnx`, with labelled
images in `vit/`: `train.npz`, `forget.npz` (class 1), `test.npz`, apart from the cases' `.npz`).
tests/contrib.rs runs every case through the engine against these outputs.
Idempotent: skips when the folder is complete (FORCE=1 rewrites it)."""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "fixtures", "contrib")
DONE = os.path.join(OUT, ".complete")
MS = "com.microsoft"

NP2ONNX = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64,
           np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def utf8(text):
    """Text as a uint8 array (the engine's .npz reader takes numbers only)."""
    return np.frombuffer(text.encode(), np.uint8)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def case(name, op, inputs, outputs, domain=MS, numpy_ref=None, source=None, **attrs):
    """A one-node model: `inputs` is a list of (name, array) with None for a skipped optional
    input; `outputs` names the outputs ("" skips one). Runs onnxruntime and writes both files.
    Ops onnxruntime implements only on CUDA (GroupNorm, BiasAdd, BiasSplitGelu) take their
    expected outputs from `numpy_ref` (the spec's formula in numpy, or onnxruntime on the unfused
    equivalent), recorded as `source`."""
    import onnxruntime as ort
    names = [n if a is not None else "" for n, a in inputs]
    node = helper.make_node(op, names, outputs, domain=domain, name=name, **attrs)
    gin = [helper.make_tensor_value_info(n, NP2ONNX[a.dtype.type], list(a.shape)) for n, a in inputs if a is not None]
    gout = [onnx.ValueInfoProto(name=o) for o in outputs if o]
    graph = helper.make_graph([node], name, gin, gout)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(model, path)
    feeds = {n: a for n, a in inputs if a is not None}
    arrays = {"in." + n: a for n, a in feeds.items()}
    if numpy_ref is None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        res = sess.run(None, feeds)
        arrays.update({"out." + o.name: r for o, r in zip(sess.get_outputs(), res)})
        arrays["source"] = utf8("onnxruntime " + ort.__version__)
    else:
        arrays.update({"out." + o: r.astype(np.float32) for o, r in zip(outputs, numpy_ref(*feeds.values()))})
        arrays["source"] = utf8(source or "numpy formula (onnxruntime has no CPU kernel)")
    np.savez(os.path.join(OUT, name + ".npz"), **arrays)


def norms(rng):
    ids = rng.integers(0, 11, (2, 5)).astype(np.int32)
    seg = rng.integers(0, 2, (2, 5)).astype(np.int32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    tables = [("word", rand(rng, 11, 8)), ("pos", rand(rng, 7, 8)), ("segemb", rand(rng, 2, 8)),
              ("gamma", rand(rng, 8)), ("beta", rand(rng, 8))]
    case("embed_layer_norm", "EmbedLayerNormalization", [("ids", ids), ("seg", seg)] + tables + [("mask", mask)],
         ["y", "mask_index", "sum"], epsilon=1e-12)
    posids = rng.integers(0, 7, (2, 5)).astype(np.int32)
    case("embed_layer_norm_posids", "EmbedLayerNormalization",
         [("ids", ids), ("seg", None), tables[0], tables[1], ("segemb", None), tables[3], tables[4], ("mask", None),
          ("posids", posids)], ["y", "mask_index"], epsilon=1e-5)
    x, skip, g, b, bias = rand(rng, 2, 3, 8), rand(rng, 2, 3, 8), rand(rng, 8), rand(rng, 8), rand(rng, 8)
    case("skip_layer_norm", "SkipLayerNormalization",
         [("x", x), ("skip", skip), ("gamma", g), ("beta", b), ("bias", bias)], ["y", "", "", "sum"], epsilon=1e-5)
    case("skip_layer_norm_2d_skip", "SkipLayerNormalization", [("x", x), ("skip", skip[0]), ("gamma", g)], ["y"])
    case("skip_simplified_layer_norm", "SkipSimplifiedLayerNormalization",
         [("x", x), ("skip", skip), ("gamma", g), ("bias", bias)], ["y", "", "", "sum"], epsilon=1e-6)
    case("simplified_layer_norm", "SimplifiedLayerNormalization", [("x", rand(rng, 2, 3, 8)), ("scale", g)], ["y"],
         domain="", epsilon=1e-6)
    case("group_norm_nhwc_silu", "GroupNorm", [("x", rand(rng, 2, 3, 3, 8)), ("gamma", g), ("beta", b)], ["y"],
         groups=4, activation=1, epsilon=1e-5, numpy_ref=lambda x, g, b: [group_norm_ref(x, g, b, 4, True, True)])
    case("group_norm_nchw", "GroupNorm", [("x", rand(rng, 2, 8, 3, 2)), ("gamma", g), ("beta", b)], ["y"],
         groups=2, activation=0, channels_last=0,
         numpy_ref=lambda x, g, b: [group_norm_ref(x, g, b, 2, False, False)])


def group_norm_ref(x, gamma, beta, groups, last, silu, eps=1e-5):
    x = x.astype(np.float64)
    if last:
        x = np.moveaxis(x, -1, 1)
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    y = g.reshape(x.shape) * gamma.reshape(shape) + beta.reshape(shape)
    if silu:
        y = y / (1 + np.exp(-y))
    return np.moveaxis(y, 1, -1) if last else y


def activations(rng):
    x, bias = rand(rng, 2, 3, 8), rand(rng, 8)
    case("gelu", "Gelu", [("x", x)], ["y"])
    case("bias_gelu", "BiasGelu", [("x", x), ("bias", bias)], ["y"])
    case("fast_gelu", "FastGelu", [("x", x), ("bias", bias)], ["y"])
    case("fast_gelu_no_bias", "FastGelu", [("x", x)], ["y"])
    case("quick_gelu", "QuickGelu", [("x", x)], ["y"], alpha=1.5)
    case("bias_add", "BiasAdd", [("x", x), ("bias", bias), ("skip", rand(rng, 2, 3, 8))], ["y"],
         numpy_ref=lambda x, b, s: [x.astype(np.float64) + b + s])
    case("bias_split_gelu", "BiasSplitGelu", [("x", x), ("bias", bias)], ["y"], numpy_ref=bias_split_gelu_ref)


def bias_split_gelu_ref(x, bias):
    from math import erf, sqrt
    t = x.astype(np.float64) + bias
    left, right = np.split(t, 2, axis=-1)
    gelu = 0.5 * right * (1 + np.vectorize(erf)(right / sqrt(2)))
    return [left * gelu]


def linalg(rng):
    a, b = rand(rng, 2, 3, 4, 5), rand(rng, 2, 3, 5, 6)
    case("fused_matmul", "FusedMatMul", [("a", a), ("b", b)], ["y"], alpha=0.5)
    case("fused_matmul_trans", "FusedMatMul", [("a", a.swapaxes(-1, -2).copy()), ("b", b.swapaxes(-1, -2).copy())],
         ["y"], transA=1, transB=1)
    # transBatchA: A [d0, d1, d2, d3] is read as [d1, d2, d0, d3].
    case("fused_matmul_trans_batch", "FusedMatMul", [("a", rand(rng, 4, 2, 3, 5)), ("b", b)], ["y"], transBatchA=1)
    case("fused_matmul_trans_batch_b", "FusedMatMul", [("a", a), ("b", rand(rng, 6, 2, 3, 5))], ["y"],
         transBatchB=1, transB=1)


def attentions(rng):
    B, S, D, N = 2, 4, 8, 2
    x, w, bias = rand(rng, B, S, D), rand(rng, D, 3 * D, scale=0.5), rand(rng, 3 * D)
    base = [("x", x), ("w", w), ("bias", bias)]
    case("attention_no_mask", "Attention", base, ["y"], num_heads=N)
    case("attention_mask_1d", "Attention", base + [("mask", np.array([4, 2], np.int32))], ["y"], num_heads=N)
    case("attention_mask_2b", "Attention", base + [("mask", np.array([4, 3, 0, 1], np.int32))], ["y"], num_heads=N)
    m2 = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
    case("attention_mask_2d", "Attention", base + [("mask", m2)], ["y"], num_heads=N)
    m3 = (rng.random((B, S, S)) > 0.3).astype(np.int32)
    case("attention_mask_3d", "Attention", base + [("mask", m3)], ["y"], num_heads=N, mask_filter_value=-1000.0)
    past = rand(rng, 2, B, N, 3, D // N)
    case("attention_causal_past", "Attention", base + [("mask", None), ("past", past)], ["y", "present"],
         num_heads=N, unidirectional=1)
    w2, b2 = rand(rng, D, 8 + 8 + 12, scale=0.5), rand(rng, 28)
    ab = rand(rng, 1, N, S, S)
    case("attention_qkv_sizes_bias", "Attention",
         [("x", x), ("w", w2), ("bias", b2), ("mask", m2), ("past", None), ("attn_bias", ab)], ["y"],
         num_heads=N, qkv_hidden_sizes=[8, 8, 12], scale=0.3)
    q, k, v = rand(rng, B, 3, D), rand(rng, B, S, D), rand(rng, B, S, 12)
    mb = rand(rng, 28)
    case("mha_cross_kpm_2d", "MultiHeadAttention", [("q", q), ("k", k), ("v", v), ("bias", mb), ("kpm", m2)],
         ["y"], num_heads=N)
    case("mha_kpm_1d", "MultiHeadAttention",
         [("q", x), ("k", rand(rng, B, S, D)), ("v", rand(rng, B, S, D)), ("bias", None),
          ("kpm", np.array([3, 4], np.int32))], ["y"], num_heads=N)
    case("mha_bnsh_kv", "MultiHeadAttention", [("q", q), ("k", rand(rng, B, N, S, 4)), ("v", rand(rng, B, N, S, 4))],
         ["y"], num_heads=N)
    pk, pv = rand(rng, B, N, 2, 4), rand(rng, B, N, 2, 4)
    case("mha_causal_past_bias", "MultiHeadAttention",
         [("q", x), ("k", rand(rng, B, S, D)), ("v", rand(rng, B, S, D)), ("bias", bias), ("kpm", None),
          ("attn_bias", rand(rng, B, 1, S, S + 2)), ("pk", pk), ("pv", pv)], ["y", "present_k", "present_v"],
         num_heads=N, unidirectional=1)


def rotaries(rng):
    cos_t = np.cos(np.outer(np.arange(10), 1.0 / 10000 ** (np.arange(4) / 4))).astype(np.float32)
    sin_t = np.sin(np.outer(np.arange(10), 1.0 / 10000 ** (np.arange(4) / 4))).astype(np.float32)
    pos = rng.integers(0, 10, (2, 3)).astype(np.int64)
    case("rotary_3d", "RotaryEmbedding", [("x", rand(rng, 2, 3, 16)), ("pos", pos), ("cos", cos_t), ("sin", sin_t)],
         ["y"])
    case("rotary_4d_interleaved", "RotaryEmbedding",
         [("x", rand(rng, 2, 2, 3, 8)), ("pos", np.array([4], np.int64)), ("cos", cos_t), ("sin", sin_t)], ["y"],
         interleaved=1)
    case("rotary_partial", "RotaryEmbedding",
         [("x", rand(rng, 2, 3, 32)), ("pos", pos), ("cos", cos_t), ("sin", sin_t)], ["y"],
         num_heads=2, rotary_embedding_dim=8)


def quantized(rng):
    n, k, block = 6, 40, 16
    blocks = (k + block - 1) // block
    a = rand(rng, 2, 3, k)
    for bits in (2, 4, 8):
        blob = block * bits // 8
        b = rng.integers(0, 256, (n, blocks, blob)).astype(np.uint8)
        scales = (rng.random((n, blocks)) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(0, 256, (n, (blocks * bits + 7) // 8)).astype(np.uint8)
        attrs = dict(K=k, N=n, bits=bits, block_size=block)
        case(f"matmul_nbits{bits}", "MatMulNBits",
             [("a", a), ("b", b), ("scales", scales), ("zp", zp), ("gidx", None), ("bias", rand(rng, n))], ["y"],
             **attrs)
        if bits == 4:
            case("matmul_nbits4_default_zp", "MatMulNBits", [("a", a), ("b", b), ("scales", scales)], ["y"], **attrs)
    qa = rng.integers(0, 256, (3, 5)).astype(np.uint8)
    # uint8 B: onnxruntime's x86 u8·s8 kernel can saturate pairwise int16 sums (a hardware
    # shortcut, not the op's maths), so signed B would make the reference machine-dependent.
    qb = rng.integers(0, 256, (4, 5)).astype(np.uint8)
    common = [("a", qa), ("a_scale", np.array(0.05, np.float32)), ("a_zp", np.array(120, np.uint8)), ("b", qb),
              ("b_scale", (rng.random(4) * 0.1 + 0.01).astype(np.float32)),
              ("b_zp", rng.integers(100, 156, (4,)).astype(np.uint8)),
              ("c", rng.integers(-500, 500, (4,)).astype(np.int32))]
    case("qgemm_float", "QGemm", common, ["y"], transB=1, alpha=0.5)
    case("qgemm_quant", "QGemm", common + [("y_scale", np.array(0.2, np.float32)),
                                           ("y_zp", np.array(128, np.uint8))], ["y"], transB=1)


def optimized():
    from onnxruntime.transformers.optimizer import optimize_model
    src = os.path.join(ROOT, "fixtures", "text_cls", "model.onnx")
    m = optimize_model(src, model_type="bert", num_heads=2, hidden_size=64)
    m.save_model_to_file(os.path.join(OUT, "text_cls_opt.onnx"))
    lm = os.path.join(ROOT, "fixtures", "text_lm")
    with open(os.path.join(lm, "config.json")) as f:
        cfg = json.load(f)
    m = optimize_model(os.path.join(lm, "model.onnx"), model_type="gpt2", num_heads=cfg["n_head"],
                       hidden_size=cfg["n_embd"])
    m.save_model_to_file(os.path.join(OUT, "text_lm_opt.onnx"))


def vit():
    """A tiny transformers ViTForImageClassification (32×32 RGB, patches of 8, hidden 32, 2 layers,
    4 labels), random-initialised and trained for a few seconds on synthetic images (class k: a
    bright quadrant k over noise), exported by torch.onnx (dynamic batch) and rewritten by
    optimize_model(model_type="vit"): Attention, SkipLayerNormalization, BiasGelu. Its attention
    is written as transformers 4.x's ViTSelfAttention wrote it (scores / √d), the form the
    optimizer's attention fusion matches (5.x's `* scaling` stays unfused)."""
    import math
    import torch
    import transformers.models.vit.modeling_vit as mv
    from onnxruntime.transformers.optimizer import optimize_model
    from torch import nn
    from transformers import ViTConfig, ViTForImageClassification

    def div_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        w = nn.functional.softmax(torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.size(-1)), dim=-1)
        return torch.matmul(w, value).transpose(1, 2).contiguous(), w

    mv.eager_attention_forward = div_attention
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=4)
    net = ViTForImageClassification._from_config(cfg, attn_implementation="eager")
    rng = np.random.default_rng(7)

    def images(n):
        y = np.arange(n) % 4
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32) * 0.5
        for i, k in enumerate(y):
            r, c = divmod(int(k), 2)
            x[i, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 1.5
        return x, y.astype(np.int64)

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(150):  # fresh images every step: nothing to memorise
        xb, yb = images(32)
        loss = nn.functional.cross_entropy(net(torch.from_numpy(xb)).logits, torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = images(128)
    src = os.path.join(OUT, "vit.onnx")
    axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), src, input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes=axes, dynamo=False, opset_version=17)
    optimize_model(src, model_type="vit", num_heads=2, hidden_size=32).save_model_to_file(
        os.path.join(OUT, "vit_opt.onnx"))
    os.remove(src)
    data = os.path.join(OUT, "vit")
    os.makedirs(data, exist_ok=True)
    np.savez(os.path.join(data, "train.npz"), x=x, y=y)
    np.savez(os.path.join(data, "forget.npz"), x=x[y == 1], y=y[y == 1])
    xt, yt = images(96)
    np.savez(os.path.join(data, "test.npz"), x=xt, y=yt)
    with torch.no_grad():
        acc = (net(torch.from_numpy(xt)).logits.argmax(-1).numpy() == yt).mean()
    print(f"vit: test accuracy {acc:.3f}", file=sys.stderr)


def gqas(rng):
    """GroupQueryAttention: 4 query heads over 2 KV heads of size 8 (onnxruntime's CPU kernel
    wants head sizes in multiples of 8). Own seed, so the cases before keep their inputs."""
    B, S, N, KV, H = 2, 3, 4, 2, 8
    heads = dict(num_heads=N, kv_num_heads=KV)
    outs = ["y", "present_k", "present_v"]

    def qkv(s, b=B, h=H):
        return [("q", rand(rng, b, s, N * h)), ("k", rand(rng, b, s, KV * h)), ("v", rand(rng, b, s, KV * h))]

    def lens(*ls):
        return [("seqlens_k", np.array(ls, np.int32)), ("total", np.array(max(ls) + 1, np.int32))]

    none2 = [("pk", None), ("pv", None)]
    case("gqa_prompt", "GroupQueryAttention", qkv(S) + none2 + lens(2, 2), outs, **heads)
    case("gqa_packed_qkv", "GroupQueryAttention",
         [("qkv", rand(rng, B, S, (N + 2 * KV) * H)), ("k", None), ("v", None)] + none2 + lens(2, 2), outs, **heads)
    case("gqa_right_padding", "GroupQueryAttention", qkv(S) + none2 + lens(2, 0), outs, **heads)
    past = [("pk", rand(rng, B, KV, 4, H)), ("pv", rand(rng, B, KV, 4, H))]
    case("gqa_past_decode", "GroupQueryAttention", qkv(1) + past + lens(4, 4), outs, **heads)
    # onnxruntime takes more than one new token after a past for one sequence only.
    past1 = [("pk", rand(rng, 1, KV, 4, H)), ("pv", rand(rng, 1, KV, 4, H))]
    case("gqa_past_chunk", "GroupQueryAttention", qkv(2, 1) + past1 + lens(5), outs, **heads, scale=0.2)
    # Rotary wants head sizes in multiples of 16.
    inv = 1.0 / 10000 ** (np.arange(8) / 8)
    cos = np.cos(np.outer(np.arange(16), inv)).astype(np.float32)
    sin = np.sin(np.outer(np.arange(16), inv)).astype(np.float32)
    caches = [("cos", cos), ("sin", sin)]
    case("gqa_rotary_prompt", "GroupQueryAttention", qkv(S, B, 16) + none2 + lens(2, 2) + caches, outs, **heads,
         do_rotary=1)
    past16 = [("pk", rand(rng, 1, KV, 4, 16)), ("pv", rand(rng, 1, KV, 4, 16))]
    case("gqa_rotary_past_interleaved", "GroupQueryAttention", qkv(2, 1, 16) + past16 + lens(5) + caches, outs,
         **heads, do_rotary=1, rotary_interleaved=1)
    case("gqa_rotary_packed", "GroupQueryAttention",
         [("qkv", rand(rng, B, S, (N + 2 * KV) * 16)), ("k", None), ("v", None)] + none2 + lens(2, 2) + caches, outs,
         **heads, do_rotary=1)
    case("gqa_softcap", "GroupQueryAttention", qkv(S) + none2 + lens(2, 2), outs, **heads, softcap=1.5, scale=0.8)
    case("gqa_local_window", "GroupQueryAttention", qkv(6) + none2 + lens(5, 5), outs, **heads, local_window_size=2)
    case("gqa_window_past", "GroupQueryAttention", qkv(1) + past + lens(4, 4), outs, **heads, local_window_size=3)
    case("gqa_smooth_softmax", "GroupQueryAttention", qkv(S) + none2 + lens(2, 1), outs, **heads, smooth_softmax=1)


VIT_FILES = ["vit_opt.onnx", "vit/train.npz", "vit/forget.npz", "vit/test.npz"]


def ort_node(op, inputs, domain="", **attrs):
    """onnxruntime's CPU outputs of one `op` node on `inputs` [(name, array)] (the reference for a
    fused op on its unfused equivalent)."""
    import onnxruntime as ort
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], domain=domain, **attrs)
    gin = [helper.make_tensor_value_info(n, NP2ONNX[a.dtype.type], list(a.shape)) for n, a in inputs]
    graph = helper.make_graph([node], op, gin, [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                              ir_version=8)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(inputs))


def diffusion_ops(rng):
    """What the unet fusion adds (tools/make_text_ddpm.py's unet_optimized.onnx), all CUDA-only in
    onnxruntime: NhwcConv (reference: onnxruntime's Conv on the NCHW transposes), SkipGroupNorm
    (the numpy formula) and MultiHeadAttention with packed QKV/KV (reference: onnxruntime's CPU
    MultiHeadAttention on the unpacked Q, K, V). Own seed, so the cases before keep their inputs."""
    ort_src = "onnxruntime on the unfused equivalent (no CPU kernel for the fused form)"
    x, w, b = rand(rng, 2, 5, 6, 8), rand(rng, 4, 3, 3, 8, scale=0.3), rand(rng, 4)

    def conv_ref(x, w, b, **attrs):
        y = ort_node("Conv", [("x", x.transpose(0, 3, 1, 2).copy()), ("w", w.transpose(0, 3, 1, 2).copy()),
                              ("b", b)], **attrs)[0]
        return [y.transpose(0, 2, 3, 1)]
    pads = dict(pads=[1, 0, 2, 1], strides=[2, 1])
    case("nhwc_conv", "NhwcConv", [("x", x), ("w", w), ("b", b)], ["y"], source=ort_src,
         numpy_ref=lambda x, w, b: conv_ref(x, w, b, **pads), kernel_shape=[3, 3], **pads)
    wg = rand(rng, 4, 1, 1, 4, scale=0.3)
    case("nhwc_conv_group", "NhwcConv", [("x", x), ("w", wg), ("b", b)], ["y"], source=ort_src,
         numpy_ref=lambda x, w, b: conv_ref(x, w, b, group=2), group=2)

    g, beta, bias = rand(rng, 8), rand(rng, 8), rand(rng, 8)

    def sgn_ref(silu):
        def ref(x, g, beta, skip, bias=None):
            s = x.astype(np.float64) + (skip.reshape(len(x), 1, 1, -1) if skip.ndim == 2 else skip)
            s = s + (0 if bias is None else bias)
            return [group_norm_ref(s, g, beta, 4, True, silu), s]
        return ref
    case("skip_group_norm_bias", "SkipGroupNorm",
         [("x", x), ("gamma", g), ("beta", beta), ("skip", rand(rng, 2, 5, 6, 8)), ("bias", bias)], ["y", "s"],
         numpy_ref=sgn_ref(True), groups=4, activation=1, epsilon=1e-5)
    case("skip_group_norm_broadcast", "SkipGroupNorm",
         [("x", x), ("gamma", g), ("beta", beta), ("skip", rand(rng, 2, 1, 1, 8))], ["y"],
         numpy_ref=lambda *a: sgn_ref(True)(*a)[:1], groups=4, activation=1, epsilon=1e-5)
    case("skip_group_norm_2d", "SkipGroupNorm", [("x", x), ("gamma", g), ("beta", beta), ("skip", rand(rng, 2, 8))],
         ["y"], numpy_ref=lambda *a: sgn_ref(False)(*a)[:1], groups=4, activation=0)

    B, S, L, N, H = 2, 6, 5, 2, 4
    qkv = rand(rng, B, S, N, 3, H)
    unpacked = [(n, qkv[:, :, :, i].reshape(B, S, N * H).copy()) for i, n in enumerate("qkv")]
    case("mha_packed_qkv", "MultiHeadAttention", [("qkv", qkv)], ["y"], source=ort_src,
         numpy_ref=lambda _: ort_node("MultiHeadAttention", unpacked, MS, num_heads=N), num_heads=N)
    q, kv = rand(rng, B, S, N * H), rand(rng, B, L, N, 2, H)
    split = [("q", q)] + [(n, kv[:, :, :, i].reshape(B, L, N * H).copy()) for i, n in enumerate("kv")]
    case("mha_packed_kv", "MultiHeadAttention", [("q", q), ("kv", kv)], ["y"], source=ort_src,
         numpy_ref=lambda *_: ort_node("MultiHeadAttention", split, MS, num_heads=N), num_heads=N)


def main():
    vit_done = all(os.path.exists(os.path.join(OUT, f)) for f in VIT_FILES)
    if os.path.exists(DONE) and vit_done and os.environ.get("FORCE") != "1":
        if not os.path.exists(os.path.join(OUT, "gqa_prompt.npz")):  # a folder from before them
            gqas(np.random.default_rng(34))
        if not os.path.exists(os.path.join(OUT, "mha_packed_kv.npz")):
            diffusion_ops(np.random.default_rng(56))
        return
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(12)
    for make in (norms, activations, linalg, attentions, rotaries, quantized):
        make(rng)
    gqas(np.random.default_rng(34))
    diffusion_ops(np.random.default_rng(56))
    optimized()
    vit()
    open(DONE, "w").close()
    print("contrib fixtures ready", file=sys.stderr)


if __name__ == "__main__":
    main()
