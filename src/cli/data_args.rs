//! Data flags shared by commands that read data: how to decode (image preprocessing, CSV label
//! column, text columns and tokenizer) and, for `unlearn`, how to choose the forget set from one
//! training set.
use super::fetch::RemoteArgs;
use anyhow::{anyhow, bail, Context};
use semu::data::forget::{select_forget, ForgetBy, ForgetRecord};
use semu::data::preprocess::{parse_floats, parse_size, Preprocess};
use semu::data::{self, DataSpec, Dataset, TextOptions};
use semu::onnx::OnnxModel;
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[derive(clap::Args, Debug, Default)]
pub struct DataArgs {
    /// The training set to choose the forget set from (with --forget-class, --forget-fraction or
    /// --forget-indices, or --forget as an explicit subset of it).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// With --train: forget every sample of these classes (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "C[,C…]")]
    pub forget_class: Vec<i64>,
    /// With --train: forget this share of the samples, drawn at random with --seed.
    #[arg(long)]
    pub forget_fraction: Option<f64>,
    /// With --train: forget the samples at these indices (one per line).
    #[arg(long)]
    pub forget_indices: Option<PathBuf>,
    /// With --train: use the rest of the training set as remaining data.
    #[arg(long)]
    pub use_retain: bool,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// One flag's comma-separated numbers. Named so that clap's derive takes `Option<Floats>` as one
/// value parsed into a list, not as a flag repeated (`Option<Vec<_>>`), which made any use of
/// --mean or --std panic.
type Floats = Vec<f32>;

/// How to decode data files: image preprocessing, the CSV label column, text columns and tokenizer.
#[derive(clap::Args, Debug, Default)]
pub struct DecodeArgs {
    /// Images: resize to H,W (ImageFolder and CIFAR input).
    #[arg(long, alias = "image-size", value_name = "H,W", value_parser = parse_size)]
    pub resize: Option<[u32; 2]>,
    /// Images: per-channel mean subtracted after scaling pixels to [0, 1].
    #[arg(long, value_parser = parse_floats, value_name = "M[,M,M]")]
    pub mean: Option<Floats>,
    /// Images: per-channel standard deviation.
    #[arg(long, value_parser = parse_floats, value_name = "S[,S,S]")]
    pub std: Option<Floats>,
    /// Images: read as one grey channel.
    #[arg(long)]
    pub grayscale: bool,
    /// CSV and text: the label column (name, or a 1-based number for CSV; text default `label`).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Text (.jsonl, or .csv with this column): the column holding the text (default `text`).
    #[arg(long, value_name = "NAME")]
    pub text_column: Option<String>,
    /// Text: the tokenizer.json (default: tokenizer.json beside the model).
    #[arg(long, value_name = "PATH|URL|hf://…")]
    pub tokenizer: Option<PathBuf>,
    /// Text: truncate every text to N tokens, special tokens included (default: the model's
    /// fixed or maximum length, with a warning when a text is cut).
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
}

/// The data of one unlearning run.
pub struct Loaded {
    pub forget: Rc<dyn Dataset>,
    pub retain: Option<Rc<dyn Dataset>>,
    pub test: Option<Rc<dyn Dataset>>,
    /// SHA-256 of the forget file, or of the chosen indices when selected from --train.
    pub forget_sha256: String,
    pub selection: Option<ForgetRecord>,
}

impl DecodeArgs {
    /// Decoding options: these flags over the model's `semu.*` metadata over its input shape;
    /// for text, the tokenizer and `config.json` beside the model and its declared `input_ids`
    /// length. A remote `--tokenizer` is fetched through `remote`.
    pub fn spec(&self, model: &OnnxModel, input: Option<&str>, remote: &RemoteArgs) -> anyhow::Result<DataSpec> {
        let flags = Preprocess {
            image_size: self.resize,
            mean: self.mean.clone(),
            std: self.std.clone(),
            grayscale: self.grayscale.then_some(true),
        };
        let preprocess = match Preprocess::for_model(&flags, model, input) {
            Ok(p) => p,
            // A graph of several inputs (a text model) has no one image input to read a shape from.
            Err(_) if input.is_none() && graph_inputs(model) > 1 => flags.over(&Preprocess::from_model(model)?),
            Err(e) => return Err(e.into()),
        };
        let mut spec = DataSpec { preprocess, progress: Some(super::progress::reading()), ..Default::default() };
        spec.csv.label_column = self.label_column.clone();
        spec.text = TextOptions {
            text_column: self.text_column.clone(),
            label_column: self.label_column.clone(),
            max_length: self.max_length,
            ..TextOptions::beside_model(model)
        };
        if let Some(t) = &self.tokenizer {
            spec.text.tokenizer = Some(remote.file(t).with_context(|| format!("--tokenizer {}", t.display()))?);
        }
        Ok(spec)
    }
}

fn graph_inputs(model: &OnnxModel) -> usize {
    let g = model.graph();
    g.input.iter().filter(|i| !g.initializer.iter().any(|t| t.name() == i.name())).count()
}

impl DataArgs {
    pub fn spec(&self, model: &OnnxModel, input: Option<&str>, remote: &RemoteArgs) -> anyhow::Result<DataSpec> {
        self.decode.spec(model, input, remote)
    }

    pub fn has_retain(&self, retain: Option<&Path>) -> bool {
        retain.is_some() || (self.train.is_some() && self.use_retain)
    }

    /// Flag combinations that cannot work (a usage error, exit 2).
    pub fn check_usage(&self, forget: Option<&Path>, retain: Option<&Path>) -> anyhow::Result<()> {
        let selectors = [!self.forget_class.is_empty(), self.forget_fraction.is_some(), self.forget_indices.is_some()];
        let chosen = selectors.iter().filter(|b| **b).count();
        if let Some(f) = self.forget_fraction.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
            bail!("--forget-fraction must be in (0, 1], got {f}");
        }
        match &self.train {
            None if chosen > 0 => {
                bail!("--forget-class, --forget-fraction and --forget-indices choose from --train: give --train")
            }
            None if forget.is_none() => bail!("give the data to forget: --forget FILE, or --train with a selection"),
            None if self.use_retain => bail!("--use-retain takes the rest of --train: give --train"),
            Some(_) if chosen + usize::from(forget.is_some()) != 1 => {
                bail!("with --train give exactly one of --forget-class, --forget-fraction, --forget-indices, --forget")
            }
            Some(_) if retain.is_some() => {
                bail!("with --train the remaining data is the rest of it: use --use-retain instead of --retain")
            }
            _ => Ok(()),
        }
    }

    /// Opens the forget/retain/test sets, selecting the forget set from --train when asked
    /// (flags already checked by [`Self::check_usage`]).
    pub fn load(
        &self,
        spec: &DataSpec,
        forget: Option<&Path>,
        retain: Option<&Path>,
        test: Option<&Path>,
        seed: u64,
    ) -> anyhow::Result<Loaded> {
        let open = |p: &Path| -> anyhow::Result<Rc<dyn Dataset>> { Ok(Rc::from(data::open_with(p, spec)?)) };
        let test = test.map(open).transpose()?;
        let Some(train) = &self.train else {
            let f =
                forget.ok_or_else(|| anyhow!("give the data to forget: --forget FILE, or --train with a selection"))?;
            return Ok(Loaded {
                forget: open(f)?,
                retain: retain.map(open).transpose()?,
                test,
                forget_sha256: semu::report::sha256_file(f)?,
                selection: None,
            });
        };
        let by = match (self.forget_class.is_empty(), self.forget_fraction, &self.forget_indices, forget) {
            (false, None, None, None) => ForgetBy::Classes(self.forget_class.clone()),
            (true, Some(fraction), None, None) => ForgetBy::Fraction { fraction, seed },
            (true, None, Some(p), None) => ForgetBy::IndicesFile(p.clone()),
            (true, None, None, Some(f)) => ForgetBy::Samples(open(f)?),
            _ => {
                bail!("with --train give exactly one of --forget-class, --forget-fraction, --forget-indices, --forget")
            }
        };
        let split = select_forget(open(train)?, &by)?;
        tracing::info!("forget set: {} ({} samples)", split.description, split.count);
        let record = split.record();
        Ok(Loaded {
            forget: Rc::new(split.forget),
            retain: self.use_retain.then(|| Rc::new(split.retain) as Rc<dyn Dataset>),
            test,
            forget_sha256: record.sha256.clone(),
            selection: Some(record),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DecodeArgs, RemoteArgs};
    use semu::onnx::OnnxModel;
    use std::path::Path;

    #[test]
    fn text_options_come_from_the_files_beside_the_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/text_cls");
        for (file, pad_to) in [("model_fixed.onnx", Some(48)), ("model.onnx", None)] {
            let model = OnnxModel::load(dir.join(file)).unwrap();
            let spec = DecodeArgs::default().spec(&model, None, &RemoteArgs::default()).unwrap();
            let t = &spec.text;
            assert_eq!(t.pad_to, pad_to, "{file}: input_ids dim 1");
            assert_eq!(t.tokenizer.as_deref(), Some(dir.join("tokenizer.json").as_path()));
            assert_eq!(t.model_max_length, Some(128), "config.json max_position_embeddings");
            assert_eq!(t.label2id.as_ref().map(|m| m["MPL-2.0"]), Some(4));
            assert!(t.labels_required);
        }
        let model = OnnxModel::load(dir.join("model.onnx")).unwrap();
        let flags = DecodeArgs {
            text_column: Some("body".into()),
            label_column: Some("licence".into()),
            max_length: Some(32),
            tokenizer: Some(dir.join("other.json")),
            ..Default::default()
        };
        let spec = flags.spec(&model, None, &RemoteArgs::default()).unwrap();
        assert_eq!((spec.text.text_column(), spec.text.label_column()), ("body", "licence"));
        assert_eq!((spec.text.max_length, spec.csv.label_column.as_deref()), (Some(32), Some("licence")));
        assert_eq!(spec.text.tokenizer.as_deref(), Some(dir.join("other.json").as_path()));
    }
}
