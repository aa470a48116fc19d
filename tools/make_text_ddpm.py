"""Trains the text-conditioned diffusion fixture the way users build one: a tiny diffusers
`UNet2DConditionModel` reading a tiny transformers `CLIPTextModel` through cross-attention, on
scikit-learn's digits (the split, schedule, sampler and judge of tools/make_ddpm.py), exported as
diffusers' ONNX conversion does, and that UNet run through onnxruntime's transformer optimizer.

Output (committed; regenerate with `make fixtures FORCE=1`):
  fixtures/text_ddpm/unet.onnx       ε_θ(sample, timestep, encoder_hidden_states), EMA weights,
                                     opset 17, dynamic batch; inputs sample f32[b,1,8,8] in [-1,1],
                                     timestep **f32[b]** (0..T-1; float, as diffusers'
                                     convert_stable_diffusion_checkpoint_to_onnx.py exports it),
                                     encoder_hidden_states f32[b,L,32]; output out_sample (ε)
  fixtures/text_ddpm/text_encoder.onnx  CLIPTextModel, input_ids i64[b,L] → last_hidden_state
                                     f32[b,L,32] (pooler_output dropped; the UNet reads the states)
  fixtures/text_ddpm/tokenizer.json  WordLevel over the prompt words, CLIP's specials: every
                                     prompt → <|startoftext|> words <|endoftext|>, padded with
                                     <|endoftext|> to L = 16 (as SD pads to 77)
  fixtures/text_ddpm/unet_optimized.onnx  unet.onnx through onnxruntime.transformers.optimizer
                                     (model_type "unet"); its op counts are in meta.json
  fixtures/text_ddpm/ref/*           fixed inputs and onnxruntime's outputs on them, for engine
                                     parity; prompts.json = the prompts and their ids
  fixtures/text_ddpm/meta.json       what this run measured (times, parity, judge rates per prompt)

Metadata of unet.onnx (`semu.diffusion.*`, as fixtures/ddpm/model.onnx without the class keys):
  prediction eps, schedule linear, beta_start 1e-4, beta_end 0.02, timesteps 1000,
  data_range -1,1, input.x sample, input.t timestep, and for prompt conditioning:
  input.context = encoder_hidden_states   the graph input the text encoder's states feed
  text_encoder  = text_encoder.onnx       path relative to the UNet's folder
  text_encoder.input  = input_ids, text_encoder.output = last_hidden_state
  tokenizer     = tokenizer.json          path relative to the UNet's folder (pads to L itself)
  context_length = 16                     L, the token count the UNet was trained on
  null_prompt   = ""                      the unconditional prompt of classifier-free guidance

The text encoder is random-init and frozen: Stable Diffusion trains its UNet on a frozen CLIP, and
SEMU adapts only UNet weights (§2.3), so the fixture keeps that split; frozen, the 11 prompts'
states are computed once and training costs what the UNet costs.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_ddpm as ddpm  # noqa: E402  (schedule, constants, DDIM sampler, Fréchet distance)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "text_ddpm")
JUDGE = os.path.join(HERE, "..", "fixtures", "ddpm", "judge.onnx")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROMPTS = [f"a handwritten {w}" for w in WORDS] + [""]  # index 10 = the null prompt (ddpm.NULL)
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
CTX_LEN, HIDDEN = 16, 32
STEPS = int(os.environ.get("TEXT_DDPM_STEPS", 1500))
BATCH = ddpm.BATCH
FILES = ["unet.onnx", "text_encoder.onnx", "tokenizer.json", "unet_optimized.onnx", "ref/out_sample.npy",
         "ref/last_hidden_state.npy", "ref/prompts.json"]


def make_tokenizer():
    """CLIP-like WordLevel tokenizer: lowercased, whitespace-split, BOS/EOS around the words and
    EOS as padding to CTX_LEN (CLIP's pad token in SD 1.x)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {s: i for i, s in enumerate(SPECIALS + ["a", "handwritten"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = SPECIALS[0], SPECIALS[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    tok.add_special_tokens(SPECIALS)
    tok.enable_truncation(max_length=CTX_LEN)
    tok.enable_padding(pad_id=vocab[eos], pad_token=eos, length=CTX_LEN)
    return tok


def make_text_encoder(vocab_size):
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CTX_LEN,
                         projection_dim=HIDDEN, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg).eval()


def make_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=HIDDEN,
        attention_head_dim=8, norm_num_groups=8)


class TextEncoderOut(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, input_ids):
        return self.enc(input_ids=input_ids).last_hidden_state


class UNetOut(nn.Module):
    """The UNet returning its tensor (diffusers' export passes return_dict=False)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def train_unet(x, y, ctx):
    """make_ddpm.train_ddpm's recipe (Adam 1e-3 one-cycle, batch 128, antithetic t, clip 1, EMA
    0.995, p_uncond 0.1 → the empty prompt) with the prompt's states for the class."""
    torch.manual_seed(0)
    model, ema = make_unet(), make_unet()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    abar = torch.tensor(ddpm.schedule(), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=STEPS)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(STEPS):
        idx = torch.randint(0, len(xs), (BATCH,))
        x0, c = xs[idx], ys[idx].clone()
        c[torch.rand(BATCH) < ddpm.P_UNCOND] = ddpm.NULL
        t = torch.randint(0, ddpm.T, (BATCH // 2,))
        t = torch.cat([t, ddpm.T - 1 - t])
        e = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        pred = model(a.sqrt() * x0 + (1 - a).sqrt() * e, t.float(), ctx[c]).sample
        loss = ((e - pred) ** 2).sum((1, 2, 3)).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(ddpm.EMA).add_(pm, alpha=1 - ddpm.EMA)
        if step % 250 == 0 or step == STEPS - 1:
            print(f"  step {step:5d} loss {loss.item():.3f}", flush=True)
    return ema.eval()


def atomic_export(module, args, path, **kw):
    tmp = path + ".tmp"
    torch.onnx.export(module, args, tmp, opset_version=17, do_constant_folding=True, dynamo=False, **kw)
    return tmp


UNET_PROPS = {
    "semu.diffusion.prediction": "eps", "semu.diffusion.schedule": "linear",
    "semu.diffusion.beta_start": "1e-4", "semu.diffusion.beta_end": "0.02",
    "semu.diffusion.timesteps": str(ddpm.T), "semu.diffusion.data_range": "-1,1",
    "semu.diffusion.input.x": "sample", "semu.diffusion.input.t": "timestep",
    "semu.diffusion.input.context": "encoder_hidden_states",
    "semu.diffusion.text_encoder": "text_encoder.onnx",
    "semu.diffusion.text_encoder.input": "input_ids",
    "semu.diffusion.text_encoder.output": "last_hidden_state",
    "semu.diffusion.tokenizer": "tokenizer.json",
    "semu.diffusion.context_length": str(CTX_LEN),
    "semu.diffusion.null_prompt": "",
}


def export_unet(unet, path):
    import onnx
    args = (torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, CTX_LEN, HIDDEN))
    tmp = atomic_export(UNetOut(unet), args, path,
                        input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
                        dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"},
                                      "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch"}})
    m = onnx.load(tmp)
    onnx.helper.set_model_props(m, UNET_PROPS)
    onnx.save(m, tmp)
    os.replace(tmp, path)


def export_text_encoder(enc, path):
    args = (torch.zeros(2, CTX_LEN, dtype=torch.int64),)
    tmp = atomic_export(TextEncoderOut(enc), args, path, input_names=["input_ids"],
                        output_names=["last_hidden_state"],
                        dynamic_axes={"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}})
    os.replace(tmp, path)


def patch_num_heads():
    """onnxruntime 1.31's FusionAttentionUnet.get_num_heads calls int() on a shape-[1] array,
    which numpy ≥ 2.4 refuses (TypeError: only 0-dimensional arrays…), so the unet optimizer dies
    on every PyTorch-2 export; read the element instead, the rest of the method unchanged."""
    import onnxruntime.transformers.optimizer  # noqa: F401  (imports the fusion modules)
    # onnxruntime's transformers folder is on sys.path, so the class may be loaded twice, under
    # "fusion_attention_unet" and "onnxruntime.transformers.fusion_attention_unet".
    classes = {m.FusionAttentionUnet for n, m in list(sys.modules.items())
               if n.endswith("fusion_attention_unet") and hasattr(m, "FusionAttentionUnet")}
    orig = next(iter(classes)).get_num_heads

    def get_num_heads(self, reshape_q, is_torch2=False):
        if not is_torch2:
            return orig(self, reshape_q, is_torch2)
        parent = self.model.get_parent(reshape_q, 1)
        if parent is not None and parent.op_type == "Concat" and len(parent.input) == 4:
            v = self.model.get_constant_value(parent.input[2])
            if isinstance(v, np.ndarray) and v.size == 1 and int(v.item()) > 0:
                return int(v.item())
        return 0

    for c in classes:
        c.get_num_heads = get_num_heads


def optimize_unet(src, dst):
    """onnxruntime's optimizer as its Stable Diffusion scripts call it for a UNet (fp32, the
    unet fusion defaults: GroupNorm, SkipGroupNorm, NhwcConv, BiasSplitGelu, packed QKV/KV
    MultiHeadAttention, BiasAdd); returns the op counts of what it wrote."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    patch_num_heads()
    m = optimize_model(src, model_type="unet", num_heads=0, hidden_size=0, opt_level=0,
                       optimization_options=FusionOptions("unet"), use_gpu=True, only_onnxruntime=False)
    tmp = dst + ".tmp"
    m.save_model_to_file(tmp)
    os.replace(tmp, dst)
    return op_counts(onnx.load(dst))


def op_counts(m):
    ops = {}
    for n in m.graph.node:
        k = (n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type
        ops[k] = ops.get(k, 0) + 1
    return dict(sorted(ops.items()))


class TextEps:
    """make_ddpm's sampler speaks to a session with inputs x_t, t, y (y = NULL for the
    unconditional pass); this maps y to the prompt's states and t to float for the UNet."""

    def __init__(self, sess, ctx):
        self.sess, self.ctx = sess, ctx

    def run(self, _, feeds):
        return self.sess.run(None, {"sample": feeds["x_t"], "timestep": feeds["t"].astype(np.float32),
                                    "encoder_hidden_states": self.ctx[feeds["y"]]})


def judged(unet_path, ctx, x_te, y_te):
    """make_ddpm.judged for prompts: 100 DDIM samples per prompt (numpy seed 0, w = 2), judged by
    fixtures/ddpm/judge.onnx; per-prompt rates, FD vs the real test images, FD-other for class 3."""
    import onnxruntime as ort
    sess = TextEps(ort.InferenceSession(unet_path, providers=["CPUExecutionProvider"]), ctx)
    t0 = time.time()
    labels = np.repeat(np.arange(ddpm.NUM_CLASSES, dtype=np.int64), ddpm.PER_CLASS)
    imgs = (ddpm.ddim_sample(sess, labels, seed=0) + 1) / 2
    seconds = round(time.time() - t0, 1)
    jsess = ort.InferenceSession(JUDGE, providers=["CPUExecutionProvider"])
    pred, fs = jsess.run(None, {"input": imgs})
    pred = pred.argmax(1)
    fr = jsess.run(None, {"input": x_te})[1]
    c = ddpm.RETRAIN_CLASS
    return seconds, {
        "prompt_rate_judge": {PROMPTS[k]: round(float((pred[labels == k] == k).mean()), 3)
                              for k in range(ddpm.NUM_CLASSES)},
        "mean_prompt_rate": round(float((pred == labels).mean()), 3),
        "fd_all_classes": round(ddpm.frechet(fs, fr), 2),
        "fd_other_class3": round(ddpm.frechet(fs[labels != c], fr[y_te != c]), 2),
        "class3_judged_as": np.bincount(pred[labels == c], minlength=ddpm.NUM_CLASSES).tolist(),
    }


def write_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main():
    force = os.environ.get("FORCE") == "1"
    meta_path = os.path.join(OUT, "meta.json")
    outputs = [meta_path] + [os.path.join(OUT, f) for f in FILES]
    if not force and all(os.path.exists(p) for p in outputs):
        print("fixtures/text_ddpm: present (FORCE=1 regenerates)")
        return 0
    if not os.path.exists(JUDGE):
        print(f"{JUDGE} is missing: run tools/make_ddpm.py first", file=sys.stderr)
        return 1
    import onnx
    import onnxruntime as ort
    os.makedirs(os.path.join(OUT, "ref"), exist_ok=True)
    torch.set_num_threads(int(os.environ.get("DDPM_THREADS", 1)))
    start = time.time()
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)

    tok = make_tokenizer()
    tok_path = os.path.join(OUT, "tokenizer.json")
    tok.save(tok_path + ".tmp")
    os.replace(tok_path + ".tmp", tok_path)
    checks = PROMPTS + ["A Handwritten  THREE", "a handwritten cat", "a handwritten three " + "three " * 20]
    ids = np.array([e.ids for e in tok.encode_batch(checks)], dtype=np.int64)
    write_json({"prompts": checks, "ids": ids.tolist()}, os.path.join(OUT, "ref", "prompts.json"))

    enc = make_text_encoder(tok.get_vocab_size())
    with torch.no_grad():
        ctx = enc(input_ids=torch.from_numpy(ids[: len(PROMPTS)])).last_hidden_state  # [11, L, 32]
    enc_path = os.path.join(OUT, "text_encoder.onnx")
    export_text_encoder(enc, enc_path)
    esess = ort.InferenceSession(enc_path, providers=["CPUExecutionProvider"])
    ctx_ort = esess.run(None, {"input_ids": ids})[0]
    meta = {"steps": STEPS, "batch": BATCH, "threads": torch.get_num_threads(),
            "text_encoder_params": sum(p.numel() for p in enc.parameters()),
            "text_encoder_ort_vs_torch_max_abs": float(np.abs(ctx_ort[: len(PROMPTS)] - ctx.numpy()).max())}
    np.save(os.path.join(OUT, "ref", "input_ids.npy"), ids)
    np.save(os.path.join(OUT, "ref", "last_hidden_state.npy"), ctx_ort)

    t0 = time.time()
    unet = train_unet(2 * x[tr] - 1, y[tr], ctx)
    meta["train_seconds"] = round(time.time() - t0, 1)
    meta["unet_params"] = sum(p.numel() for p in unet.parameters())
    print(f"unet: {meta['unet_params']} parameters, {STEPS} steps in {meta['train_seconds']} s", flush=True)
    path = os.path.join(OUT, "unet.onnx")
    export_unet(unet, path)
    m = onnx.load(path)
    got = {p.key: p.value for p in m.metadata_props}
    assert all(got.get(k) == v for k, v in UNET_PROPS.items()), f"metadata did not round-trip: {got}"
    meta["unet_ops"] = op_counts(m)

    # Fixed inputs (rows 1 and 3 differ only in the prompt: "three" vs the null prompt) and
    # onnxruntime's outputs on them, for engine parity.
    rng = np.random.default_rng(1)
    rx = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    rx[3] = rx[1]
    rt = np.array([0, 500, 10, 500, 400, 700, 998, 999], np.float32)
    rc = ctx_ort[np.array([0, 3, 5, ddpm.NULL, 9, 3, ddpm.NULL, 1])]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"sample": rx, "timestep": rt, "encoder_hidden_states": rc})[0]
    with torch.no_grad():
        ref = unet(torch.from_numpy(rx), torch.from_numpy(rt), torch.from_numpy(rc)).sample.numpy()
    meta["unet_ort_vs_torch_max_abs"] = float(np.abs(out - ref).max())
    meta["eps_abs_max"] = float(np.abs(ref).max())
    print(f"unet: onnxruntime vs torch max abs {meta['unet_ort_vs_torch_max_abs']:.2e}", flush=True)
    assert meta["unet_ort_vs_torch_max_abs"] < 1e-4, "the exported UNet disagrees with torch"
    for name, arr in (("sample", rx), ("timestep", rt), ("encoder_hidden_states", rc), ("out_sample", out)):
        np.save(os.path.join(OUT, "ref", name + ".npy"), arr)

    opt_path = os.path.join(OUT, "unet_optimized.onnx")
    meta["unet_optimized_ops"] = optimize_unet(path, opt_path)
    print(f"optimizer: {meta['unet_optimized_ops']}", flush=True)
    try:  # onnxruntime's CPU provider lacks some of the fused kernels (GroupNorm, NhwcConv…)
        osess = ort.InferenceSession(opt_path, providers=["CPUExecutionProvider"])
        oout = osess.run(None, {"sample": rx, "timestep": rt, "encoder_hidden_states": rc})[0]
        meta["unet_optimized_ort_cpu_vs_unet_max_abs"] = float(np.abs(oout - out).max())
        np.save(os.path.join(OUT, "ref", "out_sample_optimized.npy"), oout)
    except Exception as e:  # noqa: BLE001  (recorded, not fatal: the engine is compared with unet.onnx's output)
        meta["unet_optimized_ort_cpu"] = str(e).splitlines()[0][:300]
    print({k: v for k, v in meta.items() if k.startswith("unet_optimized_ort")}, flush=True)

    meta["sample_seconds"], rates = judged(path, ctx_ort, x[te], y[te])
    meta.update(rates)
    meta["sampler"] = {"ddim_steps": ddpm.DDIM_STEPS, "eta": 0.0, "w": ddpm.GUIDANCE,
                       "per_prompt": ddpm.PER_CLASS, "seed": 0}
    print(f"samples ({meta['sample_seconds']} s), per-prompt rate by judge.onnx: {rates['prompt_rate_judge']}, "
          f"mean {rates['mean_prompt_rate']}; FD {rates['fd_all_classes']}, other than 3 {rates['fd_other_class3']}")
    meta["total_seconds"] = round(time.time() - start, 1)
    write_json(meta, meta_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
