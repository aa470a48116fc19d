"""A Stable Diffusion 1.x-sized ε-network for measuring what semu needs at that scale (README
"Stable Diffusion 1.x scale", `make sd-scale`).

Usage: sd_scale.py OUT_DIR [--sizes 16,32,64]

Builds diffusers' `UNet2DConditionModel` with the Stable Diffusion 1.5 UNet config (random
weights, seed 0: the machine cannot download the real ones, and cost does not depend on the
values), and writes to OUT_DIR (a scratch folder: the export is 3.4 GB, never commit it):
  unet.onnx + unet.onnx.data  the UNet, opset 17, external data in one file, dynamic batch and
                              latent size; inputs sample f32[b,4,h,w], timestep f32[b],
                              encoder_hidden_states f32[b,77,768]; output out_sample
  text_encoder.onnx           a one-layer random CLIPTextModel of SD's width 768 (the UNet's
                              cross-attention reads 768-wide states; SD's real encoder has 12
                              layers, but it runs once per prompt and is never trained)
  tokenizer.json              fixtures/text_ddpm's tokenizer, padded to SD's 77 tokens
  forget_{S}.npz              2 records x f32[2,4,S,S] in [0,1] (random latents), y = 0, per size
  meta.json                   parameters, op counts, FLOPs per forward (torch.utils.flop_counter,
                              on the meta device: no weights touched), and this run's seconds

The UNet's `semu.diffusion.*` metadata is SD 1.x's: eps prediction, scaled_linear β 0.00085 →
0.012, T 1000, the empty null prompt, context length 77. It is not marked latent (no VAE, no
latent scale): without a decoder `semu sample` refuses a latent model, and the cost of a VAE is
outside what this measures (the UNet's gradient and training).
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "fixtures", "text_ddpm", "tokenizer.json")
CTX_LEN, HIDDEN = 77, 768

UNET_PROPS = {
    "semu.diffusion.prediction": "eps", "semu.diffusion.schedule": "scaled_linear",
    "semu.diffusion.beta_start": "0.00085", "semu.diffusion.beta_end": "0.012",
    "semu.diffusion.timesteps": "1000", "semu.diffusion.data_range": "-1,1",
    "semu.diffusion.input.x": "sample", "semu.diffusion.input.t": "timestep",
    "semu.diffusion.input.context": "encoder_hidden_states",
    "semu.diffusion.text_encoder": "text_encoder.onnx",
    "semu.diffusion.text_encoder.input": "input_ids",
    "semu.diffusion.text_encoder.output": "last_hidden_state",
    "semu.diffusion.tokenizer": "tokenizer.json",
    "semu.diffusion.context_length": str(CTX_LEN),
    "semu.diffusion.null_prompt": "",
}


def sd15_unet():
    """SD 1.5's unet/config.json, the fields that differ from diffusers' defaults spelled out."""
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=HIDDEN, attention_head_dim=8, norm_num_groups=32)


class UNetOut(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def flops(sizes):
    """FLOPs of one forward of one row (sample 1×4×S×S, context 1×77×768) per latent size, and
    of forward + backward to the weights, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        m = UNetOut(sd15_unet())
    out = {}
    for s in sizes:
        args = (torch.zeros(1, 4, s, s, device="meta"), torch.zeros(1, device="meta"),
                torch.zeros(1, CTX_LEN, HIDDEN, device="meta"))
        with FlopCounterMode(display=False) as fwd:
            m(*args)
        with FlopCounterMode(display=False) as both:
            m(*args).sum().backward()
        m.zero_grad(set_to_none=True)
        out[str(s)] = {"forward": fwd.get_total_flops(), "forward_backward": both.get_total_flops()}
    return out


def op_counts(graph):
    ops = {}
    for n in graph.node:
        k = (n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type
        ops[k] = ops.get(k, 0) + 1
    return dict(sorted(ops.items()))


def export_unet(unet, out):
    """torch's TorchScript exporter writes a > 2 GB model as one file per tensor; onnx then
    gathers them into unet.onnx.data beside the graph, with the metadata set."""
    import onnx
    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)
    args = (torch.randn(1, 4, 64, 64), torch.tensor([999.0]), torch.randn(1, CTX_LEN, HIDDEN))
    dyn = {"sample": {0: "batch", 2: "h", 3: "w"}, "timestep": {0: "batch"},
           "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch", 2: "h", 3: "w"}}
    with torch.no_grad():
        torch.onnx.export(UNetOut(unet), args, os.path.join(raw, "unet.onnx"), opset_version=17,
                          do_constant_folding=True, dynamo=False, input_names=list(dyn)[:3],
                          output_names=["out_sample"], dynamic_axes=dyn)
    m = onnx.load(os.path.join(raw, "unet.onnx"))
    onnx.helper.set_model_props(m, UNET_PROPS)
    onnx.save_model(m, os.path.join(out, "unet.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="unet.onnx.data", size_threshold=1024)
    shutil.rmtree(raw)
    return op_counts(m.graph), len(m.graph.initializer)


def export_text_encoder(vocab, out):
    from transformers import CLIPTextConfig, CLIPTextModel

    class Last(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, input_ids):
            return self.enc(input_ids=input_ids).last_hidden_state

    torch.manual_seed(1)
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=HIDDEN, num_hidden_layers=1,
                         num_attention_heads=12, max_position_embeddings=CTX_LEN, projection_dim=HIDDEN,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    enc = Last(CLIPTextModel(cfg).eval())
    with torch.no_grad():
        torch.onnx.export(enc, (torch.zeros(1, CTX_LEN, dtype=torch.int64),), os.path.join(out, "text_encoder.onnx"),
                          opset_version=17, dynamo=False, input_names=["input_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}})


def write_tokenizer(out):
    """The digits tokenizer with SD's context: truncated and padded to 77 tokens."""
    with open(TOKENIZER) as f:
        tok = json.load(f)
    tok["padding"]["strategy"] = {"Fixed": CTX_LEN}
    tok["truncation"]["max_length"] = CTX_LEN
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    return len(tok["model"]["vocab"]) + sum(1 for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"])


def phases(log, rss, name):
    """One line per measured command: wall and peak RSS (from /usr/bin/time -v), the peak of the
    sampled RSS within each phase semu logs (`INFO gradient (t+12.3s)`; the log's lines and the
    samples carry the same clock, sd_scale.sh's), and the report's `timings` when there is one."""
    import re
    lines = [ln.rstrip("\n").split(" ", 1) for ln in open(log)]
    text = "\n".join(ln[1] for ln in lines if len(ln) == 2)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    samples = [(float(t), int(k)) for t, k in (ln.split() for ln in open(rss) if len(ln.split()) == 2)]
    starts = [(samples[0][0] if samples else 0.0, "load")]
    for ln in lines:
        m = len(ln) == 2 and re.match(r"\s*INFO (\w[\w ]*?) \(t\+[\d.]+s\)$", ln[1])
        if m:
            starts.append((float(ln[0]), m.group(1)))
    per = []
    for i, (t, p) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else float("inf")
        kb = [k for s, k in samples if t <= s < end]
        if kb:
            per.append(f"{p} {max(kb) / 2**20:.1f}")
    timings = ""
    rep = log[:-4] + ".json"
    if os.path.exists(rep):
        timings = "; timings " + json.dumps({k: round(v, 1) for k, v in json.load(open(rep))["timings"].items()})
    print(f"{name}: wall {wall}, peak RSS {peak / 2**20:.2f} GiB"
          + (f"; peak per phase (GiB): {', '.join(per)}" if per else "") + timings, flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--phases":
        ap = argparse.ArgumentParser()
        ap.add_argument("--phases", nargs=2)
        ap.add_argument("--name")
        a = ap.parse_args()
        phases(*a.phases, a.name)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--sizes", default="16,32,64", help="latent sizes S of the forget npz files (64 = 512 px)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    meta, t0 = {"config": "Stable Diffusion 1.5 UNet2DConditionModel, random weights (seed 0)"}, time.time()
    meta["flops_per_row"] = flops(sizes)
    torch.manual_seed(0)
    unet = sd15_unet().eval()
    meta["parameters"] = sum(p.numel() for p in unet.parameters())
    meta["weight_bytes_fp32"] = 4 * meta["parameters"]
    print(f"unet: {meta['parameters']} parameters ({meta['weight_bytes_fp32'] / 2**30:.2f} GiB fp32)", flush=True)
    t = time.time()
    meta["ops"], meta["initializers"] = export_unet(unet, a.out)
    meta["export_seconds"] = round(time.time() - t, 1)
    print(f"unet.onnx: {sum(meta['ops'].values())} nodes in {meta['export_seconds']} s: {meta['ops']}", flush=True)
    del unet
    export_text_encoder(write_tokenizer(a.out), a.out)
    rng = np.random.default_rng(0)
    for s in sizes:
        x = rng.random((2, 4, s, s), dtype=np.float32)
        np.savez(os.path.join(a.out, f"forget_{s}.npz"), x=x, y=np.zeros(2, np.int64))
    meta["seconds"] = round(time.time() - t0, 1)
    for s, f in meta["flops_per_row"].items():
        print(f"flops per row, {s}x{s} latents: forward {f['forward'] / 1e9:.1f} G, "
              f"forward+backward {f['forward_backward'] / 1e9:.1f} G")
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
