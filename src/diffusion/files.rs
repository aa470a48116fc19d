//! The files a diffusion model's metadata names beside it (text encoder, tokenizer, VAE), kept
//! reachable from an export written to another folder.
use crate::onnx::proto::StringStringEntryProto;
use std::path::{Component, Path, PathBuf};

/// The `semu.diffusion.*` keys whose value is a file name, relative to the model's folder.
pub const FILE_KEYS: [&str; 4] = ["text_encoder", "tokenizer", "vae_encoder", "vae_decoder"];

/// Rewrites the file keys of a model read from folder `from` for a copy written to folder `to`:
/// a relative name becomes the path from `to` to the same file, so that `semu sample` and
/// `semu eval` on the export find what they found beside the input. Names of files that do not
/// exist, and a model written to its own folder, stay as they are. Returns the keys rewritten.
pub fn relocate(props: &mut [StringStringEntryProto], from: &Path, to: &Path) -> Vec<String> {
    let (Ok(from), Ok(to)) = (from.canonicalize(), to.canonicalize()) else { return Vec::new() };
    if from == to {
        return Vec::new();
    }
    let mut changed = Vec::new();
    for p in props.iter_mut() {
        let Some(key) = p.key().strip_prefix(super::schedule::PREFIX) else { continue };
        if !FILE_KEYS.contains(&key) || p.value().is_empty() || Path::new(p.value()).is_absolute() {
            continue;
        }
        let Ok(file) = from.join(p.value()).canonicalize() else { continue };
        if let Some(rel) = relative(&file, &to) {
            p.value = Some(rel.to_string_lossy().into_owned());
            changed.push(p.key().to_string());
        }
    }
    changed
}

/// The path from folder `base` to `file`, both absolute and canonical.
fn relative(file: &Path, base: &Path) -> Option<PathBuf> {
    let (f, b): (Vec<Component>, Vec<Component>) = (file.components().collect(), base.components().collect());
    let common = f.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let mut out: PathBuf = std::iter::repeat_n(Component::ParentDir, b.len() - common).collect();
    out.extend(&f[common..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: &str, v: &str) -> StringStringEntryProto {
        StringStringEntryProto { key: Some(k.into()), value: Some(v.into()) }
    }

    #[test]
    fn names_beside_the_input_are_reached_from_the_export() {
        let root = tempfile::tempdir().unwrap();
        let (model_dir, out_dir) = (root.path().join("model"), root.path().join("runs/a"));
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(model_dir.join("tokenizer.json"), "{}").unwrap();
        let mut props = vec![
            entry("semu.diffusion.tokenizer", "tokenizer.json"),
            entry("semu.diffusion.vae_decoder", "missing.onnx"),
            entry("semu.diffusion.timesteps", "1000"),
        ];
        let changed = relocate(&mut props, &model_dir, &out_dir);
        assert_eq!(changed, ["semu.diffusion.tokenizer"]);
        assert_eq!(props[0].value(), "../../model/tokenizer.json");
        assert!(out_dir.join(props[0].value()).is_file());
        assert_eq!((props[1].value(), props[2].value()), ("missing.onnx", "1000"));
        // Written back into its own folder: nothing to rewrite.
        assert!(relocate(&mut props, &model_dir, &model_dir).is_empty());
    }
}
