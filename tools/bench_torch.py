"""PyTorch eager side of `cargo bench --bench engine` (benches/engine.rs).

Builds the network that tools/export_models.py exports as fixtures/.cache/models/resnet18: the
CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool) with random BatchNorm statistics, then folds
every BatchNorm into its convolution, as the TorchScript exporter does in eval mode, so that
eager PyTorch runs exactly the graph the engine runs (Conv with bias, Relu, Add,
GlobalAveragePool, Flatten, Gemm). Every conv/linear weight and bias requires grad, like the
engine's dynamic initializers.

Protocol (so the Rust side can interleave the two runtimes one iteration at a time, which keeps
background load from favouring either): after a `ready` line, each stdin line is a command and
gets one stdout line back:
  train   -> milliseconds of one forward + cross-entropy + backward at --batch
  forward -> milliseconds of one forward (no grad) at --forward-batch
  quit    -> exits
With --no-inplace, ReLU and the residual `+=` run out of place, the op sequence the engine runs
(torchvision does them in place), to tell engine overhead from in-place savings.
Usage: python tools/bench_torch.py --threads N [--batch 128] [--forward-batch 32] [--no-inplace]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_models import randomize_batchnorm, resnet18  # noqa: E402


def fold_batchnorms(module):
    """Replaces each Conv2d→BatchNorm2d pair of a torchvision ResNet with one biased Conv2d."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batchnorms(child)
    for conv, bn in [("conv1", "bn1"), ("conv2", "bn2")]:
        if isinstance(getattr(module, bn, None), nn.BatchNorm2d):
            setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
            setattr(module, bn, nn.Identity())
    ds = getattr(module, "downsample", None)
    if isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[1], nn.BatchNorm2d):
        module.downsample = nn.Sequential(fuse_conv_bn_eval(ds[0], ds[1]), nn.Identity())


def out_of_place(model):
    """ReLU(inplace=False) everywhere and `relu(out + identity)` in each BasicBlock."""
    from torchvision.models.resnet import BasicBlock

    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, BasicBlock):

            def forward(x, b=m):
                out = b.conv2(b.relu(b.conv1(x)))  # bn1/bn2 are folded (Identity)
                identity = b.downsample(x) if b.downsample is not None else x
                return b.relu(out + identity)

            m.forward = forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--forward-batch", type=int, default=32)
    ap.add_argument("--no-inplace", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    model = resnet18()
    randomize_batchnorm(model, gen)
    model.eval()
    with torch.no_grad():
        fold_batchnorms(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "a BatchNorm was left unfolded"
    if args.no_inplace:
        out_of_place(model)
    params = [p.requires_grad_(True) for p in model.parameters()]

    x = torch.randn(args.batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    xf = torch.randn(args.forward_batch, 3, 32, 32, generator=gen)

    def train():
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)

    def forward():
        with torch.no_grad():
            model(xf)

    mode = "out-of-place" if args.no_inplace else "in-place relu/add (torchvision)"
    print(f"ready torch {torch.__version__}, {torch.get_num_threads()} threads, {len(params)} params, {mode}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        fn = {"train": train, "forward": forward}.get(cmd)
        if fn is None:
            print(f"error unknown command {cmd!r}", flush=True)
            continue
        t0 = time.perf_counter()
        fn()
        print(f"{(time.perf_counter() - t0) * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()
