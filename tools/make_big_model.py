"""Makes a ~1 GB external-data ONNX model from random weights, for memory checks of model I/O:
an MLP of big Gemms (8192 wide by default), written under fixtures/.cache/big/ (not committed,
not part of `make test`). Weights are generated and written one block at a time, so this script
never holds a whole layer, let alone the model, in memory.

  python tools/make_big_model.py [--width 8192] [--layers 4] [--safetensors]

Writes model.onnx + model.onnx.data, and two unlearning patches for `semu patch apply`: one that
changes only the small last layer (a pure load → save round trip of the 1 GB model) and one that
changes a big layer. With --safetensors also weights.safetensors (the same tensors) and
skeleton.onnx (the graph without weights) for `--weights`. See tools/measure_big_model.sh.
"""
import argparse
import hashlib
import json
import os
import struct

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", ".cache", "big")
CLASSES = 10
ROWS = 256  # rows generated per block


def layer_shapes(width, layers):
    """(name, rows, cols) of every initializer: Gemm weights (out × in, transB=1) and biases."""
    shapes = []
    for i in range(layers):
        shapes.append((f"fc{i}.weight", width, width))
        shapes.append((f"fc{i}.bias", width, 1))
    shapes.append(("head.weight", CLASSES, width))
    shapes.append(("head.bias", CLASSES, 1))
    return shapes


def blocks(name, rows, cols, seed):
    """The tensor's values, ROWS rows at a time (He-scaled so activations stay finite)."""
    rng = np.random.default_rng(seed)
    scale = np.float32(np.sqrt(2.0 / cols)) if not name.endswith("bias") else np.float32(0.01)
    for start in range(0, rows, ROWS):
        n = min(ROWS, rows - start)
        yield (rng.standard_normal((n, cols), dtype=np.float32) * scale).astype("<f4")


def write_data(path, shapes, sha_of=()):
    """Writes every tensor to one file; returns name → (offset, length) and the SHA-256 of the
    tensors named in `sha_of`."""
    where, shas = {}, {}
    with open(path, "wb") as f:
        for seed, (name, rows, cols) in enumerate(shapes):
            off = f.tell()
            h = hashlib.sha256()
            for b in blocks(name, rows, cols, seed):
                raw = b.tobytes()
                f.write(raw)
                if name in sha_of:
                    h.update(raw)
            where[name] = (off, f.tell() - off)
            shas[name] = h.hexdigest()
    return where, shas


def graph(width, layers, shapes, tensor_for):
    nodes, x = [], "input"
    for i in range(layers):
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"h{i}"], transB=1, name=f"/fc{i}/Gemm"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"/act{i}/Relu"))
        x = f"r{i}"
    nodes.append(helper.make_node("Gemm", [x, "head.weight", "head.bias"], ["logits"], transB=1, name="/head/Gemm"))
    inits = [tensor_for(name, rows, cols) for name, rows, cols in shapes]
    g = helper.make_graph(
        nodes, "big_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="semu tools/make_big_model.py")
    m.ir_version = 8
    return m


def dims(name, rows, cols):
    return [rows] if name.endswith("bias") else [rows, cols]


def external(where):
    def make(name, rows, cols):
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims(name, rows, cols))
        t.data_location = TensorProto.EXTERNAL
        off, length = where[name]
        for k, v in (("location", "model.onnx.data"), ("offset", str(off)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t
    return make


def write_patch(path, layer, rows, cols, k, weight_sha, seed):
    """A semu patch (safetensors) changing `layer` by U R Vᵀ of rank k. The folded SHA-256 is
    unknown here (semu computes it), so `patch apply` reports the result as not matching it."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((rows, k)))[0].astype("<f4")
    v = np.linalg.qr(rng.standard_normal((cols, k)))[0].astype("<f4")
    r = (rng.standard_normal((k, k)) * 1e-3).astype("<f4")
    info = [{"name": layer, "shape": [rows, cols], "dtype": "f32", "k": k, "conv": False,
             "weight_sha256": weight_sha, "folded_sha256": "0" * 64}]
    tensors = [(f"{layer}.U", u), (f"{layer}.R", r), (f"{layer}.V", v)]
    header, off = {"__metadata__": {"semu.patch.format": "1", "semu.patch.layers": json.dumps(info)}}, 0
    for name, a in tensors:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    write_safetensors(path, header, (a.tobytes() for _, a in tensors))


def write_safetensors(path, header, chunks):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for c in chunks:
            f.write(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--safetensors", action="store_true", help="also weights.safetensors + skeleton.onnx")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    shapes = layer_shapes(a.width, a.layers)
    where, shas = write_data(os.path.join(OUT, "model.onnx.data"), shapes, sha_of=("fc0.weight", "head.weight"))
    onnx.save(graph(a.width, a.layers, shapes, external(where)), os.path.join(OUT, "model.onnx"))
    write_patch(os.path.join(OUT, "head.patch.safetensors"), "head.weight", CLASSES, a.width, 2, shas["head.weight"], 1)
    write_patch(os.path.join(OUT, "fc0.patch.safetensors"), "fc0.weight", a.width, a.width, 8, shas["fc0.weight"], 2)
    if a.safetensors:
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, rows, cols in shapes:
            n = rows * cols * 4
            header[name] = {"dtype": "F32", "shape": dims(name, rows, cols), "data_offsets": [off, off + n]}
            off += n
        chunks = (b.tobytes() for seed, (name, rows, cols) in enumerate(shapes) for b in blocks(name, rows, cols, seed))
        write_safetensors(os.path.join(OUT, "weights.safetensors"), header, chunks)

        def empty(name, rows, cols):
            return TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims(name, rows, cols))
        onnx.save(graph(a.width, a.layers, shapes, empty), os.path.join(OUT, "skeleton.onnx"))
    size = os.path.getsize(os.path.join(OUT, "model.onnx.data"))
    print(f"{OUT}/model.onnx: {a.layers} Gemm layers of {a.width}², {size / 1e9:.2f} GB of external data")


if __name__ == "__main__":
    main()
