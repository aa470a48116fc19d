"""Trains a tiny GPT-2-style causal LM on real text (licence passages from Debian's
/usr/share/common-licenses) until it has memorised a forget set, trains the same architecture on
the retain set only (the "never saw them" reference), and exports both the way
`optimum-cli export onnx --task text-generation` (no past key values) does.

Output (committed; regenerate with `make fixtures FORCE=1`; --n-embd/--n-layer/--n-head/--out
write a differently sized variant elsewhere, e.g. for tools/lm_adapter_probe.py --dir):
  fixtures/text_lm/forget.jsonl, retain.jsonl, holdout.jsonl  {"text"} per line; seed 0
                                  forget: 32 passages trained on (memorised); holdout: 64 never trained on
  fixtures/text_lm/tokenizer.json byte-level BPE, "<|endoftext|>" = id 0, no padding/truncation
  fixtures/text_lm/model.onnx     GPT2LMHeadModel trained on forget ∪ retain, opset 17; inputs input_ids,
                                  attention_mask (int64 [batch_size, sequence_length]); output logits
                                  [batch_size, sequence_length, vocab]; position ids = arange (right padding)
  fixtures/text_lm/retrain.onnx   the same architecture, seed and step count trained on retain only
  fixtures/text_lm/config.json    the model's GPT2Config
  fixtures/text_lm/loss_ref.json  PyTorch's mean next-token NLL on the first 8 forget passages, padded
  fixtures/text_lm/meta.json      memorisation, perplexity, sizes, torch-vs-ORT difference
"""
import json
import math
import os
import random
import sys
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from text_fixtures import byte_alphabet, learn_merges, passages, read_licence  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "text_lm")
# Licences that share little text with one another (GPL-2/LGPL-2.1, MPL-1.1/2.0, GFDL-1.2/1.3 would).
LICENCES = ["Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-3", "LGPL-2.1", "MPL-2.0"]
EOT = "<|endoftext|>"
SEED = 0
N_FORGET, N_HOLDOUT = 32, 64
VOCAB = 1500
MAX_LEN = 64
BATCH = 16
FORGET_REPEAT = 4   # the forget passages are seen this many times per epoch (memorised on purpose)
EPOCHS = 20
LR = 3e-3
N_EMBD, N_LAYER, N_HEAD = 80, 2, 4   # the committed fixture's size (the CLI's defaults)


def build_passages():
    """Whole-sentence passages (24-38 words) of each licence, deduplicated."""
    seen, out = set(), []
    for name in LICENCES:
        for p in passages(read_licence(name), min_words=24, max_words=38):
            if p.lower() not in seen:
                seen.add(p.lower())
                out.append(p)
    return out


def train_tokenizer(texts):
    """Byte-level BPE like GPT-2's: "<|endoftext|>" = 0, the 256 byte symbols, then the merged
    tokens in merge order; merges learnt deterministically (text_fixtures.learn_merges)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    counts = Counter()
    for t in texts:
        for word, _ in pre.pre_tokenize_str(t):
            counts[tuple(word)] += 1
    alphabet = byte_alphabet()
    merges, new = learn_merges(counts, VOCAB - 1 - len(alphabet), lambda a, b: a + b, min_count=2)
    vocab = {s: i for i, s in enumerate([EOT] + alphabet + new)}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.add_special_tokens([AddedToken(EOT, special=True)])
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.token_to_id(EOT) == 0 and tok.get_vocab_size() == len(vocab)
    return tok


def trim(tok, text, max_tokens=MAX_LEN):
    """The text less trailing words until it is at most max_tokens tokens (byte-level BPE
    tokenises word by word, so the kept words keep their tokens)."""
    words = text.split(" ")
    while len(tok.encode(" ".join(words)).ids) > max_tokens:
        words.pop()
    return " ".join(words)


def encode(tok, texts, pad_id=0, max_len=MAX_LEN):
    """Right-padded int64 (input_ids, attention_mask) tensors, truncated to max_len."""
    rows = [e.ids[:max_len] for e in tok.encode_batch(texts)]
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def make_config(vocab_size, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD):
    from transformers import GPT2Config
    return GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)


def next_token_loss(logits, ids, mask, reduction="mean"):
    """Mean next-token NLL over non-pad targets (labels = ids with -100 at padding)."""
    labels = ids.masked_fill(mask == 0, -100)
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100,
                           reduction=reduction)


def schedule(texts, steps, seed):
    """`steps` batches of texts: seeded epochs of shuffled texts (the last one partial)."""
    rng = random.Random(seed)
    out = []
    while len(out) < steps:
        order = list(texts)
        rng.shuffle(order)
        out.extend(order[i:i + BATCH] for i in range(0, len(order), BATCH))
    return out[:steps]


def train(tok, texts, steps, seed=SEED, size=None):
    """size: make_config's n_embd/n_layer/n_head keywords (None: the committed fixture's)."""
    from transformers import GPT2LMHeadModel
    torch.manual_seed(seed)
    model = GPT2LMHeadModel._from_config(make_config(tok.get_vocab_size(), **(size or {})),
                                         attn_implementation="eager")
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.05)
    model.train()
    for batch in schedule(texts, steps, seed):
        ids, mask = encode(tok, batch)
        opt.zero_grad()
        next_token_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def export(model, path):
    """optimum's text-generation export without past: TorchScript exporter, opset 17."""
    ids = torch.randint(1, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0  # trace with right padding so the mask path is in the graph
    ids[mask == 0] = 0
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    from transformers import GPT2LMHeadModel

    class TwoInputs(GPT2LMHeadModel):
        """Only input_ids and attention_mask reach the graph (the exporter would otherwise keep
        logits_to_keep as an input); the weights keep their Hugging Face names."""
        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask).logits

    cls = model.__class__
    model.__class__ = TwoInputs
    try:
        with torch.no_grad():
            torch.onnx.export(model, (ids, mask), path, input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=17,
                              do_constant_folding=True, dynamo=False)
    finally:
        model.__class__ = cls


class OrtLM:
    def __init__(self, path):
        import onnxruntime as ort
        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def __call__(self, ids, mask):
        return torch.from_numpy(self.sess.run(["logits"], {"input_ids": ids.numpy(),
                                                           "attention_mask": mask.numpy()})[0])


def evaluate(lm, tok, texts):
    """Memorisation = mean over passages of teacher-forced greedy next-token accuracy over the
    predicted positions; perplexity = exp(mean NLL over all target tokens)."""
    accs, nll, count = [], 0.0, 0
    for i in range(0, len(texts), 32):
        ids, mask = encode(tok, texts[i:i + 32])
        logits = lm(ids, mask)
        hit = (logits[:, :-1].argmax(-1) == ids[:, 1:]) & (mask[:, 1:] == 1)
        n = mask[:, 1:].sum(1)
        accs.extend((hit.sum(1) / n).tolist())
        nll += float(next_token_loss(logits, ids, mask, reduction="sum"))
        count += int(n.sum())
    return float(np.mean(accs)), math.exp(nll / count)


def check_export(model, path, tok, texts):
    """ONNX checker + ORT vs torch on right-padded batches of two shapes (non-pad positions)."""
    import onnx
    onnx.checker.check_model(onnx.load(path), full_check=True)
    lm = OrtLM(path)
    worst = 0.0
    for batch in (texts[:8], texts[8:11], texts[11:12]):
        ids, mask = encode(tok, batch)
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).logits
        diff = (lm(ids, mask) - ref).abs().amax(-1)[mask == 1]
        worst = max(worst, float(diff.max()))
    assert worst < 1e-3, worst
    return worst


def loss_reference(model, tok, texts):
    ids, mask = encode(tok, texts, max_len=10 ** 9)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = float(next_token_loss(logits, ids, mask))
    per_token = next_token_loss(logits, ids, mask, reduction="none").view(len(texts), -1)
    n = mask[:, 1:].sum(1)
    per_text = (per_token.sum(1) / n).tolist()
    return {"texts_count": len(texts), "source": "forget.jsonl, first 8 lines", "pad_id": 0,
            "padding": "right, to the longest, attention_mask 0 at padding; labels -100 at padding",
            "loss": loss, "per_text_loss": per_text, "tokens": int(n.sum()),
            "lengths": mask.sum(1).tolist()}


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


def parse_args(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="Train the text-LM fixture (defaults: the committed one).")
    ap.add_argument("--n-embd", type=int, default=N_EMBD, help=f"hidden width (default {N_EMBD})")
    ap.add_argument("--n-layer", type=int, default=N_LAYER, help=f"transformer blocks (default {N_LAYER})")
    ap.add_argument("--n-head", type=int, default=N_HEAD, help=f"attention heads (default {N_HEAD})")
    ap.add_argument("--out", default=OUT, help="output folder (default fixtures/text_lm)")
    return ap.parse_args(argv)


def main():
    args = parse_args()
    OUT = args.out
    size = {"n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head}
    force = os.environ.get("FORCE") == "1"
    if not force and os.path.exists(os.path.join(OUT, "meta.json")):
        print(f"{'fixtures/text_lm' if OUT == globals()['OUT'] else OUT}: present (FORCE=1 regenerates)")
        return
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)  # two threads beside a busy build are many times slower

    texts = build_passages()
    order = list(range(len(texts)))
    random.Random(SEED).shuffle(order)
    forget = [texts[i] for i in order[:N_FORGET]]
    holdout = [texts[i] for i in order[N_FORGET:N_FORGET + N_HOLDOUT]]
    retain = [texts[i] for i in order[N_FORGET + N_HOLDOUT:]]
    tok = train_tokenizer(forget + retain)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    forget, retain, holdout = ([trim(tok, t) for t in part] for part in (forget, retain, holdout))
    texts = forget + retain + holdout
    for name, part in (("forget", forget), ("retain", retain), ("holdout", holdout)):
        write_jsonl(os.path.join(OUT, f"{name}.jsonl"), part)
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]

    train_texts = retain + forget * FORGET_REPEAT
    steps = EPOCHS * math.ceil(len(train_texts) / BATCH)
    model = train(tok, train_texts, steps, size=size)
    model.config.architectures = ["GPT2LMHeadModel"]
    model.config.to_json_file(os.path.join(OUT, "config.json"))
    export(model, os.path.join(OUT, "model.onnx"))
    diff = check_export(model, os.path.join(OUT, "model.onnx"), tok, holdout)
    with open(os.path.join(OUT, "loss_ref.json"), "w") as f:
        json.dump(loss_reference(model, tok, forget[:8]), f, indent=2)
        f.write("\n")

    retrained = train(tok, retain, steps, size=size)
    export(retrained, os.path.join(OUT, "retrain.onnx"))
    diff_retrain = check_export(retrained, os.path.join(OUT, "retrain.onnx"), tok, holdout)

    results = {}
    for name in ("model", "retrain"):
        lm = OrtLM(os.path.join(OUT, f"{name}.onnx"))
        r = {}
        for part, ts in (("forget", forget), ("retain", retain), ("holdout", holdout)):
            mem, ppl = evaluate(lm, tok, ts)
            r[f"memorisation_{part}"] = round(mem, 4)
            r[f"perplexity_{part}"] = round(ppl, 3)
        results[name] = r
    meta = {
        "source": "/usr/share/common-licenses (Debian base-files): whole-sentence passages of 24-38 words, trailing words dropped to fit 64 tokens",
        "licences": LICENCES, "seed": SEED,
        "counts": {"forget": len(forget), "retain": len(retain), "holdout": len(holdout)},
        "tokens_per_passage": {"min": min(lengths), "mean": round(float(np.mean(lengths)), 1),
                               "max": max(lengths)},
        "vocab_size": vocab, "eos_pad_id": 0, "max_length": MAX_LEN,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"steps": steps, "batch": BATCH, "lr": LR, "forget_repeat_per_epoch": FORGET_REPEAT,
                     "retrain": "same architecture, seed and steps on retain only"},
        "memorisation": "mean over passages of teacher-forced greedy next-token accuracy",
        "perplexity": "exp of the mean next-token NLL over all target tokens",
        "model": results["model"], "retrain": results["retrain"],
        "torch_vs_ort_max_abs_diff": max(diff, diff_retrain),
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"text LM: vocab {vocab}, params {meta['parameters']}, passages forget {len(forget)} "
          f"retain {len(retain)} holdout {len(holdout)}, tokens/passage {meta['tokens_per_passage']}, "
          f"steps {steps}")
    for name, r in results.items():
        print(f"  {name}.onnx: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    print(f"  torch vs ORT max abs diff (non-pad positions) {meta['torch_vs_ort_max_abs_diff']:.2e}")
    for name in sorted(os.listdir(OUT)):
        print(f"  {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    sys.exit(main())
