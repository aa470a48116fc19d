//! ImageFolder directories, as torchvision reads them: `root/<class>/**/<image>`, class index =
//! position of the class folder in sorted order, samples ordered by folder path then file name.
//! Only file paths are held; a batch decodes its images in parallel (rayon), NCHW float32.
use super::{Dataset, OnRead, Preprocess};
use crate::error::{Error, Result};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, GrayImage, ImageBuffer, ImageReader, Luma};
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Extensions decoded here (case-insensitive).
const DECODED: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];
/// Extensions torchvision would also count as images: refused rather than skipped, so that the
/// sample indices and class contents stay the ones the model was trained with.
const OTHER_IMAGES: [&str; 6] = ["ppm", "pgm", "tif", "tiff", "webp", "gif"];

pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, i64)>,
    pre: Preprocess,
    /// [C, H, W] of every sample: the chosen size, or the first image's.
    shape: [usize; 3],
}

impl ImageFolder {
    /// Scans `root` (no image is decoded; the first one's header gives the size when `pre` sets none).
    pub fn open(root: &Path, pre: &Preprocess) -> Result<Self> {
        Self::open_with_progress(root, pre, None)
    }

    /// [`Self::open`], telling `progress` how many images it has found so far (class by class;
    /// the total comes with the last call).
    pub fn open_with_progress(root: &Path, pre: &Preprocess, progress: OnRead) -> Result<Self> {
        let shown = root.display();
        let real_root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        let mut classes = Vec::new();
        let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            if entry.path().is_dir() {
                classes.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(Error::msg(format!(
                "{shown}: not a data set: no class folders (an ImageFolder is root/<class>/<image>)"
            )));
        }
        // A folder of splits read as classes would train on "train vs test": refuse it.
        let splits = ["train", "test", "val", "valid", "validation"];
        if classes.iter().all(|c| splits.contains(&c.to_ascii_lowercase().as_str())) {
            return Err(Error::msg(format!(
                "{shown}: holds the splits [{}], not classes: give one split, e.g. {}",
                classes.join(", "),
                root.join(&classes[0]).display()
            )));
        }
        let mut samples = Vec::new();
        for (c, name) in classes.iter().enumerate() {
            let dir = root.join(name);
            let mut files = Vec::new();
            walk(&dir, &mut files, &mut HashSet::new(), &mut vec![real_root.clone()])?;
            if files.is_empty() {
                return Err(Error::msg(format!(
                    "{}: class folder holds no image ({})",
                    dir.display(),
                    DECODED.join(", ")
                )));
            }
            // Python's sort of (folder, name) strings, as torchvision's os.walk order.
            files.sort();
            samples.extend(files.into_iter().map(|(d, f)| (Path::new(&d).join(f), c as i64)));
            if let Some(p) = progress {
                p(samples.len() as u64, None);
            }
        }
        if let Some(p) = progress {
            p(samples.len() as u64, Some(samples.len() as u64));
        }
        let channels = pre.channels();
        pre.check(channels).map_err(|e| Error::msg(format!("{shown}: {e}")))?;
        let [h, w] = match pre.image_size {
            Some(s) => s,
            None => {
                let first = &samples[0].0;
                let (w, h) = image::image_dimensions(first)
                    .map_err(|e| Error::msg(format!("{}: unreadable image ({e})", first.display())))?;
                crate::limits::check_image(w, h)
                    .map_err(|e| Error::msg(format!("{}: too large: {e}", first.display())))?;
                [h, w]
            }
        };
        let shape = [channels, h as usize, w as usize];
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples, pre: pre.clone(), shape })
    }

    /// Class names; a label is an index into this list.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The image file of sample `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.samples[i].0
    }

    fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let bad = |why: String| Error::msg(format!("{}: {why}", path.display()));
        let reader = ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| bad(format!("unreadable image ({e})")))?;
        let img = crate::limits::decode_image(reader).map_err(bad)?;
        let [c, h, w] = self.shape;
        // Gray before resizing, as a torchvision pipeline Grayscale → Resize does.
        let img = if c == 1 { gray(img) } else { img };
        let img = if img.dimensions() == (w as u32, h as u32) {
            img
        } else if self.pre.image_size.is_some() {
            img.resize_exact(w as u32, h as u32, FilterType::Triangle)
        } else {
            let (iw, ih) = img.dimensions();
            return Err(bad(format!(
                "is {ih}×{iw} (H×W) but the first image is {h}×{w}: give an image size to resize them all"
            )));
        };
        let mut chw = if c == 1 { img.to_luma32f().into_raw() } else { rgb_planes(&img) };
        self.pre.normalise(&mut chw, c);
        Ok(chw)
    }
}

/// Every decodable file under `dir` (following links, each folder once) as (folder, file name).
/// Every real path must stay inside the data set's root (`chain[0]`); a link to a folder that
/// holds it (`chain`: the real paths walked down to `dir`) is a loop, and is refused.
fn walk(
    dir: &Path,
    out: &mut Vec<(String, String)>,
    seen: &mut HashSet<PathBuf>,
    chain: &mut Vec<PathBuf>,
) -> Result<()> {
    let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    crate::paths::check_inside(&chain[0], &real, &dir.display().to_string())?;
    if chain.contains(&real) {
        return Err(Error::msg(format!(
            "{}: a symbolic link to {}, a folder that holds it (a loop): remove the link",
            dir.display(),
            real.display()
        )));
    }
    if !seen.insert(real.clone()) {
        return Ok(());
    }
    chain.push(real);
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out, seen, chain)?;
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        if DECODED.contains(&ext.as_str()) {
            let real = path.canonicalize().map_err(|e| Error::io(&path, e))?;
            crate::paths::check_inside(&chain[0], &real, &path.display().to_string())?;
            crate::paths::regular_file(&real)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((dir.to_string_lossy().into_owned(), name));
        } else if OTHER_IMAGES.contains(&ext.as_str()) {
            return Err(Error::msg(format!(
                "{}: .{ext} images are not supported (PNG, JPEG, BMP): convert or remove it",
                path.display()
            )));
        }
    }
    chain.pop();
    Ok(())
}

/// One channel. Gray images keep their values; colour ones get PIL's `convert("L")` weights
/// (ITU-R 601, rounded the same way for 8-bit images) so inputs match a torchvision pipeline.
/// ITU-R 601-2 luma of an 8-bit RGB pixel in 16-bit fixed point, rounded, as Pillow's
/// `convert("L")` and OpenCV compute it (the `image` crate's own luma uses Rec. 709 weights).
pub(crate) fn luma601(p: &[u8]) -> u8 {
    let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

fn gray(img: DynamicImage) -> DynamicImage {
    if !img.color().has_color() {
        return img;
    }
    if img.color().bytes_per_pixel() / img.color().channel_count() == 1 {
        let rgb = img.to_rgb8();
        return DynamicImage::ImageLuma8(GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
            Luma([luma601(&rgb.get_pixel(x, y).0)])
        }));
    }
    let rgb = img.to_rgb32f();
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        Luma([((0.299 * r + 0.587 * g + 0.114 * b) * 65535.0).round().clamp(0.0, 65535.0) as u16])
    }))
}

/// R, G, B planes (alpha dropped, as PIL's `convert("RGB")`).
fn rgb_planes(img: &DynamicImage) -> Vec<f32> {
    let rgb = img.to_rgb32f();
    let n = rgb.width() as usize * rgb.height() as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = p.0[c];
        }
    }
    out
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source(), self.len())));
        }
        let images = idx.par_iter().map(|&i| self.load(&self.samples[i].0)).collect::<Result<Vec<_>>>()?;
        let [c, h, w] = self.shape.map(|d| d as i64);
        let x = Tensor::f_from_slice(&images.concat())?.f_view([idx.len() as i64, c, h, w])?;
        let y: Vec<i64> = idx.iter().map(|&i| self.samples[i].1).collect();
        super::check_finite(&x, idx, self)?;
        Ok((x, Tensor::f_from_slice(&y)?))
    }
    fn source(&self) -> String {
        self.root.display().to_string()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok(self.samples.iter().map(|s| s.1).collect())
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(self.shape.iter().map(|&d| d as i64).collect())
    }
    fn sample_name(&self, i: usize) -> String {
        match self.samples.get(i) {
            Some((p, _)) => format!("sample {i} ({})", p.display()),
            None => format!("sample {i}"),
        }
    }
}
