"""Trains the latent diffusion fixture the way Stable Diffusion is built, at digit size: a tiny
diffusers `AutoencoderKL` (8×8 digits ↔ 4×4×4 latents) and a tiny text-conditioned
`UNet2DConditionModel` on its scaled latents, conditioned by the frozen text encoder and tokenizer
of fixtures/text_ddpm (tools/make_text_ddpm.py, reused by import), exported as diffusers' ONNX
conversion does (vae_encoder / vae_decoder / unet).

Sizes (the folder stays under 2 MB): VAE block_out_channels (16, 16), 56k parameters, KL weight
1e-4 (nearly deterministic; semu takes the mean anyway); UNet (24, 24), 247k parameters, 2 500
steps of make_text_ddpm's recipe: (16, 24) judged 0.80 mean per prompt, (24, 24) 0.995. CPU time
on one thread: 338 s (`time`'s user; the wall time in meta.json grows with the box's load).

Output (committed; regenerate with `make fixtures FORCE=1`):
  fixtures/latent_ddpm/vae_encoder.onnx  sample f32[b,1,8,8] in [-1,1] → latent_parameters
                                     f32[b,8,4,4] (the diagonal Gaussian's mean ‖ log-variance,
                                     as optimum exports it; semu takes the mean)
  fixtures/latent_ddpm/vae_decoder.onnx  latent_sample f32[b,4,4,4] (unscaled) → sample
                                     f32[b,1,8,8] in ≈[-1,1]
  fixtures/latent_ddpm/unet.onnx     ε_θ(sample f32[b,4,4,4] latents × latent_scale, timestep
                                     f32[b], encoder_hidden_states f32[b,16,32]) → out_sample
  fixtures/latent_ddpm/text_encoder.onnx, tokenizer.json  copied from fixtures/text_ddpm
  fixtures/latent_ddpm/ref/*         PyTorch's arrays for parity: vae_images (N×1×8×8 in [0,1]),
                                     vae_latents = mean(encoder(2x−1))·scale, vae_decoded =
                                     clamp(decoder(latents/scale), −1, 1)/2 + 1/2
  fixtures/latent_ddpm/meta.json     times, parity, the scale, judge rates per prompt of decoded
                                     samples (fixtures/ddpm/judge.onnx)

Metadata of unet.onnx: text_ddpm's keys, plus
  vae_encoder = vae_encoder.onnx, vae_decoder = vae_decoder.onnx   (relative to the UNet's folder)
  latent_scale = 1/std of the training latents (SD 1.x: 0.18215, computed the same way)
  data_range = -R,R   the latents' range (scaled); the sampler clamps its final latents to it
"""
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_ddpm as ddpm  # noqa: E402  (schedule, constants, DDIM sampler)
import make_text_ddpm as text  # noqa: E402  (UNet recipe, exports, prompt sampler adapter)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("LATENT_DDPM_OUT", os.path.join(HERE, "..", "fixtures", "latent_ddpm"))
TEXT = os.path.join(HERE, "..", "fixtures", "text_ddpm")
LATENT_CH, LATENT_HW = 4, 4
VAE_STEPS = int(os.environ.get("LATENT_VAE_STEPS", 2000))
UNET_STEPS = int(os.environ.get("LATENT_UNET_STEPS", 2500))
UNET_CHANNELS = tuple(int(c) for c in os.environ.get("LATENT_UNET_CHANNELS", "24,24").split(","))
KL_WEIGHT = 1e-4
FILES = ["vae_encoder.onnx", "vae_decoder.onnx", "unet.onnx", "text_encoder.onnx", "tokenizer.json",
         "ref/vae_images.npy", "ref/vae_latents.npy", "ref/vae_decoded.npy"]


def make_vae():
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=1, out_channels=1,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                         block_out_channels=(16, 16), layers_per_block=1, latent_channels=LATENT_CH,
                         norm_num_groups=8, sample_size=8)


def train_vae(x):
    """Reconstruction (Σ pixels squared error) + KL_WEIGHT·KL, Adam 1e-3 one-cycle, batch 128:
    a nearly deterministic autoencoder whose latents stay near N(0, I)'s scale."""
    torch.manual_seed(0)
    vae = make_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=VAE_STEPS)
    xs = torch.from_numpy(x)
    for step in range(VAE_STEPS):
        x0 = xs[torch.randint(0, len(xs), (ddpm.BATCH,))]
        dist = vae.encode(x0).latent_dist
        rec = vae.decode(dist.sample()).sample
        loss = ((rec - x0) ** 2).sum((1, 2, 3)).mean() + KL_WEIGHT * dist.kl().mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == VAE_STEPS - 1:
            print(f"  vae step {step:5d} loss {loss.item():.3f}", flush=True)
    return vae.eval()


def make_latent_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=LATENT_HW, in_channels=LATENT_CH, out_channels=LATENT_CH,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=UNET_CHANNELS, layers_per_block=1, cross_attention_dim=text.HIDDEN,
        attention_head_dim=8, norm_num_groups=8)


class Moments(nn.Module):
    """The encoder as optimum exports it: the distribution's parameters (mean ‖ log-variance)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        h = self.vae.encoder(sample)
        return self.vae.quant_conv(h) if self.vae.quant_conv is not None else h


class Decoder(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample).sample


def export(module, shape, path, inp, out):
    tmp = text.atomic_export(module, (torch.zeros(*shape),), path, input_names=[inp], output_names=[out],
                             dynamic_axes={inp: {0: "batch"}, out: {0: "batch"}})
    os.replace(tmp, path)


def export_unet(unet, path, props):
    import onnx
    args = (torch.zeros(2, LATENT_CH, LATENT_HW, LATENT_HW), torch.zeros(2), torch.zeros(2, text.CTX_LEN, text.HIDDEN))
    tmp = text.atomic_export(text.UNetOut(unet), args, path,
                             input_names=["sample", "timestep", "encoder_hidden_states"],
                             output_names=["out_sample"],
                             dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"},
                                           "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch"}})
    m = onnx.load(tmp)
    onnx.helper.set_model_props(m, props)
    onnx.save(m, tmp)
    os.replace(tmp, path)


def train_latent_unet(z, y, ctx):
    """make_text_ddpm.train_unet's recipe on the latents (its UNet builder and step count swapped
    for ours)."""
    orig = text.make_unet, text.STEPS
    text.make_unet, text.STEPS = make_latent_unet, UNET_STEPS
    try:
        return text.train_unet(z, y, ctx)
    finally:
        text.make_unet, text.STEPS = orig


def main():
    force = os.environ.get("FORCE") == "1"
    meta_path = os.path.join(OUT, "meta.json")
    outputs = [meta_path] + [os.path.join(OUT, f) for f in FILES]
    if not force and all(os.path.exists(p) for p in outputs):
        print("fixtures/latent_ddpm: present (FORCE=1 regenerates)")
        return 0
    for need in [text.JUDGE, os.path.join(TEXT, "text_encoder.onnx"), os.path.join(TEXT, "tokenizer.json")]:
        if not os.path.exists(need):
            print(f"{need} is missing: run tools/make_ddpm.py and tools/make_text_ddpm.py first", file=sys.stderr)
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

    # The frozen text encoder and tokenizer of the text fixture, beside the UNet.
    for f in ["text_encoder.onnx", "tokenizer.json"]:
        shutil.copyfile(os.path.join(TEXT, f), os.path.join(OUT, f + ".tmp"))
        os.replace(os.path.join(OUT, f + ".tmp"), os.path.join(OUT, f))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    ids = np.array([e.ids for e in tok.encode_batch(text.PROMPTS)], dtype=np.int64)
    esess = ort.InferenceSession(os.path.join(OUT, "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    ctx = esess.run(None, {"input_ids": ids})[0]  # [11, L, 32]

    meta = {"vae_steps": VAE_STEPS, "unet_steps": UNET_STEPS, "batch": ddpm.BATCH, "threads": torch.get_num_threads(),
            "kl_weight": KL_WEIGHT}
    t0 = time.time()
    vae = train_vae(2 * x[tr] - 1)
    meta["vae_train_seconds"] = round(time.time() - t0, 1)
    meta["vae_params"] = sum(p.numel() for p in vae.parameters())
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(2 * x - 1)).latent_dist.mean
        rec = vae.decode(mean).sample.clamp(-1, 1).numpy() / 2 + 0.5
    meta["vae_recon_mse_test"] = round(float(((rec[te] - x[te]) ** 2).mean()), 5)
    # SD's rule: the scale that gives the training latents unit variance, 4 significant digits.
    scale = float(f"{1.0 / mean[tr].std().item():.4g}")
    z = (mean * scale).numpy()
    bound = float(np.ceil(np.abs(z).max() * 1.5))
    meta["latent_scale"], meta["latent_range"] = scale, [-bound, bound]
    print(f"vae: {meta['vae_params']} parameters in {meta['vae_train_seconds']} s, test recon mse "
          f"{meta['vae_recon_mse_test']}, scale {scale}, latents within ±{np.abs(z).max():.2f}", flush=True)

    enc_path, dec_path = os.path.join(OUT, "vae_encoder.onnx"), os.path.join(OUT, "vae_decoder.onnx")
    export(Moments(vae), (2, 1, 8, 8), enc_path, "sample", "latent_parameters")
    export(Decoder(vae), (2, LATENT_CH, LATENT_HW, LATENT_HW), dec_path, "latent_sample", "sample")
    # PyTorch's encode/decode of test digits (the reference semu's Vae must reproduce).
    ref_x = x[te[:16]]
    with torch.no_grad():
        ref_z = (vae.encode(torch.from_numpy(2 * ref_x - 1)).latent_dist.mean * scale).numpy()
        ref_d = (vae.decode(torch.from_numpy(ref_z) / scale).sample.clamp(-1, 1) / 2 + 0.5).numpy()
    for name, arr in (("vae_images", ref_x), ("vae_latents", ref_z), ("vae_decoded", ref_d)):
        np.save(os.path.join(OUT, "ref", name + ".npy"), arr.astype(np.float32))
    es = ort.InferenceSession(enc_path, providers=["CPUExecutionProvider"])
    ds = ort.InferenceSession(dec_path, providers=["CPUExecutionProvider"])
    z_ort = es.run(None, {"sample": 2 * ref_x - 1})[0][:, :LATENT_CH] * scale
    d_ort = np.clip(ds.run(None, {"latent_sample": ref_z / scale})[0], -1, 1) / 2 + 0.5
    meta["vae_encoder_ort_vs_torch_max_abs"] = float(np.abs(z_ort - ref_z).max())
    meta["vae_decoder_ort_vs_torch_max_abs"] = float(np.abs(d_ort - ref_d).max())
    assert max(meta["vae_encoder_ort_vs_torch_max_abs"], meta["vae_decoder_ort_vs_torch_max_abs"]) < 1e-4

    t0 = time.time()
    unet = train_latent_unet(z[tr], y[tr], torch.from_numpy(ctx))
    meta["unet_train_seconds"] = round(time.time() - t0, 1)
    meta["unet_params"] = sum(p.numel() for p in unet.parameters())
    print(f"unet: {meta['unet_params']} parameters in {meta['unet_train_seconds']} s", flush=True)
    props = dict(text.UNET_PROPS)
    props.update({"semu.diffusion.data_range": f"{-bound:g},{bound:g}",
                  "semu.diffusion.vae_encoder": "vae_encoder.onnx",
                  "semu.diffusion.vae_decoder": "vae_decoder.onnx",
                  "semu.diffusion.latent_scale": f"{scale:g}"})
    path = os.path.join(OUT, "unet.onnx")
    export_unet(unet, path, props)
    got = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert all(got.get(k) == v for k, v in props.items()), f"metadata did not round-trip: {got}"

    # Decoded samples judged: make_ddpm's DDIM (25 steps, w 2, seed 0) on latents, the final
    # latents clamped to the range, decoded, mapped to [0, 1].
    sess = text.TextEps(ort.InferenceSession(path, providers=["CPUExecutionProvider"]), ctx)
    t0 = time.time()
    labels = np.repeat(np.arange(ddpm.NUM_CLASSES, dtype=np.int64), ddpm.PER_CLASS)
    xT = np.random.default_rng(0).standard_normal((len(labels), LATENT_CH, LATENT_HW, LATENT_HW)).astype(np.float32)
    zs = np.clip(ddpm.ddim_from(sess, xT, labels)[1][-1], -bound, bound)
    imgs = (np.clip(ds.run(None, {"latent_sample": zs / scale})[0], -1, 1) / 2 + 0.5).astype(np.float32)
    meta["sample_seconds"] = round(time.time() - t0, 1)
    jsess = ort.InferenceSession(text.JUDGE, providers=["CPUExecutionProvider"])
    pred = jsess.run(None, {"input": imgs})[0].argmax(1)
    meta["prompt_rate_judge"] = {text.PROMPTS[k]: round(float((pred[labels == k] == k).mean()), 3)
                                 for k in range(ddpm.NUM_CLASSES)}
    meta["mean_prompt_rate"] = round(float((pred == labels).mean()), 3)
    meta["sampler"] = {"ddim_steps": ddpm.DDIM_STEPS, "eta": 0.0, "w": ddpm.GUIDANCE,
                       "per_prompt": ddpm.PER_CLASS, "seed": 0}
    print(f"decoded samples ({meta['sample_seconds']} s), per-prompt rate by judge.onnx: "
          f"{meta['prompt_rate_judge']}, mean {meta['mean_prompt_rate']}", flush=True)
    meta["total_seconds"] = round(time.time() - start, 1)
    meta["cpu_seconds"] = round(time.process_time(), 1)  # the wall time above grows with the box's load
    meta["bytes"] = {f: os.path.getsize(os.path.join(OUT, f)) for f in FILES}
    text.write_json(meta, meta_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
