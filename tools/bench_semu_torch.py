"""PyTorch side of `cargo bench --bench semu_e2e` (benches/semu_e2e.rs): the steps `semu unlearn`
does, written in eager PyTorch as the authors' code does them, on the same ONNX model and data.

The network is the CIFAR ResNet-18 of tools/bench_torch.py (torchvision, BatchNorm folded into
its convolutions, as the export has it) with every Conv/Gemm weight and bias copied from the
ONNX file semu reads, so both sides run the same function. Steps, one timed phase each, as
`semu unlearn --objective rl --gamma G --lr LR --epochs E --batch-size B` does them (SEMU.md,
paper definitions, projection on):
  load      import + model + data (not a phase of semu's summary; in the process wall time)
  gradient  Σ over batches of ∇_W mean-CE(f(x), y) for every Conv/Gemm weight (inference
            semantics), the forget accuracy before from the same forwards
  svd       per weight: projection G − ⟨G,W⟩/‖W‖² W, thin SVD (per input channel for a conv:
            I×O×(kh·kw)), the smallest k reaching γ (max over channels), U_k, V_k, R = 0
  training  per epoch: random labels ≠ y, a shuffled order, per batch W + U R Vᵀ for every
            weight, forward, CE, backward to R, SGD (momentum, weight decay); then the forget
            accuracy with the adapted weights (semu's per-epoch statistics)
  after     fold W + U R Vᵀ, the forget accuracy after, save the folded state dict
Prints one line: a JSON object of the phase times in seconds (and k per layer, the accuracies).
Usage: python tools/bench_semu_torch.py MODEL.onnx FORGET.npz --threads N [--gamma 0.9]
       [--lr 0.01] [--epochs 1] [--batch-size 128] [--out state.pt]
"""
import argparse
import json
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from torch.func import functional_call  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import fold_batchnorms  # noqa: E402
from export_models import resnet18  # noqa: E402


def load_onnx_weights(model, path):
    """Copies each Conv/Gemm weight and bias of the ONNX graph into `model`: modules and nodes are
    matched in order among those of the same weight shape (the exporter keeps forward order)."""
    g = onnx.load(path).graph
    inits = {t.name: t for t in g.initializer}
    nodes = [n for n in g.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(nodes) != len(mods):
        raise SystemExit(f"{path}: {len(nodes)} Conv/Gemm nodes, the torch model has {len(mods)} layers")
    by_shape = {}
    for m in mods:
        by_shape.setdefault(tuple(m.weight.shape), []).append(m)
    with torch.no_grad():
        for n in nodes:
            w = numpy_helper.to_array(inits[n.input[1]])
            gemm_t = n.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in n.attribute)
            if gemm_t:
                w = w.T
            queue = by_shape.get(tuple(w.shape))
            if not queue:
                raise SystemExit(f"{path}: no torch layer left of shape {w.shape} for {n.input[1]}")
            m = queue.pop(0)
            m.weight.copy_(torch.from_numpy(w.copy()))
            if len(n.input) > 2 and n.input[2]:
                m.bias.copy_(torch.from_numpy(numpy_helper.to_array(inits[n.input[2]]).copy()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"), ap.add_argument("forget")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="where to save the folded state dict (default: a temp file)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    times = {}

    model = resnet18()
    model.eval()
    with torch.no_grad():
        fold_batchnorms(model)
    load_onnx_weights(model, args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    d = np.load(args.forget)
    x, y = torch.from_numpy(d["x"]).float(), torch.from_numpy(d["y"]).long()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    names = [f"{n}.weight" for n in names]
    params = dict(model.named_parameters())
    times["load"] = time.perf_counter() - T0
    bs = args.batch_size

    # Gradient (and the forget accuracy before, from the same forwards).
    t = time.perf_counter()
    ws = {k: params[k].detach().clone().requires_grad_(True) for k in names}
    grads = {k: torch.zeros_like(params[k]) for k in names}
    correct = 0
    for s in range(0, len(y), bs):
        logits = functional_call(model, ws, (x[s:s + bs],))
        loss = F.cross_entropy(logits, y[s:s + bs])
        for k, gk in zip(names, torch.autograd.grad(loss, [ws[k] for k in names])):
            grads[k] += gk
        correct += int((logits.detach().argmax(1) == y[s:s + bs]).sum())
    acc_before = correct / len(y)
    del ws
    times["gradient"] = time.perf_counter() - t

    # Projection, SVD, rank, bases.
    t = time.perf_counter()
    adapters = {}
    for k in names:
        W, G = params[k].detach(), grads[k]
        G = G - (G * W).sum() / W.pow(2).sum() * W
        conv = W.dim() == 4
        M = G.reshape(G.shape[0], G.shape[1], -1).permute(1, 0, 2) if conv else G
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        S2 = S.double() ** 2
        cum = torch.cumsum(S2, -1) / S2.sum(-1, keepdim=True)
        ks = (cum < args.gamma - 1e-12).sum(-1) + 1
        kk = int(min(max(int(ks.max()), 1), S.shape[-1]))
        R = torch.zeros((W.shape[1], kk, kk) if conv else (kk, kk), requires_grad=True)
        adapters[k] = (W, U[..., :kk].contiguous(), Vh[..., :kk, :].contiguous(), R, conv)
    del grads
    times["svd"] = time.perf_counter() - t

    def adapted():
        w = {}
        for k, (W, U, Vh, R, conv) in adapters.items():
            if conv:
                delta = (U @ R @ Vh).permute(1, 0, 2).reshape(W.shape)
            else:
                delta = U @ R @ Vh
            w[k] = W + delta
        return w

    def accuracy(w):
        with torch.no_grad():
            c = sum(int((functional_call(model, w, (x[s:s + bs],)).argmax(1) == y[s:s + bs]).sum())
                    for s in range(0, len(y), bs))
        return c / len(y)

    # Training: the random-label objective, SGD on R only, the forget accuracy after each epoch.
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.SGD([a[3] for a in adapters.values()], lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    classes = model.fc.out_features
    epoch_acc = []
    for _ in range(args.epochs):
        labels = (y + torch.randint(1, classes, y.shape, generator=gen)) % classes
        order = torch.randperm(len(y), generator=gen)
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            opt.zero_grad()
            F.cross_entropy(functional_call(model, adapted(), (x[idx],)), labels[idx]).backward()
            opt.step()
        epoch_acc.append(accuracy(adapted()))
    times["training"] = time.perf_counter() - t

    # Fold, accuracy after, save.
    t = time.perf_counter()
    with torch.no_grad():
        folded = {k: v.detach() for k, v in adapted().items()}
    acc_after = accuracy(folded)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    state.update(folded)
    out = args.out or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_semu_torch.{os.getpid()}.pt")
    torch.save(state, out)
    if args.out is None:
        os.remove(out)
    times["after"] = time.perf_counter() - t
    times["wall"] = time.perf_counter() - T0
    ks = {k: a[1].shape[-1] for k, a in adapters.items()}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "times": times,
                      "acc_before": acc_before, "epoch_acc": epoch_acc, "acc_after": acc_after, "k": ks}),
          flush=True)


if __name__ == "__main__":
    main()
