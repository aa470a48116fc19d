//! The latent diffusion fixture (tools/make_latent_ddpm.py): a diffusers AutoencoderKL and a
//! text-conditioned UNet on its latents. The engine's VAE encode/decode equal PyTorch's; a prompt
//! is forgotten from pixel-space images taken through the encoder, judged on decoded samples; a
//! latent model without its encoder is told to give `--vae-encoder`.
mod common;

use semu::data::npy::{read_npy, read_npz};
use semu::diffusion::{LatentSettings, Vae};
use semu::engine::{Plan, Registry, Value};
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_latent_ddpm.py)", p.display());
    p
}

/// The binary on one libtorch thread: on this shared 2-core box its default pool spins against
/// the other jobs (25 unlearning steps: 37 s at load 5, 2.5 s on one thread).
fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).env("OMP_NUM_THREADS", "1").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn vae() -> Vae {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx("latent_ddpm/meta.json")).unwrap()).unwrap();
    let l = LatentSettings {
        encoder: Some(fx("latent_ddpm/vae_encoder.onnx")),
        decoder: Some(fx("latent_ddpm/vae_decoder.onnx")),
        scale: meta["latent_scale"].as_f64().unwrap(),
    };
    Vae::load(&l, None, Device::Cpu).unwrap()
}

#[test]
fn the_vae_encodes_and_decodes_as_pytorch() {
    let v = vae();
    let z = v.encode(&read_npy(&fx("latent_ddpm/ref/vae_images.npy")).unwrap()).unwrap();
    let want = read_npy(&fx("latent_ddpm/ref/vae_latents.npy")).unwrap();
    assert!(max_abs(&z, &want) <= 1e-4, "encode: max abs {} from PyTorch's mean × scale", max_abs(&z, &want));
    let d = v.decode(&want).unwrap();
    let want = read_npy(&fx("latent_ddpm/ref/vae_decoded.npy")).unwrap();
    assert!(max_abs(&d, &want) <= 1e-4, "decode: max abs {} from PyTorch's", max_abs(&d, &want));
    // Latents given to the encoder are refused naming the file and the shapes.
    let e = v.encode(&want.zeros_like().narrow(2, 0, 4).narrow(3, 0, 4).repeat([1, 4, 1, 1])).unwrap_err().to_string();
    assert!(e.contains("vae_encoder.onnx") && e.contains("N×1×H×W") && e.contains("[16, 4, 4, 4]"), "{e}");
}

/// The judge's label for each image of `npz`'s `x` (in [0, 1]).
fn judged(npz: &Path) -> Vec<i64> {
    let arrays: HashMap<String, Tensor> = read_npz(npz).unwrap().into_iter().collect();
    assert_eq!(arrays["latents"].size()[1..], [4, 4, 4], "the sampled latents are kept beside the images");
    let judge = OnnxModel::load(fx("ddpm/judge.onnx")).unwrap();
    let plan = Plan::new(&judge, &Registry::standard(), &Default::default()).unwrap();
    let feeds = HashMap::from([("input".to_string(), Value::Tensor(arrays["x"].shallow_clone()))]);
    let logits = plan.run_values(&feeds).unwrap().swap_remove(0);
    Vec::<i64>::try_from(logits.as_tensor().unwrap().argmax(1, false)).unwrap()
}

/// `n` decoded samples each of "a handwritten three" and "… seven"; the share judged 3 among
/// the first and 7 among the second.
fn rates(model: &Path, out: &Path, n: usize) -> (f64, f64) {
    let n_s = n.to_string();
    let o = semu(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--vae-decoder",
        fx("latent_ddpm/vae_decoder.onnx").to_str().unwrap(),
        "--text-encoder",
        fx("latent_ddpm/text_encoder.onnx").to_str().unwrap(),
        "--tokenizer",
        fx("latent_ddpm/tokenizer.json").to_str().unwrap(),
        "--prompt",
        "a handwritten three",
        "--prompt",
        "a handwritten seven",
        "--n",
        &n_s,
        "--steps",
        "10",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let p = judged(out);
    let share = |c: i64, rows: &[i64]| rows.iter().filter(|&&r| r == c).count() as f64 / rows.len() as f64;
    (share(3, &p[..n]), share(7, &p[n..]))
}

#[test]
fn a_prompt_is_forgotten_from_pixel_images_through_the_vae() {
    let dir = tempfile::tempdir().unwrap();
    // Real threes (8×8 pixels in [0, 1]) from the DDPM fixture's test split.
    let test: HashMap<String, Tensor> = read_npz(&fx("ddpm/test.npz")).unwrap().into_iter().collect();
    let threes = test["y"].eq(3).nonzero().squeeze_dim(1);
    let x = test["x"].index_select(0, &threes).to_kind(Kind::Float).contiguous();
    let n = x.size()[0];
    let xs: Vec<u8> = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
    let ys: Vec<u8> = (0..n).flat_map(|_| 3i64.to_le_bytes()).collect();
    let forget = dir.path().join("threes.npz");
    common::npz(
        &forget,
        &[
            ("x.npy", common::npy("<f4", &format!("({n}, 1, 8, 8)"), &xs)),
            ("y.npy", common::npy("<i8", &format!("({n},)"), &ys)),
        ],
    );
    let unet = fx("latent_ddpm/unet.onnx");
    let (out, report) = (dir.path().join("u.onnx"), dir.path().join("r.json"));
    let mut args = vec![
        "unlearn",
        "--model",
        unet.to_str().unwrap(),
        "--forget",
        forget.to_str().unwrap(),
        "--forget-prompt",
        "a handwritten three",
        "--target-prompt",
        "a handwritten four",
        "--iterations",
        "80",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let keep: Vec<String> = ["zero", "one", "two", "five", "six", "seven", "eight", "nine"]
        .iter()
        .map(|w| format!("a handwritten {w}"))
        .collect();
    for k in &keep {
        args.extend(["--keep-prompt", k.as_str()]);
    }
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "the export did not pass the gate: {}", text(&o));

    let (three_before, seven_before) = rates(&unet, &dir.path().join("before.npz"), 24);
    let (three_after, seven_after) = rates(&out, &dir.path().join("after.npz"), 24);
    eprintln!("judged 3: {three_before:.2} → {three_after:.2}; judged 7: {seven_before:.2} → {seven_after:.2}");
    assert!(three_before >= 0.8, "the original draws threes for only {three_before:.2} of the samples");
    assert!(three_after <= 0.3, "after unlearning {three_after:.2} of 'a handwritten three' are still threes");
    assert!(seven_after >= 0.7, "the kept prompt 'a handwritten seven' fell to {seven_after:.2}");
}

#[test]
fn a_latent_model_without_its_encoder_is_told_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = OnnxModel::load(fx("latent_ddpm/unet.onnx")).unwrap();
    m.proto.metadata_props.retain(|p| p.key() != "semu.diffusion.vae_encoder");
    let bare = dir.path().join("unet.onnx");
    m.save(&bare, &HashMap::new()).unwrap();
    let (out, report) = (dir.path().join("u.onnx"), dir.path().join("r.json"));
    let o = semu(&[
        "unlearn",
        "--model",
        bare.to_str().unwrap(),
        "--forget",
        fx("ddpm/test.npz").to_str().unwrap(),
        "--forget-prompt",
        "a handwritten three",
        "--text-encoder",
        fx("latent_ddpm/text_encoder.onnx").to_str().unwrap(),
        "--tokenizer",
        fx("latent_ddpm/tokenizer.json").to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let e = text(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--vae-encoder") && e.contains("[1, 8, 8]") && e.contains("[4, 4, 4]"), "{e}");
    assert!(!out.exists());
    // Sampling a latent model without its decoder is refused by name, too.
    let o = semu(&[
        "sample",
        "--model",
        fx("latent_ddpm/unet.onnx").to_str().unwrap(),
        "--vae-decoder",
        dir.path().join("missing.onnx").to_str().unwrap(),
        "--prompt",
        "a handwritten one",
        "--n",
        "1",
        "--out",
        dir.path().join("s.npz").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing.onnx") && text(&o).contains("--vae-decoder"), "{}", text(&o));
}
