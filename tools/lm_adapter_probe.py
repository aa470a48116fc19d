"""How far each kind of weight update can take the text-LM fixture toward issue 10's causal-LM
bar (forget memorisation <= the retrained model's + 5 points, retain perplexity up <= 10%), with
the same objective and data for all: the push-down of the true next token plus the KL to the
frozen model over the other tokens (semu's `redistribute`) on 8 forget passages, plus the retain
NLL on 32 retain passages, Adam, per step. Only the update's form changes:

  full   every entry of the matrices SEMU adapts (each block's four Gemms and the LM head: nine on
         the committed fixture)
  semu   W + U R Vᵀ, U/V the top singular vectors of the projected forget gradient reaching
         --gamma (SEMU's subspace; the same k as `semu unlearn` picks), R trained
  semu+r the same with the retain gradient's top vectors (--gamma-retain) added to U and V
  lora   W + A B with A m×r, B r×n trained (--rank)

Usage: python tools/lm_adapter_probe.py KIND [--steps 150] [--lr 1e-2] [--gamma 0.8] [--dir DIR] ...
--dir: a folder written by make_text_lm.py (default fixtures/text_lm; --out there writes other
sizes); the model's size and blocks come from its config.json.
Prints forget memorisation / perplexity and retain memorisation / perplexity every 25 steps.
Research aid for the README's causal-LM section; not part of `make test`.
"""
import argparse
import json
import os
import random
import sys
import time

import onnx
import torch
from onnx import numpy_helper
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_text_lm as lm  # noqa: E402

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "text_lm")


def read_size(d):
    """make_config's size keywords from the folder's config.json."""
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    return {"n_embd": c["n_embd"], "n_layer": c["n_layer"], "n_head": c["n_head"]}


def adapted_names(n_layer):
    """The matrices SEMU adapts: each block's four Gemms and the LM head."""
    return [f"transformer.h.{i}.{p}.weight" for i in range(n_layer)
            for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")] + ["lm_head.weight"]


def load_model(tok, d=D):
    """The fixture's GPT-2 with the ONNX file's weights, the LM head untied (as in the export)."""
    from transformers import GPT2LMHeadModel
    m = GPT2LMHeadModel._from_config(lm.make_config(tok.get_vocab_size(), **read_size(d)),
                                     attn_implementation="eager")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(os.path.join(d, "model.onnx")).graph.initializer}
    sd = m.state_dict()
    for k in sd:
        if k in inits and tuple(inits[k].shape) == tuple(sd[k].shape):
            sd[k] = torch.from_numpy(inits[k].copy())
    head = [v for k, v in inits.items() if v.shape == (m.config.n_embd, tok.get_vocab_size())]
    assert len(head) == 1, "the export's LM head MatMul initializer"
    sd["transformer.wte.weight"] = sd["transformer.wte.weight"] if "transformer.wte.weight" in inits \
        else torch.from_numpy(head[0].T.copy())
    m.load_state_dict(sd)
    m.lm_head.weight = torch.nn.Parameter(torch.from_numpy(head[0].T.copy()))
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def token_terms(logits, ids, mask):
    lp = logits[:, :-1].log_softmax(-1)
    y = ids[:, 1:]
    return lp, y, mask[:, 1:].float()


def forget_term(logits, frozen_logits, ids, mask):
    """−log(1 − q_y) + KL(frozen ‖ current) over the other tokens, mean over unpadded positions."""
    lp, y, w = token_terms(logits, ids, mask)
    ly = lp.gather(2, y.unsqueeze(2)).squeeze(2)
    push = -torch.log1p(-ly.exp().clamp(max=1 - 1e-6))
    true = torch.zeros_like(lp, dtype=torch.bool).scatter_(2, y.unsqueeze(2), True)
    cur = logits[:, :-1].masked_fill(true, -1e9).log_softmax(-1)
    ref = frozen_logits[:, :-1].masked_fill(true, -1e9).log_softmax(-1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    return ((push + kl) * w).sum() / w.sum()


def gradients(m, tok, texts, names):
    ws = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters() if n in names}
    for i in range(0, len(texts), 32):
        ids, mask = lm.encode(tok, texts[i:i + 32])
        out = functional_call(m, ws, (), dict(input_ids=ids, attention_mask=mask)).logits
        lm.next_token_loss(out, ids, mask).backward()
    return {n: w.grad for n, w in ws.items()}


def top_vectors(g, w, gamma):
    g = g - (g * w).sum() / (w * w).sum() * w  # SEMU's projection
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    share = (s ** 2).cumsum(0) / (s ** 2).sum()
    k = int((share < gamma).sum()) + 1
    return u[:, :k], vh[:k].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["full", "semu", "semu+r", "lora"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=None, help="1e-3 for full, else 1e-2")
    ap.add_argument("--gamma", type=float, default=0.8)
    ap.add_argument("--gamma-retain", type=float, default=0.8)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--dir", default=D, help="fixture folder (default fixtures/text_lm)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.time()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.dir, "tokenizer.json"))
    read = lambda f: [json.loads(x)["text"] for x in open(os.path.join(a.dir, f), encoding="utf-8")]
    forget, retain = read("forget.jsonl"), read("retain.jsonl")
    m, frozen = load_model(tok, a.dir), load_model(tok, a.dir)
    names = adapted_names(m.config.n_layer)
    base = {n: p.detach() for n, p in m.named_parameters() if n in names}
    total = sum(p.numel() for p in m.parameters())  # the LM head counted apart, as in the export

    if a.kind == "full":
        deltas = {n: torch.zeros_like(w, requires_grad=True) for n, w in base.items()}
        trained = list(deltas.values())
        weights = lambda: {n: base[n] + deltas[n] for n in base}
    elif a.kind == "lora":
        fac = {n: ((torch.randn(w.shape[0], a.rank) * 0.01).requires_grad_(True),
                   torch.zeros(a.rank, w.shape[1], requires_grad=True)) for n, w in base.items()}
        trained = [t for ab in fac.values() for t in ab]
        weights = lambda: {n: base[n] + fac[n][0] @ fac[n][1] for n in base}
    else:
        gf = gradients(m, tok, forget, names)
        gr = gradients(m, tok, retain, names) if a.kind == "semu+r" else None
        sub = {}
        for n, w in base.items():
            u, v = top_vectors(gf[n], w, a.gamma)
            if gr is not None:
                u2, v2 = top_vectors(gr[n], w, a.gamma_retain)
                u, v = torch.linalg.qr(torch.cat([u, u2], 1))[0], torch.linalg.qr(torch.cat([v, v2], 1))[0]
            sub[n] = (u, v, torch.zeros(u.shape[1], v.shape[1], requires_grad=True))
        trained = [r for _, _, r in sub.values()]
        weights = lambda: {n: base[n] + u @ r @ v.T for n, (u, v, r) in sub.items()}
    count = sum(t.numel() for t in trained)
    print(f"{a.kind}: {count} trainable = {100 * count / total:.3f}% of {total}", flush=True)

    def run(ids, mask):
        return functional_call(m, weights(), (), dict(input_ids=ids, attention_mask=mask)).logits

    def report(step):
        with torch.no_grad():
            f = lm.evaluate(run, tok, forget)
            r = lm.evaluate(run, tok, retain)
        print(f"step {step:4d}  forget memorisation {100 * f[0]:5.1f}% ppl {f[1]:7.2f}   "
              f"retain memorisation {100 * r[0]:5.1f}% ppl {r[1]:6.2f}", flush=True)

    report(0)
    opt = torch.optim.Adam(trained, lr=a.lr or (1e-3 if a.kind == "full" else 1e-2))
    rng = random.Random(0)
    for step in range(1, a.steps + 1):
        ids, mask = lm.encode(tok, rng.sample(forget, 8))
        with torch.no_grad():
            ref = frozen(input_ids=ids, attention_mask=mask).logits
        loss = forget_term(run(ids, mask), ref, ids, mask)
        ids, mask = lm.encode(tok, rng.sample(retain, 32))
        loss = loss + lm.next_token_loss(run(ids, mask), ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            report(step)
    with torch.no_grad():  # how many dimensions the update uses: k reaching 80% of Σσ²
        ks = []
        for n, w in weights().items():
            s = torch.linalg.svdvals(w - base[n]) ** 2
            ks.append(f"{int(((s.cumsum(0) / s.sum()) < 0.8).sum()) + 1}/{min(w.shape)}")
        print("update rank at 80% of its energy, per matrix:", " ".join(ks))
    print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
