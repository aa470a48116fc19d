//! How raw images become model inputs: size, channels, per-channel mean/std. Every field is
//! optional so that sources layer: CLI flags over the model's metadata props over defaults.
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;

/// Image preprocessing. Pixels are scaled to [0, 1], then `(v - mean[c]) / std[c]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Preprocess {
    /// Resize every image to [H, W] (bilinear, antialiased when shrinking).
    pub image_size: Option<[u32; 2]>,
    /// Per-channel mean; one value applies to every channel. Default 0.
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation; one value applies to every channel. Default 1.
    pub std: Option<Vec<f32>>,
    /// One channel (ITU-R 601 luma, as PIL's `convert("L")`) instead of RGB.
    pub grayscale: Option<bool>,
}

/// The metadata keys read by [`Preprocess::from_model`].
pub const META_KEYS: [&str; 4] = ["semu.mean", "semu.std", "semu.image_size", "semu.grayscale"];

impl Preprocess {
    /// Fields set in `self` win; the others come from `base` (e.g. `flags.over(&from_model)`).
    pub fn over(&self, base: &Preprocess) -> Preprocess {
        Preprocess {
            image_size: self.image_size.or(base.image_size),
            mean: self.mean.clone().or_else(|| base.mean.clone()),
            std: self.std.clone().or_else(|| base.std.clone()),
            grayscale: self.grayscale.or(base.grayscale),
        }
    }

    /// Reads `semu.mean`, `semu.std` ("0.485,0.456,0.406"), `semu.image_size` ("224,224") and
    /// `semu.grayscale` ("true") from the model's metadata props; absent keys stay unset.
    pub fn from_model(model: &OnnxModel) -> Result<Preprocess> {
        let props = model.proto.metadata_props.iter().map(|p| (p.key(), p.value()));
        Self::from_props(props, &model.path.display().to_string())
    }

    /// As [`Self::from_model`], from (key, value) pairs; `origin` names them in errors.
    pub fn from_props<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>, origin: &str) -> Result<Preprocess> {
        let mut p = Preprocess::default();
        for (key, value) in props {
            let ctx = |e: Error| Error::msg(format!("{origin}: metadata prop {key} = {value:?}: {e}"));
            match key {
                "semu.mean" => p.mean = Some(parse_floats(value).map_err(ctx)?),
                "semu.std" => p.std = Some(parse_floats(value).map_err(ctx)?),
                "semu.image_size" => p.image_size = Some(parse_size(value).map_err(ctx)?),
                "semu.grayscale" => p.grayscale = Some(parse_bool(value).map_err(ctx)?),
                _ => {}
            }
        }
        Ok(p)
    }

    /// What data fed to `model` gets: `flags` over the model's metadata props, the rest from the
    /// declared shape of its input `input` (or its only input); see [`Self::with_input_defaults`].
    pub fn for_model(flags: &Preprocess, model: &OnnxModel, input: Option<&str>) -> Result<Preprocess> {
        let (_, dims) = super::model_input(model, input)?;
        Ok(flags.over(&Self::from_model(model)?).with_input_defaults(&dims))
    }

    /// Fills what is unset from the model's declared input [N, C, H, W] (`None`: a symbolic
    /// dim): one channel means grayscale, fixed H and W mean that size.
    pub fn with_input_defaults(&self, dims: &[Option<i64>]) -> Preprocess {
        let mut p = self.clone();
        if let [_, c, h, w] = dims {
            if p.grayscale.is_none() {
                p.grayscale = c.map(|c| c == 1);
            }
            if let (None, Some(h), Some(w)) = (p.image_size, h, w) {
                p.image_size = (*h > 0 && *w > 0).then_some([*h as u32, *w as u32]);
            }
        }
        p
    }

    /// 1 for grayscale, else 3.
    pub fn channels(&self) -> usize {
        if self.grayscale == Some(true) {
            1
        } else {
            3
        }
    }

    /// Mean/std hold 1 or `channels` values, std is positive, all finite, size is not zero.
    pub fn check(&self, channels: usize) -> Result<()> {
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            let Some(v) = v else { continue };
            if v.len() != 1 && v.len() != channels {
                return Err(Error::msg(format!(
                    "--{name} has {} values for {channels}-channel images (give 1 or {channels})",
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::msg(format!("--{name} holds a value that is not finite")));
            }
        }
        if self.std.as_ref().is_some_and(|s| s.iter().any(|&x| x <= 0.0)) {
            return Err(Error::msg("--std must be positive"));
        }
        if self.image_size.is_some_and(|[h, w]| h == 0 || w == 0) {
            return Err(Error::msg("--image-size must be at least 1,1"));
        }
        Ok(())
    }

    /// Normalises one image, CHW floats in [0, 1], in place (after [`Self::check`]).
    pub fn normalise(&self, chw: &mut [f32], channels: usize) {
        let per = chw.len() / channels.max(1);
        let pick = |v: &Option<Vec<f32>>, c: usize, default: f32| {
            v.as_ref().map_or(default, |v| if v.len() == 1 { v[0] } else { v[c] })
        };
        for c in 0..channels {
            let (m, s) = (pick(&self.mean, c, 0.0), pick(&self.std, c, 1.0));
            if m == 0.0 && s == 1.0 {
                continue;
            }
            for v in &mut chw[c * per..(c + 1) * per] {
                *v = (*v - m) / s;
            }
        }
    }
}

/// "0.5,0.25" or "[0.5, 0.25]" → [0.5, 0.25].
pub fn parse_floats(s: &str) -> Result<Vec<f32>> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    let out = inner
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|_| Error::msg(format!("`{}` is not a number", v.trim()))))
        .collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        return Err(Error::msg("expected comma-separated numbers"));
    }
    Ok(out)
}

/// "224,224", "224x224" or "224" (square) → [H, W].
pub fn parse_size(s: &str) -> Result<[u32; 2]> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    let parts: Vec<&str> = inner.split([',', 'x', 'X']).map(str::trim).collect();
    let num = |v: &str| match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::msg(format!("`{v}` is not a positive image size"))),
    };
    match parts.as_slice() {
        [side] => Ok([num(side)?; 2]),
        [h, w] => Ok([num(h)?, num(w)?]),
        _ => Err(Error::msg("expected H,W (e.g. 224,224) or one number for a square")),
    }
}

/// "true"/"false", "1"/"0", "yes"/"no".
pub fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::msg(format!("`{other}` is not true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_parse_and_flags_override() {
        let props = [("semu.mean", "[0.5, 0.25, 0.125]"), ("semu.image_size", "32x28"), ("other", "x")];
        let meta = Preprocess::from_props(props, "m.onnx").unwrap();
        assert_eq!(meta.mean, Some(vec![0.5, 0.25, 0.125]));
        assert_eq!(meta.image_size, Some([32, 28]));
        assert_eq!(meta.std, None);
        let flags = Preprocess { image_size: Some([8, 8]), grayscale: Some(true), ..Default::default() };
        let eff = flags.over(&meta);
        assert_eq!(eff.image_size, Some([8, 8]));
        assert_eq!(eff.mean, meta.mean);
        assert_eq!(eff.grayscale, Some(true));
    }

    #[test]
    fn bad_prop_names_model_and_key() {
        let e = Preprocess::from_props([("semu.std", "0.5,abc")], "m.onnx").unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("semu.std") && e.contains("`abc`"), "{e}");
        let e = Preprocess::from_props([("semu.grayscale", "maybe")], "m.onnx").unwrap_err().to_string();
        assert!(e.contains("semu.grayscale"), "{e}");
    }

    #[test]
    fn input_defaults_fill_only_unset_fields() {
        let p = Preprocess::default().with_input_defaults(&[None, Some(1), Some(8), Some(8)]);
        assert_eq!((p.grayscale, p.image_size), (Some(true), Some([8, 8])));
        let set = Preprocess { grayscale: Some(false), ..Default::default() };
        let p = set.with_input_defaults(&[None, Some(1), None, None]);
        assert_eq!((p.grayscale, p.image_size), (Some(false), None));
    }

    #[test]
    fn check_and_normalise() {
        let p = Preprocess { mean: Some(vec![0.5, 0.0]), std: Some(vec![0.5]), ..Default::default() };
        assert!(p.check(3).is_err());
        p.check(2).unwrap();
        let mut v = vec![1.0, 0.5, 1.0, 0.5];
        p.normalise(&mut v, 2);
        assert_eq!(v, vec![1.0, 0.0, 2.0, 1.0]);
        assert!(Preprocess { std: Some(vec![0.0]), ..Default::default() }.check(1).is_err());
        assert_eq!(parse_size("224").unwrap(), [224, 224]);
        assert!(parse_size("0,3").is_err());
    }
}
