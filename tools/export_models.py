"""Exports the real-model conformance fixtures: four PyTorch architectures with random weights
(fixed seeds), each as an ONNX model plus one input batch and PyTorch's eager output for it.

Output (gitignored, idempotent: a model whose model.onnx exists is skipped; FORCE=1 redoes all):
  fixtures/.cache/models/<name>/model.onnx     TorchScript exporter (dynamo=False), dynamic batch
  fixtures/.cache/models/<name>/input_<i>.npy  the i-th graph input (graph order)
  fixtures/.cache/models/<name>/expected_0.npy eager output of the model in eval mode
Models: resnet18 (CIFAR stem, opset 13, BatchNorm folded into Conv), mobilenet_v2 (opset 17,
BatchNormalization kept), vit_tiny (opset 17, torch's MultiheadAttention),
bert_tiny (token ids + attention mask, opset 14 so LayerNorm is exported decomposed).
Each export is checked against onnxruntime before it is kept, so a fixture is never wrong by
construction. Usage: python tools/export_models.py [--out DIR] [--only NAME,...]
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_OUT = os.path.join(ROOT, "fixtures", ".cache", "models")


def randomize_batchnorm(model, gen):
    """Fresh BatchNorms are the identity in eval mode; random statistics make them count."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def resnet18():
    import torchvision

    m = torchvision.models.resnet18(num_classes=10)
    # The usual CIFAR variant: 3x3 stride-1 stem, no max-pool (32x32 inputs keep their detail).
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def mobilenet_v2():
    import torchvision

    return torchvision.models.mobilenet_v2(num_classes=10)


class Attention(nn.Module):
    """Hand-written multi-head attention (MatMul/Softmax/Transpose/Reshape in the export)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, bias=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        att = q @ k.transpose(-2, -1) / self.dh**0.5
        if bias is not None:
            att = att + bias
        y = att.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, builtin_mha):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.builtin = builtin_mha
        self.att = nn.MultiheadAttention(dim, heads, batch_first=True) if builtin_mha else Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x, bias=None):
        h = self.ln1(x)
        h = self.att(h, h, h, need_weights=False)[0] if self.builtin else self.att(h, bias)
        x = x + h
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """Pre-norm ViT for 32x32 images: 4x4 patches, cls token, 2 layers, dim 64."""

    def __init__(self, dim=64, depth=2, heads=4, patch=4, classes=10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (32 // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, 2 * dim, builtin_mha=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


class Bert(nn.Module):
    """BERT-style classifier: token + position embeddings, 2 pre-norm encoder layers with an
    additive padding mask, tanh pooler on the CLS token."""

    def __init__(self, vocab=1000, dim=64, depth=2, heads=4, max_len=32, classes=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.ln = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, heads, 4 * dim, builtin_mha=False) for _ in range(depth))
        self.pool = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.ln(self.tok(input_ids) + self.pos(pos))
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
        for b in self.blocks:
            x = b(x, bias)
        return self.head(torch.tanh(self.pool(x[:, 0])))


def image_batch(gen):
    return [torch.randn(2, 3, 32, 32, generator=gen)]


def text_batch(gen):
    ids = torch.randint(1, 1000, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 12:] = 0  # the second sequence is padded
    ids[1, 12:] = 0
    return [ids, mask]


# name -> (constructor, inputs, input names, opset, keep BatchNormalization nodes unfused)
MODELS = {
    "resnet18": (resnet18, image_batch, ["input"], 13, False),
    "mobilenet_v2": (mobilenet_v2, image_batch, ["input"], 17, True),
    "vit_tiny": (ViT, image_batch, ["input"], 17, False),
    "bert_tiny": (Bert, text_batch, ["input_ids", "attention_mask"], 14, False),
}


def export_one(name, out_dir, seed):
    make, batch, names, opset, keep_bn = MODELS[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make()
    with torch.no_grad():
        randomize_batchnorm(model, gen)
    model.eval()
    inputs = batch(gen)
    with torch.no_grad():
        expected = model(*inputs)
    os.makedirs(out_dir, exist_ok=True)
    for i, x in enumerate(inputs):
        np.save(os.path.join(out_dir, f"input_{i}.npy"), x.numpy())
    np.save(os.path.join(out_dir, "expected_0.npy"), expected.numpy())
    tmp = os.path.join(out_dir, ".model.onnx.tmp")
    dyn = {n: {0: "batch"} for n in names + ["output"]}
    # EVAL folds BatchNorm into the preceding Conv; PRESERVE (the model is in eval mode) keeps
    # inference-mode BatchNormalization nodes, as unfused deployed models have them.
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, tuple(inputs), tmp, input_names=names, output_names=["output"],
                          dynamic_axes=dyn, opset_version=opset, dynamo=False, training=mode)
    check_with_ort(tmp, names, inputs, expected.numpy(), name)
    os.replace(tmp, os.path.join(out_dir, "model.onnx"))  # last: its presence means "complete"


def check_with_ort(path, names, inputs, expected, name):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
    err = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    print(f"  {name}: onnxruntime vs eager max |diff| {err:.3g} (output scale {scale:.3g})")
    if err > 1e-4 * max(scale, 1.0):
        raise SystemExit(f"{name}: the ONNX export disagrees with PyTorch eager ({err:.3g}); not keeping it")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(MODELS))
    args = ap.parse_args()
    force = os.environ.get("FORCE") == "1"
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    wanted = [n for n in args.only.split(",") if n] or list(MODELS)
    for n in wanted:
        if n not in MODELS:
            raise SystemExit(f"unknown model '{n}'; known: {', '.join(MODELS)}")
    for name in wanted:
        d = os.path.join(args.out, name)
        if not force and os.path.exists(os.path.join(d, "model.onnx")):
            print(f"{name}: present (FORCE=1 regenerates)")
            continue
        print(f"{name}: exporting to {os.path.relpath(d)}")
        export_one(name, d, seed=list(MODELS).index(name))  # a model's seed never depends on --only


if __name__ == "__main__":
    sys.exit(main())
