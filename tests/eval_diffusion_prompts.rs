//! `semu eval --task diffusion` on prompt-conditioned models (class k = `--class-prompt` k, in
//! the judge's order) and on a latent model (the judge sees the VAE decoder's images): a prompt
//! forgotten through the VAE scores low beside the original, and the flags that do not fit are
//! refused by name. Before, eval refused every prompt-conditioned model.
use semu::data::npy::read_npz;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::Tensor;

const WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

fn fx(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures`", p.display());
    p.display().to_string()
}

/// The binary on one libtorch thread (its default pool spins against other jobs on a 2-core box).
fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).env("OMP_NUM_THREADS", "1").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn prompts() -> Vec<String> {
    WORDS.iter().map(|w| format!("a handwritten {w}")).collect()
}

/// `semu eval` of `model` (and `original`) with every class prompt, forgetting "a handwritten three".
fn eval(model: &str, original: Option<&str>, n: usize, dir: &Path) -> (Output, Option<serde_json::Value>) {
    let (json, report) = (dir.join("eval.json"), dir.join("report"));
    let (judge, test, n) = (fx("ddpm/judge.onnx"), fx("ddpm/test.npz"), n.to_string());
    let mut args = vec!["eval", "--task", "diffusion", "--model", model, "--judge", &judge, "--test", &test];
    args.extend(["--forget-prompt", "a handwritten three", "--n", &n, "--device", "cpu"]);
    let ps = prompts();
    for p in &ps {
        args.extend(["--class-prompt", p.as_str()]);
    }
    if let Some(o) = original {
        args.extend(["--original", o]);
    }
    let (j, r) = (json.display().to_string(), report.display().to_string());
    args.extend(["--json", &j, "--report-dir", &r]);
    let o = semu(&args);
    let v = o.status.success().then(|| serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap());
    (o, v)
}

#[test]
fn a_text_models_classes_are_its_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let (o, r) = eval(&fx("text_ddpm/unet.onnx"), None, 10, dir.path());
    let r = r.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(r["forget_class"], 3);
    assert_eq!(r["class_prompts"].as_array().unwrap().len(), 10);
    assert_eq!(r["class_prompts"][3], "a handwritten three");
    // The fixture draws each prompt's digit (meta.json: 0.997 of 1000 judged right).
    let m = &r["model"];
    assert!(m["forget_rate"].as_f64().unwrap() >= 0.8, "{m}");
    assert!(m["other_accuracy"].as_f64().unwrap() >= 0.9, "{m}");
    assert!(m["fd_other"].as_f64().unwrap() < 60.0, "{m}");
    assert!(text(&o).contains("3 \"a handwritten three\""), "{}", text(&o));
}

#[test]
fn a_prompt_forgotten_through_the_vae_scores_low_beside_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let unet = fx("latent_ddpm/unet.onnx");
    let out: PathBuf = dir.path().join("u.onnx");
    // The digits training set's threes (8×8 pixels) go through the VAE encoder.
    let (train, u) = (fx("digits/train.npz"), out.display().to_string());
    let mut args = vec!["unlearn", "--model", &unet, "--train", &train, "--forget-class", "3"];
    args.extend(["--forget-prompt", "a handwritten three"]);
    args.extend(["--iterations", "80", "--target-prompt", "a handwritten four", "--device", "cpu", "--out", &u]);
    let ps = prompts();
    for p in ps.iter().filter(|p| !p.ends_with("three") && !p.ends_with("four")) {
        args.extend(["--keep-prompt", p.as_str()]);
    }
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));

    // The export, in another folder, finds the fixture's text encoder, tokenizer and VAE: unlearn
    // rewrote their metadata names to paths from its folder.
    let (o, r) = eval(&u, Some(&unet), 20, dir.path());
    let r = r.unwrap_or_else(|| panic!("{}", text(&o)));
    let (m, orig) = (&r["model"], &r["original"]);
    eprintln!("{}", text(&o));
    assert!(orig["forget_rate"].as_f64().unwrap() >= 0.8, "{orig}");
    assert!(m["forget_rate"].as_f64().unwrap() <= 0.3, "{m}");
    assert!(m["other_accuracy"].as_f64().unwrap() >= 0.8, "{m}");
    assert!(m["fd_other"].as_f64().is_some(), "{m}");
    // The report's samples are the decoded images (8×8 in [0, 1]) with the sampled latents.
    let s: HashMap<String, Tensor> =
        read_npz(&dir.path().join("report/samples_model.npz")).unwrap().into_iter().collect();
    assert_eq!(s["x"].size(), [200, 1, 8, 8]);
    assert_eq!(s["latents"].size(), [200, 4, 4, 4]);
    let (lo, hi) = (s["x"].min().double_value(&[]), s["x"].max().double_value(&[]));
    assert!(lo >= 0.0 && hi <= 1.0, "[{lo}, {hi}]");
}

#[test]
fn flags_that_do_not_fit_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (judge, unet) = (fx("ddpm/judge.onnx"), fx("text_ddpm/unet.onnx"));
    let base = ["eval", "--task", "diffusion", "--judge", &judge, "--device", "cpu"];
    // A text model without its class prompts.
    let o = semu(&[&base[..], &["--model", &unet, "--forget-class", "3"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--class-prompt"), "{}", text(&o));
    // A forget prompt that is none of the class prompts.
    let (o, _) = {
        let mut a = base.to_vec();
        a.extend(["--model", &unet, "--forget-prompt", "a handwritten cat", "--class-prompt", "a handwritten three"]);
        (semu(&a), ())
    };
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("none of the --class-prompt"), "{}", text(&o));
    // Fewer prompts than the judge has classes.
    let two = ["--class-prompt", "a handwritten two", "--class-prompt", "a handwritten three"];
    let o = semu(&[&base[..], &["--model", &unet, "--forget-prompt", "a handwritten three"], &two[..]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("2 --class-prompt given: give one per class of the judge"), "{}", text(&o));
    // Class prompts for a class-conditional model.
    let ddpm = fx("ddpm/model.onnx");
    let o = semu(&[&base[..], &["--model", &ddpm, "--forget-class", "3", "--class-prompt", "a three"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("conditioned on classes"), "{}", text(&o));
    assert!(!dir.path().join("eval.json").exists());
}
