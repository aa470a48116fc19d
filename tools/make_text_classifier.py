"""Trains a tiny BERT-style text classifier on real text (licence families, from Debian's
/usr/share/common-licenses), exports it to ONNX the way `optimum-cli export onnx --task
text-classification` does, and writes the data, tokenizer and references the Rust side tests against.

Output (committed; regenerate with `make fixtures FORCE=1`):
  fixtures/text_cls/train.jsonl, test.jsonl  {"text", "label", "licence"} per line; stratified 80/20, seed 0
  fixtures/text_cls/forget_class4.jsonl, retain_class4.jsonl  the training set split by the forget class
  fixtures/text_cls/tokenizer.json           WordPiece (BERT normaliser/pre-tokenizer), no padding/truncation
  fixtures/text_cls/model.onnx               BertForSequenceClassification, opset 17; inputs input_ids,
                                             attention_mask, token_type_ids (int64 [batch_size, sequence_length]),
                                             output logits [batch_size, num_labels]
  fixtures/text_cls/config.json              the model's BertConfig (id2label = licence names)
  fixtures/text_cls/model_fixed.onnx         the same weights, fixed shape batch 4 × sequence 48
  fixtures/text_cls/retrain_class<C>.onnx    same architecture/seed trained without the forget class C
  fixtures/text_cls/tokenized_ref.npz        the `tokenizers` library's encodings of the first 32 test texts
  fixtures/text_cls/test_head.csv            the first 8 test texts as CSV (text,label)
  fixtures/text_cls/meta.json                classes, counts, accuracies, torch-vs-ORT difference

Test accuracy is about 0.77, not 0.9: many 6-40-word chunks of legal text are generic ("add no
other conditions whatsoever to those of this License."); a TF-IDF logistic regression reaches about
0.8 on the same split, and no learning-rate/epoch/dropout setting tried got the tiny BERT past 0.78.
"""
import csv
import json
import os
import sys
from collections import Counter

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from text_fixtures import chunks, learn_merges, read_licence  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "text_cls")
LICENCES = ["Apache-2.0", "Artistic", "GFDL-1.3", "GPL-3", "MPL-2.0"]  # label = index
FORGET_CLASS = 4  # MPL-2.0
SEED = 0
MAX_LEN = 64
EPOCHS = 40
LR = 3e-3
FIXED_BATCH, FIXED_SEQ = 4, 48
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_data():
    """(text, label) pairs: sentence-like chunks of each licence; a chunk found in two licences
    is dropped, a repeated chunk within one is kept once."""
    per = {name: chunks(read_licence(name)) for name in LICENCES}
    owners = {}
    for name, cs in per.items():
        for c in cs:
            owners.setdefault(c.lower(), set()).add(name)
    seen, rows = set(), []
    for label, name in enumerate(LICENCES):
        for c in per[name]:
            key = c.lower()
            if len(owners[key]) > 1 or key in seen:
                continue
            seen.add(key)
            rows.append({"text": c, "label": label, "licence": name})
    return rows


def train_tokenizer(texts, vocab_size=1800):
    """BERT-style WordPiece: merges learnt deterministically (text_fixtures.learn_merges) over
    the words that the BERT normaliser and pre-tokenizer give."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    tok = Tokenizer(models.WordPiece({s: i for i, s in enumerate(SPECIALS)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter()
    for t in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(t)):
            counts[tuple([word[0]] + ["##" + ch for ch in word[1:]])] += 1
    alphabet = sorted({s for w in counts for s in w})
    join = lambda a, b: a + (b[2:] if b.startswith("##") else b)
    _, pieces = learn_merges(counts, vocab_size - len(SPECIALS) - len(alphabet), join, min_count=2)
    vocab = {s: i for i, s in enumerate(SPECIALS + alphabet + pieces)}
    tok.model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    return tok


def encode(tok, texts, max_len=MAX_LEN):
    """Right-padded int64 batch (pad id 0), truncated to max_len, as a dict of tensors."""
    encs = tok.encode_batch(texts)
    rows = [e.ids[:max_len - 1] + [e.ids[-1]] if len(e.ids) > max_len else e.ids for e in encs]
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.zeros_like(torch.from_numpy(ids))}


def make_config(vocab_size):
    from transformers import BertConfig
    return BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=128, max_position_embeddings=128, type_vocab_size=2,
                      pad_token_id=0, num_labels=len(LICENCES),
                      id2label={i: n for i, n in enumerate(LICENCES)},
                      label2id={n: i for i, n in enumerate(LICENCES)})


def train(tok, texts, labels, vocab_size, seed=SEED, epochs=EPOCHS):
    from transformers import BertForSequenceClassification
    torch.manual_seed(seed)
    model = BertForSequenceClassification._from_config(make_config(vocab_size), attn_implementation="eager")
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    y = torch.tensor(labels)
    g = torch.Generator().manual_seed(seed)
    batch = 32
    steps = epochs * ((len(texts) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(texts), generator=g).tolist()
        for i in range(0, len(texts), batch):
            idx = perm[i:i + batch]
            enc = encode(tok, [texts[j] for j in idx])
            opt.zero_grad()
            logits = model(**enc).logits
            torch.nn.functional.cross_entropy(logits, y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def export(model, path, fixed=False):
    """optimum's text-classification export: TorchScript exporter, opset 17, constant folding."""
    b, s = (FIXED_BATCH, FIXED_SEQ) if fixed else (2, 16)
    ids = torch.randint(5, model.config.vocab_size, (b, s), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, s, dtype=torch.int64)
    mask[-1, s // 2:] = 0  # trace with padding so the mask path is in the graph
    ids[mask == 0] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = None if fixed else {**{n: {0: "batch_size", 1: "sequence_length"} for n in names},
                               "logits": {0: "batch_size"}}
    with torch.no_grad():
        torch.onnx.export(model, (), path,
                          kwargs={"input_ids": ids, "attention_mask": mask,
                                  "token_type_ids": torch.zeros_like(ids)},
                          input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)


def ort_logits(sess, enc):
    feeds = {i.name: enc[i.name].numpy() for i in sess.get_inputs()}
    return sess.run(["logits"], feeds)[0]


def ort_accuracy(path, tok, texts, labels):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    preds = []
    for i in range(0, len(texts), 64):
        preds.append(ort_logits(sess, encode(tok, texts[i:i + 64])).argmax(1))
    preds, y = np.concatenate(preds), np.asarray(labels)
    per = {LICENCES[c]: round(float((preds[y == c] == c).mean()), 4) for c in range(len(LICENCES)) if (y == c).any()}
    return round(float((preds == y).mean()), 4), per


def check_export(model, tok, texts):
    """ONNX checker + ORT vs torch on a padded batch (and on a second, differently shaped one)."""
    import onnx
    import onnxruntime as ort
    worst = 0.0
    for path in ("model.onnx", "model_fixed.onnx"):
        onnx.checker.check_model(onnx.load(os.path.join(OUT, path)), full_check=True)
    sess = ort.InferenceSession(os.path.join(OUT, "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (texts[:8], texts[8:11]):
        enc = encode(tok, batch)
        assert (enc["attention_mask"] == 0).any(), "the check batch must be padded"
        with torch.no_grad():
            ref = model(**enc).logits.numpy()
        worst = max(worst, float(np.abs(ort_logits(sess, enc) - ref).max()))
    fixed = ort.InferenceSession(os.path.join(OUT, "model_fixed.onnx"), providers=["CPUExecutionProvider"])
    shape = fixed.get_inputs()[0].shape
    assert shape == [FIXED_BATCH, FIXED_SEQ], shape
    enc = encode(tok, texts[:FIXED_BATCH])
    enc = {k: torch.nn.functional.pad(v, (0, FIXED_SEQ - v.shape[1])) for k, v in enc.items()}
    with torch.no_grad():
        ref = model(**enc).logits.numpy()
    worst_fixed = float(np.abs(ort_logits(fixed, enc) - ref).max())
    assert worst < 1e-4 and worst_fixed < 1e-4, (worst, worst_fixed)
    return worst, worst_fixed


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def tokenizer_reference(test_texts):
    """What the Python `tokenizers` library gives for tokenizer.json: padded to the longest
    (right, pad id 0), and also truncated to 16."""
    from tokenizers import Tokenizer
    texts = test_texts[:32]
    arrays = {}
    for suffix, max_len in (("", None), ("_max16", 16)):
        tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
        tok.enable_padding(direction="right", pad_id=0, pad_type_id=0, pad_token="[PAD]")
        if max_len:
            tok.enable_truncation(max_length=max_len)
        encs = tok.encode_batch(texts)
        arrays["input_ids" + suffix] = np.array([e.ids for e in encs], np.int64)
        arrays["attention_mask" + suffix] = np.array([e.attention_mask for e in encs], np.int64)
        arrays["token_type_ids" + suffix] = np.array([e.type_ids for e in encs], np.int64)
    np.savez(os.path.join(OUT, "tokenized_ref.npz"), **arrays)
    return arrays["input_ids"].shape


def main():
    force = os.environ.get("FORCE") == "1"
    if not force and os.path.exists(os.path.join(OUT, "meta.json")):
        print("fixtures/text_cls: present (FORCE=1 regenerates)")
        return
    from sklearn.model_selection import train_test_split
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)  # two threads beside a busy build are many times slower

    rows = build_data()
    labels = [r["label"] for r in rows]
    tr, te = train_test_split(np.arange(len(rows)), test_size=0.2, stratify=labels, random_state=SEED)
    train_rows, test_rows = [rows[i] for i in tr], [rows[i] for i in te]
    write_jsonl(os.path.join(OUT, "train.jsonl"), train_rows)
    write_jsonl(os.path.join(OUT, "test.jsonl"), test_rows)
    # The class-forgetting split of the training set, for `semu sweep` / `semu eval`.
    write_jsonl(os.path.join(OUT, f"forget_class{FORGET_CLASS}.jsonl"), [r for r in train_rows if r["label"] == FORGET_CLASS])
    write_jsonl(os.path.join(OUT, f"retain_class{FORGET_CLASS}.jsonl"), [r for r in train_rows if r["label"] != FORGET_CLASS])
    with open(os.path.join(OUT, "test_head.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["text", "label"])
        for r in test_rows[:8]:
            w.writerow([r["text"], r["label"]])

    xtr, ytr = [r["text"] for r in train_rows], [r["label"] for r in train_rows]
    xte, yte = [r["text"] for r in test_rows], [r["label"] for r in test_rows]
    tok = train_tokenizer(xtr)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    ref_shape = tokenizer_reference(xte)

    model = train(tok, xtr, ytr, vocab)
    model.config.architectures = ["BertForSequenceClassification"]
    model.config.to_json_file(os.path.join(OUT, "config.json"))
    export(model, os.path.join(OUT, "model.onnx"))
    export(model, os.path.join(OUT, "model_fixed.onnx"), fixed=True)
    diff, diff_fixed = check_export(model, tok, xte)
    acc, per = ort_accuracy(os.path.join(OUT, "model.onnx"), tok, xte, yte)

    keep = [i for i, y in enumerate(ytr) if y != FORGET_CLASS]
    retrained = train(tok, [xtr[i] for i in keep], [ytr[i] for i in keep], vocab)
    retrain_path = os.path.join(OUT, f"retrain_class{FORGET_CLASS}.onnx")
    export(retrained, retrain_path)
    racc, rper = ort_accuracy(retrain_path, tok, xte, yte)
    others = [i for i, y in enumerate(yte) if y != FORGET_CLASS]
    racc_others, _ = ort_accuracy(retrain_path, tok, [xte[i] for i in others], [yte[i] for i in others])

    count = lambda ys: {LICENCES[c]: int(sum(1 for y in ys if y == c)) for c in range(len(LICENCES))}
    meta = {
        "source": "/usr/share/common-licenses (Debian base-files): sentence-like chunks of 6-40 words",
        "classes": len(LICENCES), "licences": LICENCES,
        "forget_class": FORGET_CLASS, "forget_licence": LICENCES[FORGET_CLASS],
        "train_count": len(train_rows), "test_count": len(test_rows),
        "train_per_class": count(ytr), "test_per_class": count(yte),
        "vocab_size": vocab, "max_length": MAX_LEN, "epochs": EPOCHS, "seed": SEED,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": {"test_accuracy": acc, "test_accuracy_per_class": per},
        f"retrain_class{FORGET_CLASS}": {"test_accuracy": racc, "test_accuracy_per_class": rper,
                                         "test_accuracy_without_forget_class": racc_others},
        "torch_vs_ort_max_abs_diff": diff, "torch_vs_ort_max_abs_diff_fixed": diff_fixed,
        "fixed_shape": [FIXED_BATCH, FIXED_SEQ],
        "tokenized_ref_shape": list(ref_shape),
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"text classifier: vocab {vocab}, params {meta['parameters']}, train {len(xtr)}, test {len(xte)}")
    print(f"  model.onnx test acc {acc:.4f} per class {per}")
    print(f"  retrain_class{FORGET_CLASS}.onnx test acc {racc:.4f} (without class {FORGET_CLASS}: "
          f"{racc_others:.4f}) per class {rper}")
    print(f"  torch vs ORT max abs diff {diff:.2e} (fixed-shape export {diff_fixed:.2e})")
    for name in sorted(os.listdir(OUT)):
        print(f"  {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    sys.exit(main())
