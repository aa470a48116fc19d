"""PyTorch re-implementation of the authors' DDPM SEMU (gmum/semu `DDPM/`, SEMU-diffusion.md
§1.3–§1.8) on fixtures/ddpm/model.onnx, for `semu unlearn --parity reference` (tests/diffusion_parity.rs).

It draws every random number itself and writes them to DIR as .npy, so that semu can replay them
(`--replay-draws DIR`); then it writes what semu must reproduce.

  forget.npz                 the forget images (the first --images of class --forget-class of
                             fixtures/digits/forget_class3.npz's kind: x in [0, 1], y)
  gradient_idx.npy i64[G,B]  the gradient pass's batches (one shuffled pass over forget.npz)
  gradient_t.npy   i64[G,B]  antithetic timesteps
  gradient_e.npy   f32[G,B,1,8,8]
  train_idx.npy    i64[S,B]  the S training steps' batches (shuffled loader, reshuffled per epoch)
  train_t.npy, train_e.npy   as above
  train_null_forget.npy u8[S,B]  1 where the forget branch's class is replaced by ∅ (p_uncond)
  train_null_target.npy u8[S,B]  the same, drawn independently, for the teacher's branch
  reference.npz              k/<weight> (i64: [I] per input channel for a conv, [1] for a Linear),
                             g/<weight> (the projected gradient), r/<weight> (R after S Adam
                             steps, the authors' full r×r, I×r×r for a conv), u/<weight> (U:
                             singular vectors are signed arbitrarily, so R compares on aligned
                             bases), d/<weight> (U R Vᴴ in the weight's shape), and diagnostics:
                             clip_gradient (each gradient batch's norm before its clip),
                             clip_train (each step's full-R gradient norm before its clip),
                             clip_train_masked (the same norm over the trained k×k entries only),
                             loss_train

Line by line as the authors: gradient of the CFG-guided noise error (w = 2), Σ pixels, mean over
the batch, each batch's gradient clipped to global norm 1 over every Linear/Conv weight, summed;
G − (⟨G,W⟩/‖W‖)·W; SVD (per input channel for convs, I×O×kh·kw); k = searchsorted(cum, γ,
right) in float32, γ_attn for weights whose name contains "attn"; R full r×r at 0 in every
Linear/Conv; per step: ε(x_t, t, ỹ_f) against the detached current-model ε(x_t, t, ỹ′), c′ =
(c_f + 1) mod 10, null masks drawn independently per branch, MSE (mean), clip the global norm
of every R gradient to 1, then mask each R gradient to its k×k block(s), Adam.
ᾱ is the authors' float32 cumprod of float32 β (`runners/diffusion.py:90`, `:1589`).
"""
import argparse
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddpm_grad_reference import group_norm_affines  # noqa: E402
from make_ddpm import BETA_END, BETA_START, NULL, NUM_CLASSES, OUT, T, CondUNet  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load_net():
    model = onnx.load(os.path.join(OUT, "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    net = CondUNet().eval()
    inits.update(group_norm_affines(model, net, inits))
    net.load_state_dict({k: torch.from_numpy(inits[k].copy()) for k in net.state_dict()})
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def adaptable(net):
    """Module name → module for every nn.Linear / nn.Conv2d (exact type, `svd_utils/utils.py:123`)."""
    return {n: m for n, m in net.named_modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d)}


def antithetic(n):
    t = torch.randint(low=0, high=T, size=(n // 2 + 1,))
    return torch.cat([t, T - t - 1], dim=0)[:n]


def q_sample(abar, x0, t, e):
    a = abar.index_select(0, t).view(-1, 1, 1, 1)
    return x0 * a.sqrt() + e * (1.0 - a).sqrt()


def ranks(s, gamma):
    """`transform_model.py:93-129`: searchsorted on the float32 cumulative explained variance."""
    if s.dim() == 1:
        cum = torch.cumsum(torch.square(s) / torch.square(s).sum(), dim=0)
        return torch.searchsorted(cum, torch.tensor(gamma, dtype=cum.dtype), side="right").reshape(1)
    cum = torch.cumsum(torch.square(s) / torch.square(s).sum(dim=1, keepdim=True), dim=1)
    want = torch.full((s.shape[0], 1), gamma, dtype=cum.dtype)
    return torch.searchsorted(cum, want, side="right").reshape(-1)


def delta(m, u, r, vh):
    """U R Vᴴ as the custom layers add it (`svd_utils/utils.py:40`, `:82-86`)."""
    if isinstance(m, torch.nn.Linear):
        return torch.einsum("ij,jk,kl->il", u, r, vh)
    d = torch.einsum("nij,njk,nkl->nil", u, r, vh)
    return torch.permute(torch.unflatten(d, 2, m.kernel_size), (1, 0, 2, 3))


def mask_of(r, k):
    """`transform_model.py:clip_grad`: the top-left k×k block of R (per input channel for a conv)."""
    ar = torch.arange(r.shape[-1])
    if r.dim() == 2:
        m = ar.unsqueeze(-1) < k.unsqueeze(-1)
        return m & m.transpose(0, 1)
    m = ar.unsqueeze(0).unsqueeze(-1) < k.unsqueeze(-1).unsqueeze(-1)
    return m & m.transpose(1, 2)


def global_norm(grads):
    return torch.norm(torch.stack([torch.norm(g.detach(), 2.0) for g in grads]), 2.0).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--forget-class", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=0.95)
    ap.add_argument("--gamma-attention", type=float, default=1.0)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--clip", type=float, default=1.0, help="the global-norm clip of training (config grad_clip)")
    ap.add_argument("--clip-trained-only", action="store_true",
                    help="not the authors': clip the norm of the trained k×k entries only (semu before 2026-12-07)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    net = load_net()
    layers = adaptable(net)

    digits = np.load(os.path.join(ROOT, "fixtures", "digits", "train.npz"))
    keep = np.flatnonzero(digits["y"] == a.forget_class)[: a.images]
    x_all = torch.from_numpy(digits["x"][keep].astype(np.float32)).reshape(len(keep), 1, 8, 8)
    c_f = a.forget_class
    np.savez(os.path.join(a.dir, "forget.npz"), x=x_all.numpy(), y=np.full(len(keep), c_f, np.int64))
    x_all = x_all * 2.0 - 1.0  # data_transform: [0, 1] → [-1, 1]
    betas = torch.from_numpy(np.linspace(BETA_START, BETA_END, T, dtype=np.float64)).float()
    abar = (1 - betas).cumprod(dim=0)
    n = len(keep)

    # §1.3: one shuffled pass, each batch's guided-noise gradient clipped to norm 1, summed.
    weights = {name: m.weight for name, m in layers.items()}
    for w in weights.values():
        w.requires_grad_(True)
    perm = torch.randperm(n)
    g_idx, g_t, g_e, clip_g = [], [], [], []
    total = {name: torch.zeros_like(w) for name, w in weights.items()}
    for b in range(0, n, a.batch):
        idx = perm[b:b + a.batch]
        x0 = x_all[idx]
        e = torch.randn_like(x0)
        t = antithetic(len(idx))
        x_t = q_sample(abar, x0, t, e)
        c = torch.full((len(idx),), c_f)
        out = (1 + a.guidance) * net(x_t, t, c) - a.guidance * net(x_t, t, torch.full_like(c, NULL))
        loss = (e - out).square().sum(dim=(1, 2, 3)).mean(dim=0)
        for w in weights.values():
            w.grad = None
        loss.backward()
        clip_g.append(torch.nn.utils.clip_grad_norm_(list(weights.values()), 1.0).item())
        for name, w in weights.items():
            total[name] += w.grad
        g_idx.append(idx.numpy())
        g_t.append(t.numpy())
        g_e.append(e.numpy())
    for w in weights.values():
        w.requires_grad_(False)
        w.grad = None

    # §1.4–§1.5: projection by ‖W‖, SVD, searchsorted ranks.
    arrays, bases = {}, {}
    for name, m in layers.items():
        w, g = m.weight, total[name]
        g = g - (torch.sum(g * w) / torch.linalg.norm(w)) * w
        arrays[f"g/{name}.weight"] = g.numpy()
        gamma = a.gamma_attention if "attn" in name else a.gamma
        mat = g if g.dim() == 2 else torch.flatten(torch.permute(g, (1, 0, 2, 3)), start_dim=2)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        k = ranks(s, gamma)
        arrays[f"k/{name}.weight"] = k.numpy().astype(np.int64)
        r = torch.zeros(u.shape[:-2] + (u.shape[-1], vh.shape[-2]), requires_grad=True)
        bases[name] = (m, u, r, vh, mask_of(r, k))

    # §1.6–§1.8: R full r×r in every layer, the moving teacher, clip then mask, Adam.
    rs = [b[2] for b in bases.values()]
    opt = torch.optim.Adam(rs, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False)
    draws = {k: [] for k in ("idx", "t", "e", "null_forget", "null_target")}
    clip_t, clip_masked, losses = [], [], []
    order = []
    c_prime = (c_f + 1) % 10
    assert NUM_CLASSES == 10

    def forward(x_t, t, y):
        over = {f"{name}.weight": m.weight + delta(m, u, r, vh) for name, (m, u, r, vh, _) in bases.items()}
        return torch.func.functional_call(net, over, (x_t, t, y))

    for _ in range(a.iterations):
        if len(order) < a.batch:
            order = torch.randperm(n).tolist()  # a shuffled loader's next epoch
        idx, order = torch.tensor(order[:a.batch]), order[a.batch:]
        x0 = x_all[idx]
        e = torch.randn_like(x0)
        t = antithetic(len(idx))
        x_t = q_sample(abar, x0, t, e)
        c = torch.full((len(idx),), c_f)
        # mode="train": keep_mask ~ Bernoulli(1 − p) per sample, else the null class (§1.1).
        drop_f = torch.rand(len(idx)) < a.p_uncond
        output = forward(x_t, t, torch.where(drop_f, NULL, c))
        drop_t = torch.rand(len(idx)) < a.p_uncond
        with torch.no_grad():
            pseudo = forward(x_t, t, torch.where(drop_t, NULL, torch.full_like(c, c_prime))).detach()
        loss = F.mse_loss(output, pseudo)
        opt.zero_grad()
        loss.backward()
        clip_masked.append(global_norm([r.grad * mk for (_, _, r, _, mk) in bases.values()]))
        if a.clip_trained_only:
            for (_, _, r, _, mk) in bases.values():
                r.grad.mul_(mk)
        clip_t.append(torch.nn.utils.clip_grad_norm_(rs, a.clip).item())
        for (_, _, r, _, mk) in bases.values():
            r.grad.mul_(mk)
        opt.step()
        losses.append(loss.item())
        for key, v in (("idx", idx), ("t", t), ("e", e), ("null_forget", drop_f), ("null_target", drop_t)):
            draws[key].append(v.numpy())

    with torch.no_grad():
        for name, (m, u, r, vh, _) in bases.items():
            arrays[f"r/{name}.weight"] = r.detach().numpy()
            arrays[f"u/{name}.weight"] = u.numpy()
            arrays[f"d/{name}.weight"] = delta(m, u, r, vh).numpy()
    arrays["clip_gradient"] = np.array(clip_g, np.float64)
    arrays["clip_train"] = np.array(clip_t, np.float64)
    arrays["clip_train_masked"] = np.array(clip_masked, np.float64)
    arrays["loss_train"] = np.array(losses, np.float64)
    files = {
        "gradient_idx": np.stack(g_idx).astype(np.int64), "gradient_t": np.stack(g_t).astype(np.int64),
        "gradient_e": np.stack(g_e).astype(np.float32),
        "train_idx": np.stack(draws["idx"]).astype(np.int64), "train_t": np.stack(draws["t"]).astype(np.int64),
        "train_e": np.stack(draws["e"]).astype(np.float32),
        "train_null_forget": np.stack(draws["null_forget"]).astype(np.uint8),
        "train_null_target": np.stack(draws["null_target"]).astype(np.uint8),
    }
    for key, v in files.items():
        np.save(os.path.join(a.dir, key + ".npy"), v)
    np.savez(os.path.join(a.dir, "reference.npz"), **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    trainable = sum(int((v ** 2).sum()) for k, v in arrays.items() if k.startswith("k/"))
    print(f"wrote {a.dir}: {len(layers)} layers, {trainable} trainable, gradient batch norms "
          + " ".join(f"{v:.3g}" for v in clip_g) + ", training R-gradient norms (full r×r / trained) "
          + " ".join(f"{v:.3g}/{w:.3g}" for v, w in zip(clip_t, clip_masked))
          + ", losses " + " ".join(f"{v:.4g}" for v in losses))


if __name__ == "__main__":
    main()
