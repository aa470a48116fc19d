"""PyTorch reference for the diffusion task's q_sample and guided gradient (tests/diffusion_task.rs):
the fixture's ε-network rebuilt from fixtures/ddpm/model.onnx's initializers (the module paths
are the initializer names), checked against onnxruntime, then on fixed x₀, t, e and y = 3:
x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·e and the loss Σ_pixels (e − ε̂)², mean over the batch, with
ε̂ = (1+w)·ε(x_t, t, 3) − w·ε(x_t, t, ∅), w = 2 (SEMU-diffusion.md §1.3), and its gradient.

Output (committed; `python tools/ddpm_grad_reference.py` rewrites it):
  fixtures/ddpm/ref/guided.npz  x0 (data range, f32[8,1,8,8]), t, e, y, x_t, loss, and
                                grad/<weight name> for a few weights
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ddpm import GUIDANCE, NULL, OUT, T, CondUNet, schedule  # noqa: E402

WEIGHTS = ["conv_in.weight", "down1_attn.q.weight", "temb_dense0.weight", "cemb_dense1.weight",
           "up0_block1.conv2.weight", "mid_block1.temb_cemb_proj.weight"]


def group_norm_affines(model, net, inits):
    """The exporter writes GroupNorm as InstanceNormalization → Reshape → Mul(γ) → Add(β) with
    anonymous γ, β: the i-th InstanceNormalization of the graph is the i-th GroupNorm call."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
             for n, m in net.named_modules() if isinstance(m, torch.nn.GroupNorm)]
    with torch.no_grad():
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
    for h in hooks:
        h.remove()
    consumers = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out = {}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == len(calls), (len(norms), len(calls))
    for node, name in zip(norms, calls):
        v = node.output[0]
        found = {}
        while len(found) < 2:
            nxt = consumers[v][0]
            if nxt.op_type in ("Mul", "Add"):
                w = [i for i in nxt.input if i in inits][0]
                found["weight" if nxt.op_type == "Mul" else "bias"] = inits[w].reshape(-1)
            v = nxt.output[0]
        for k, a in found.items():
            out[f"{name}.{k}"] = a
    return out


def main():
    path = os.path.join(OUT, "model.onnx")
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    net = CondUNet().eval()
    inits.update(group_norm_affines(model, net, inits))
    state = net.state_dict()
    missing = [k for k in state if k not in inits]
    assert not missing, f"initializers missing for {missing}"
    net.load_state_dict({k: torch.from_numpy(inits[k].copy()) for k in state})

    digits = np.load(os.path.join(OUT, "..", "digits", "forget_class3.npz"))
    x0 = digits["x"][:8] * 2.0 - 1.0  # [0, 1] → the model's [-1, 1]
    rng = np.random.default_rng(11)
    t = rng.integers(0, T, 8).astype(np.int64)
    e = rng.standard_normal(x0.shape).astype(np.float32)
    y = np.full(8, 3, np.int64)
    abar = torch.tensor(schedule(), dtype=torch.float32)[torch.from_numpy(t)][:, None, None, None]
    x_t = abar.sqrt() * torch.from_numpy(x0) + (1 - abar).sqrt() * torch.from_numpy(e)

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ort_eps = sess.run(None, {"x_t": x_t.numpy(), "t": t, "y": y})[0]
    with torch.no_grad():
        diff = np.abs(net(x_t, torch.from_numpy(t), torch.from_numpy(y)).numpy() - ort_eps).max()
    assert diff < 1e-4, f"rebuilt network differs from onnxruntime by {diff}"

    tt = torch.from_numpy(t)
    out = net(torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([torch.from_numpy(y), torch.full((8,), NULL)]))
    guided = (1 + GUIDANCE) * out[:8] - GUIDANCE * out[8:]
    loss = ((torch.from_numpy(e) - guided) ** 2).sum((1, 2, 3)).mean()
    loss.backward()
    params = dict(net.named_parameters())
    arrays = {"x0": x0.astype(np.float32), "t": t, "e": e, "y": y, "x_t": x_t.numpy(),
              "loss": np.array(loss.item(), np.float32)}
    for w in WEIGHTS:
        arrays["grad/" + w] = params[w].grad.numpy()
    dst = os.path.join(OUT, "ref", "guided.npz")
    tmp = dst + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, dst)
    print(f"wrote {dst}: loss {loss.item():.4f}, rebuilt vs onnxruntime {diff:.1e}")


if __name__ == "__main__":
    main()
