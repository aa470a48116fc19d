//! ImageFolder: layout and order as torchvision, lazy decoding, preprocessing, errors, the PNG
//! digits fixture against train.npz, and the model-facing checks (shape, metadata props).
use super::{all, err, fx};
use image::{DynamicImage, GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
use semu::data::{self, DataSpec, Dataset, ImageFolder, NpzDataset, Preprocess};
use semu::onnx::OnnxModel;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic pixel noise.
fn noise(seed: u32) -> impl FnMut() -> u8 {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 24) as u8
    }
}

fn rgb(w: u32, h: u32, seed: u32) -> DynamicImage {
    let mut n = noise(seed);
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| Rgb([n(), n(), n()])))
}

fn save(img: &DynamicImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// Classes "10", "2", "a_cls", "b_cls" (string order, as torchvision), PNG/BMP/JPEG, RGB, RGBA
/// and gray, one nested folder, one non-image file; sizes vary.
fn mixed_folder(root: &Path) {
    save(&rgb(12, 10, 1), &root.join("b_cls/x.png"));
    save(&rgb(9, 11, 2), &root.join("b_cls/sub/a.bmp"));
    let mut n = noise(3);
    save(&DynamicImage::ImageLuma8(GrayImage::from_fn(10, 10, |_, _| image::Luma([n()]))), &root.join("a_cls/g.png"));
    let mut n = noise(4);
    let rgba = RgbaImage::from_fn(7, 13, |_, _| Rgba([n(), n(), n(), n()]));
    save(&DynamicImage::ImageRgba8(rgba), &root.join("10/rgba.PNG"));
    save(&rgb(16, 16, 5), &root.join("2/photo.jpg"));
    save(&rgb(10, 10, 6), &root.join("2/b.png"));
    std::fs::write(root.join("2/notes.txt"), "not an image").unwrap();
}

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The folder through torchvision (tools/imagefolder_reference.py), one (x, y) per case.
fn torchvision(root: &Path, cases: &[&str]) -> Vec<(tch::Tensor, Vec<i64>)> {
    let out = |k: usize| root.parent().unwrap().join(format!("reference{k}.npz"));
    let specs: Vec<String> = cases.iter().enumerate().map(|(k, c)| format!("{} {c}", out(k).display())).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/imagefolder_reference.py");
    let st = Command::new(python()).arg(script).arg(root).args(&specs).status().unwrap();
    assert!(st.success(), "torchvision reference failed");
    (0..cases.len())
        .map(|k| {
            let arrays = tch::Tensor::read_npz(out(k)).unwrap();
            let get = |n: &str| arrays.iter().find(|(name, _)| name == n).unwrap().1.shallow_clone();
            (get("x"), Vec::<i64>::try_from(get("y")).unwrap())
        })
        .collect()
}

#[test]
fn matches_torchvision_imagefolder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    mixed_folder(&root);
    let cases = [
        ("--size 8,6", Preprocess { image_size: Some([8, 6]), ..Default::default() }),
        (
            "--size 20,18 --mean 0.4,0.5,0.6 --std 0.5,0.25,0.5",
            Preprocess {
                image_size: Some([20, 18]),
                mean: Some(vec![0.4, 0.5, 0.6]),
                std: Some(vec![0.5, 0.25, 0.5]),
                ..Default::default()
            },
        ),
        (
            "--size 12,12 --grayscale --mean 0.5 --std 0.25",
            Preprocess {
                image_size: Some([12, 12]),
                grayscale: Some(true),
                mean: Some(vec![0.5]),
                std: Some(vec![0.25]),
            },
        ),
    ];
    let reference = torchvision(&root, &cases.iter().map(|c| c.0).collect::<Vec<_>>());
    for ((args, pre), (rx, ry)) in cases.iter().zip(reference) {
        let ds = ImageFolder::open(&root, pre).unwrap();
        assert_eq!(ds.classes(), ["10", "2", "a_cls", "b_cls"]);
        let (x, y) = all(&ds);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), ry, "{args}: labels in torchvision's order");
        assert_eq!(x.size(), rx.size(), "{args}");
        // Differences in pixel units: times each channel's std.
        let c = x.size()[1];
        let std: Vec<f32> = (0..c as usize).map(|k| pre.std.as_ref().map_or(1.0, |s| s[k.min(s.len() - 1)])).collect();
        let std = tch::Tensor::from_slice(&std).view([c, 1, 1]);
        for i in 0..ds.len() {
            let d = ((x.get(i as i64) - rx.get(i as i64)).abs() * &std).max().double_value(&[]);
            // Both resample in 8 bits, rounding apart by one level at most; JPEG decoders
            // (libjpeg-turbo, zune-jpeg) may differ a little more.
            let is_jpeg = ds.path(i).extension().unwrap() == "jpg";
            let tol = if is_jpeg { 3.0 } else { 1.01 } / 255.0;
            assert!(d <= tol, "{args} {}: max diff {:.2}/255", ds.path(i).display(), d * 255.0);
        }
    }
}

#[test]
fn png_digits_match_train_npz_and_forget_class3() {
    let png = fx("digits_png/train");
    let pre = Preprocess { grayscale: Some(true), ..Default::default() };
    let e = err(ImageFolder::open(&fx("digits_png"), &pre));
    assert!(e.contains("holds the splits [test, train], not classes"), "{e}");
    let ds = ImageFolder::open(&png, &pre).unwrap();
    let npz = NpzDataset::open(&fx("digits/train.npz")).unwrap();
    assert_eq!(ds.len(), npz.len());
    let rows: Vec<usize> =
        (0..ds.len()).map(|i| ds.path(i).file_stem().unwrap().to_str().unwrap().parse().unwrap()).collect();
    let (x, y) = all(&ds);
    let (nx, ny) = npz.batch(&rows).unwrap();
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), Vec::<i64>::try_from(&ny).unwrap());
    let d = (&x - &nx).abs().max().double_value(&[]);
    assert!(d <= 0.5 / 255.0 + 1e-6, "PNG round trip off by {d}");

    // --forget-class 3 on the PNG set picks exactly the samples of forget_class3.npz.
    let split = data::select_forget(std::rc::Rc::new(ds), &data::ForgetBy::Classes(vec![3])).unwrap();
    let picked: Vec<i64> = split.forget_indices.iter().map(|&i| rows[i] as i64).collect();
    let want = tch::Tensor::read_npz(fx("digits/forget_class3.npz")).unwrap();
    let index = want.iter().find(|(n, _)| n == "index").unwrap().1.shallow_clone();
    assert_eq!(picked, Vec::<i64>::try_from(index).unwrap());
    assert_eq!(split.retain.len() + split.forget.len(), npz.len());
}

#[test]
fn decodes_lazily_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save(&rgb(4, 4, 1), &root.join("cat/a.png"));
    std::fs::write(root.join("cat/b.png"), b"\x89PNG broken").unwrap();
    save(&rgb(5, 4, 2), &root.join("dog/c.png"));
    let ds = ImageFolder::open(root, &Preprocess::default()).unwrap();
    assert_eq!(ds.labels().unwrap(), vec![0, 0, 1], "labels without decoding");
    assert_eq!(ds.batch(&[0]).unwrap().0.size(), vec![1, 3, 4, 4]);
    let e = err(ds.batch(&[0, 1]));
    assert!(e.contains(&root.join("cat/b.png").display().to_string()) && e.contains("unreadable image"), "{e}");
    let e = err(ds.batch(&[2]));
    assert!(e.contains("c.png") && e.contains("is 4×5") && e.contains("image size"), "{e}");
    let resized = ImageFolder::open(root, &Preprocess { image_size: Some([4, 4]), ..Default::default() }).unwrap();
    assert_eq!(resized.batch(&[2]).unwrap().0.size(), vec![1, 3, 4, 4]);

    std::fs::create_dir(root.join("empty")).unwrap();
    assert!(err(ImageFolder::open(root, &Preprocess::default())).contains("empty: class folder holds no image"));
    std::fs::remove_dir(root.join("empty")).unwrap();
    std::fs::write(root.join("dog/d.webp"), b"x").unwrap();
    assert!(err(ImageFolder::open(root, &Preprocess::default())).contains("d.webp: .webp images are not supported"));
    std::fs::remove_file(root.join("dog/d.webp")).unwrap();
    let bad = Preprocess { mean: Some(vec![0.1, 0.2]), ..Default::default() };
    assert!(err(ImageFolder::open(root, &bad)).contains("--mean has 2 values"));

    let e = err(data::validate(&ds, 1));
    assert!(e.contains("dog/c.png") && e.contains("label 1, outside the model's 1 classes"), "{e}");
}

#[test]
fn shape_check_and_model_metadata() {
    let model_path = fx("digits/model.onnx");
    let mut model = OnnxModel::load(&model_path).unwrap();
    let (name, dims) = data::model_input(&model, None).unwrap();
    assert_eq!((name.as_str(), dims.as_slice()), ("input", &[None, Some(1), Some(8), Some(8)][..]));
    let dir = tempfile::tempdir().unwrap();
    save(&rgb(8, 8, 1), &dir.path().join("3/a.png"));
    let rgb_ds = data::open(dir.path()).unwrap();
    let e = err(data::check_input_shape(rgb_ds.as_ref(), &model, None));
    assert!(e.contains("[3, 8, 8]") && e.contains("'input'") && e.contains("grayscale"), "{e}");
    // No props: nothing set; the input's declared shape fills in one channel and 8×8.
    let pre = Preprocess::from_model(&model).unwrap().with_input_defaults(&dims);
    assert_eq!((pre.grayscale, pre.image_size), (Some(true), Some([8, 8])));
    assert_eq!(Preprocess::for_model(&Preprocess::default(), &model, None).unwrap(), pre);
    let gray = data::open_with(dir.path(), &DataSpec { preprocess: pre, ..Default::default() }).unwrap();
    data::check_input_shape(gray.as_ref(), &model, None).unwrap();
    assert!(err(data::check_input_shape(gray.as_ref(), &model, Some("nope"))).contains("no graph input 'nope'"));

    let entry =
        |k: &str, v: &str| semu::onnx::proto::StringStringEntryProto { key: Some(k.into()), value: Some(v.into()) };
    model.proto.metadata_props.push(entry("semu.mean", "0.5"));
    model.proto.metadata_props.push(entry("semu.image_size", "4,4"));
    let flags = Preprocess { image_size: Some([6, 6]), ..Default::default() };
    let eff = Preprocess::for_model(&flags, &model, None).unwrap();
    assert_eq!((eff.mean, eff.image_size, eff.grayscale), (Some(vec![0.5]), Some([6, 6]), Some(true)));
    let eff = Preprocess::for_model(&Preprocess::default(), &model, None).unwrap();
    assert_eq!(eff.image_size, Some([4, 4]), "metadata over the declared shape");
    model.proto.metadata_props.push(entry("semu.std", "zero"));
    let e = err(Preprocess::from_model(&model));
    assert!(e.contains("model.onnx") && e.contains("semu.std"), "{e}");
}
