"""An independent PyTorch implementation of SEMU (written from shared/SEMU.md) for parity checks.

Usage: semu_reference.py MODEL.onnx FORGET.npz BATCHES.npz OUT.npz --gamma G --lr LR [--paper]
  BATCHES.npz holds `order` and `labels` (the epoch's sample order and random labels, as semu
  drew them), so both sides train on the same batches. Writes k_<i> and R_<i> for each adapted
  weight i (in order of first use).
Supports the ops of the shipped digits model (Conv, Relu, MaxPool, Flatten, Gemm, MatMul, Add).
"""
import argparse

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def forward(graph, weights, x):
    env = dict(weights)
    env[graph.input[0].name] = x
    for n in graph.node:
        a, i = attrs(n), [env[k] if k else None for k in n.input]
        if n.op_type == "Conv":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, stride=a.get("strides", [1, 1]),
                         padding=(p[0], p[1]), dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
        elif n.op_type == "Relu":
            y = F.relu(i[0])
        elif n.op_type == "MaxPool":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.max_pool2d(i[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]), padding=(p[0], p[1]))
        elif n.op_type == "Flatten":
            y = i[0].flatten(a.get("axis", 1))
        elif n.op_type == "Gemm":
            A = i[0].T if a.get("transA", 0) else i[0]
            B = i[1].T if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * (A @ B) + (a.get("beta", 1.0) * i[2] if len(i) > 2 else 0)
        elif n.op_type == "MatMul":
            y = i[0] @ i[1]
        elif n.op_type == "Add":
            y = i[0] + i[1]
        else:
            raise SystemExit(f"semu_reference.py: op {n.op_type} not supported")
        env[n.output[0]] = y
    return env[graph.output[0].name]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"), ap.add_argument("forget"), ap.add_argument("batches"), ap.add_argument("out")
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--paper", action="store_true", help="paper definitions instead of the reference code's")
    args = ap.parse_args()
    torch.set_num_threads(1)

    m = onnx.load(args.model)
    g = m.graph
    weights = {t.name: torch.tensor(numpy_helper.to_array(t).copy()) for t in g.initializer}
    # Adapted weights: Conv weight (input 1) and Gemm/MatMul initializer operands, in order of use.
    names = []
    for n in g.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in weights and n.input[1] not in names:
            names.append(n.input[1])
    d = np.load(args.forget)
    x, y = torch.tensor(d["x"]), torch.tensor(d["y"])

    # Forget gradient: batch-mean CE with true labels, summed over sequential batches.
    params = {k: weights[k].clone().requires_grad_(True) for k in names}
    grads = {k: torch.zeros_like(weights[k]) for k in names}
    for s in range(0, len(y), args.batch_size):
        w = dict(weights, **params)
        loss = F.cross_entropy(forward(g, w, x[s:s + args.batch_size]), y[s:s + args.batch_size])
        gs = torch.autograd.grad(loss, [params[k] for k in names])
        for k, gk in zip(names, gs):
            grads[k] += gk

    adapters = {}
    for k in names:
        W, G = weights[k], grads[k]
        denom = W.pow(2).sum() if args.paper else W.pow(2).sum().sqrt()
        G = G - (G * W).sum() / denom * W
        conv = W.dim() == 4
        M = G.reshape(G.shape[0], G.shape[1], -1).permute(1, 0, 2) if conv else G
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        S2 = S.double() ** 2
        cum = torch.cumsum(S2, -1) / S2.sum(-1, keepdim=True)
        if args.paper:
            ks = (cum < args.gamma - 1e-12).sum(-1) + 1
        else:
            ks = torch.searchsorted(cum.contiguous(), torch.full(cum.shape[:-1] + (1,), args.gamma, dtype=cum.dtype),
                                    right=True).squeeze(-1)
        kk = int(min(max(int(ks.max()), 1), S.shape[-1]))
        V = Vh.transpose(-1, -2)
        R = torch.zeros((W.shape[1], kk, kk) if conv else (kk, kk), requires_grad=True)
        adapters[k] = (U[..., :kk].contiguous(), V[..., :kk].contiguous(), R, conv)

    def adapted():
        w = dict(weights)
        for k, (U, V, R, conv) in adapters.items():
            if conv:
                delta = (U @ R @ V.transpose(1, 2)).permute(1, 0, 2).reshape(weights[k].shape)
            else:
                delta = U @ R @ V.T
            w[k] = weights[k] + delta
        return w

    b = np.load(args.batches)
    order, labels = torch.tensor(b["order"]).long(), torch.tensor(b["labels"]).long()
    opt = torch.optim.SGD([a[2] for a in adapters.values()], lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    for s in range(0, len(order), args.batch_size):
        idx = order[s:s + args.batch_size]
        opt.zero_grad()
        F.cross_entropy(forward(g, adapted(), x[idx]), labels[idx]).backward()
        opt.step()

    out = {}
    for i, k in enumerate(names):
        U, V, R, conv = adapters[k]
        out[f"k_{i}"] = np.array(U.shape[-1])
        out[f"R_{i}"] = R.detach().numpy()
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
