"""Makes a big GPT-2-style causal LM with random weights for memory checks of `semu unlearn`
(issue 14: peak RSS against weights + gradients + activations), exported the way
tools/make_text_lm.py exports the text-LM fixture (optimum's text-generation layout: input_ids,
attention_mask → logits, TorchScript exporter, opset 17) with its tokenizer, and written as
model.onnx + model.onnx.data (every tensor in one external-data file).

  python tools/make_big_lm.py --size 1g|4g --out DIR

  1g: n_embd 1024, 20 layers (≈ 255 M parameters, ≈ 1.0 GB)
  4g: n_embd 2048, 20 layers (≈ 1.01 B parameters, ≈ 4.0 GB)

Never committed (scratch folders only); see tools/measure_big_lm.sh. A > 2 GB export comes out of
torch as one file per tensor; those files are appended to model.onnx.data one at a time, so the
script holds the weights in torch once and never a second copy in onnx.
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_text_lm as lm  # noqa: E402

SIZES = {"1g": (1024, 20, 16), "4g": (2048, 20, 16)}
TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "text_lm", "tokenizer.json")


def gather(raw_dir, raw_name, out_dir):
    """Rewrites the export in raw_dir as out_dir/model.onnx with one model.onnx.data, streaming
    tensor by tensor (inline tensors are moved out too)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    m = onnx.load(os.path.join(raw_dir, raw_name), load_external_data=False)
    with open(os.path.join(out_dir, "model.onnx.data"), "wb") as data:
        for t in m.graph.initializer:
            if uses_external_data(t):
                info = ExternalDataInfo(t)
                with open(os.path.join(raw_dir, info.location), "rb") as f:
                    f.seek(info.offset or 0)
                    raw = f.read(info.length) if info.length else f.read()
                del t.external_data[:]
            else:
                raw = t.raw_data
                if not raw:
                    continue
            while data.tell() % 64:
                data.write(b"\0")
            off = data.tell()
            data.write(raw)
            t.ClearField("raw_data")
            for k, v in (("location", "model.onnx.data"), ("offset", str(off)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            t.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(m, os.path.join(out_dir, "model.onnx"))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n_embd, n_layer, n_head = SIZES[a.size]
    os.makedirs(a.out, exist_ok=True)
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel
    vocab = Tokenizer.from_file(TOKENIZER).get_vocab_size()
    cfg = lm.make_config(vocab)
    cfg.n_embd, cfg.n_layer, cfg.n_head = n_embd, n_layer, n_head
    torch.manual_seed(0)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="eager").eval()
    params = sum(p.numel() for p in model.parameters())
    raw = os.path.join(a.out, "raw")
    os.makedirs(raw, exist_ok=True)
    lm.export(model, os.path.join(raw, "model.onnx"))
    del model
    m = gather(raw, "model.onnx", a.out)
    shutil.rmtree(raw)
    shutil.copy(TOKENIZER, os.path.join(a.out, "tokenizer.json"))
    cfg.to_json_file(os.path.join(a.out, "config.json"))
    size = os.path.getsize(os.path.join(a.out, "model.onnx.data"))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump({"size": a.size, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "vocab": vocab,
                   "parameters_torch": params, "initializers": len(m.graph.initializer),
                   "external_data_bytes": size}, f, indent=1)
    print(f"{a.out}/model.onnx: {params} parameters in torch, {size / 2**30:.2f} GiB of external data", flush=True)


if __name__ == "__main__":
    main()
