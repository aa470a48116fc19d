//! The data layer: every format on small files made here (or the digits fixtures), the errors
//! that name file and sample, validation against a model, forget selection.
#[path = "data/forget.rs"]
mod forget;
#[path = "data/images.rs"]
mod images;

use semu::data::{self, CsvOptions, DataSpec, Dataset, NpzDataset, Preprocess, Split};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub fn fx(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    assert!(p.exists(), "missing fixture {}: run `make fixtures`", p.display());
    p
}

pub fn err(r: semu::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

pub fn all(ds: &dyn Dataset) -> (Tensor, Tensor) {
    ds.batch(&(0..ds.len()).collect::<Vec<_>>()).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn npz_fixture_through_open() {
    let ds = data::open(&fx("digits/train.npz")).unwrap();
    assert_eq!(ds.len(), 1437);
    assert_eq!(ds.sample_shape().unwrap(), vec![1, 8, 8]);
    let (x, y) = ds.batch(&[5, 0]).unwrap();
    assert_eq!((x.size(), y.kind()), (vec![2, 1, 8, 8], Kind::Int64));
    assert_eq!(ds.labels().unwrap().len(), 1437);
}

#[test]
fn npy_pair_by_folder_sibling_and_explicit_labels() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::arange(24, (Kind::Float, tch::Device::Cpu)).view([4, 2, 3]);
    let y = Tensor::from_slice(&[1i32, 0, 2, 1]);
    x.write_npy(dir.path().join("x.npy")).unwrap();
    y.write_npy(dir.path().join("y.npy")).unwrap();
    for ds in [data::open(dir.path()).unwrap(), data::open(&dir.path().join("x.npy")).unwrap()] {
        assert_eq!(ds.len(), 4);
        let (bx, by) = ds.batch(&[2]).unwrap();
        assert_eq!(floats(&bx), (12..18).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(Vec::<i64>::try_from(by).unwrap(), vec![2]);
    }
    y.write_npy(dir.path().join("labels.npy")).unwrap();
    std::fs::rename(dir.path().join("x.npy"), dir.path().join("inputs.npy")).unwrap();
    let spec = DataSpec { y: Some(dir.path().join("labels.npy")), ..Default::default() };
    assert_eq!(data::open_with(&dir.path().join("inputs.npy"), &spec).unwrap().labels().unwrap(), vec![1, 0, 2, 1]);
    let e = err(data::open(&dir.path().join("inputs.npy")));
    assert!(e.contains("inputs.npy") && e.contains("labels"), "{e}");
    let short = Tensor::from_slice(&[1i64, 0]);
    short.write_npy(dir.path().join("short.npy")).unwrap();
    let e = err(NpzDataset::open_npy_pair(&dir.path().join("inputs.npy"), &dir.path().join("short.npy")));
    assert!(e.contains("short.npy") && e.contains("[4, 2, 3]"), "{e}");
}

fn write_safetensors(path: &Path, x: (&[u8], safetensors::Dtype, Vec<usize>), y: (&[u8], safetensors::Dtype)) {
    use safetensors::tensor::TensorView;
    let n = x.2[0];
    let tensors = [
        ("x".to_string(), TensorView::new(x.1, x.2.clone(), x.0).unwrap()),
        ("y".to_string(), TensorView::new(y.1, vec![n], y.0).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, &None, path).unwrap();
}

#[test]
fn safetensors_rows_labels_and_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    let xs: Vec<u8> = (0u8..12).collect();
    let ys: Vec<u8> = [3i32, 1, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(&path, (&xs, safetensors::Dtype::U8, vec![3, 2, 2]), (&ys, safetensors::Dtype::I32));
    let ds = data::open(&path).unwrap();
    assert_eq!((ds.len(), ds.sample_shape().unwrap()), (3, vec![2, 2]));
    let (x, y) = ds.batch(&[2, 0]).unwrap();
    assert_eq!(x.kind(), Kind::Float);
    assert_eq!(floats(&x), vec![8., 9., 10., 11., 0., 1., 2., 3.]);
    assert_eq!(Vec::<i64>::try_from(y).unwrap(), vec![4, 3]);

    let mut f: Vec<f32> = vec![0.5; 6];
    f[4] = f32::NAN;
    let fb: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
    let nan = dir.path().join("nan.safetensors");
    write_safetensors(&nan, (&fb, safetensors::Dtype::F32, vec![3, 2]), (&ys, safetensors::Dtype::I32));
    let ds = data::open(&nan).unwrap();
    assert_eq!(ds.batch(&[0, 1]).unwrap().0.size(), vec![2, 2]);
    let e = err(ds.batch(&[0, 2]));
    assert!(e.contains("nan.safetensors") && e.contains("sample 2") && e.contains("NaN"), "{e}");

    let fy: Vec<u8> = [0.0f32, 1.0, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bad = dir.path().join("fy.safetensors");
    write_safetensors(&bad, (&fb, safetensors::Dtype::F32, vec![3, 2]), (&fy, safetensors::Dtype::F32));
    let e = err(data::open(&bad));
    assert!(e.contains("fy.safetensors") && e.contains("integer class ids"), "{e}");
    std::fs::write(dir.path().join("junk.safetensors"), b"not a file").unwrap();
    assert!(err(data::open(&dir.path().join("junk.safetensors"))).contains("junk.safetensors"));
}

/// CIFAR records: label byte(s) then 3072 pixel bytes; pixel p of record r is (r + p) % 256.
fn cifar_file(path: &Path, labels: &[&[u8]]) {
    let mut bytes = Vec::new();
    for (r, l) in labels.iter().enumerate() {
        bytes.extend_from_slice(l);
        bytes.extend((0..3072).map(|p| ((r + p) % 256) as u8));
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar10_and_cifar100_batches() {
    let dir = tempfile::tempdir().unwrap();
    let c10 = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&c10).unwrap();
    cifar_file(&c10.join("data_batch_1.bin"), &[&[3], &[7]]);
    cifar_file(&c10.join("data_batch_2.bin"), &[&[9]]);
    cifar_file(&c10.join("test_batch.bin"), &[&[1]]);
    let train = data::open(&c10).unwrap();
    assert_eq!(train.labels().unwrap(), vec![3, 7, 9]);
    assert_eq!(train.sample_shape().unwrap(), vec![3, 32, 32]);
    let (x, _) = train.batch(&[2, 1]).unwrap();
    let v = floats(&x);
    assert_eq!(x.size(), vec![2, 3, 32, 32]);
    assert_eq!((v[0], v[1], v[3072]), (0.0, 1.0 / 255.0, 1.0 / 255.0), "record 0 of file 2, record 1 of file 1");
    let test = data::open_with(&c10, &DataSpec { split: Split::Test, ..Default::default() }).unwrap();
    assert_eq!(test.labels().unwrap(), vec![1]);
    let pre = Preprocess { mean: Some(vec![0.5]), std: Some(vec![0.5, 0.25, 1.0]), ..Default::default() };
    let norm = data::open_with(&c10.join("test_batch.bin"), &DataSpec { preprocess: pre, ..Default::default() });
    let v = floats(&norm.unwrap().batch(&[0]).unwrap().0);
    assert!((v[0] + 1.0).abs() < 1e-6 && (v[1024] + 2.0).abs() < 1e-6);

    let c100 = dir.path().join("cifar-100-binary");
    std::fs::create_dir(&c100).unwrap();
    cifar_file(&c100.join("train.bin"), &[&[1, 42], &[2, 99]]);
    let ds = data::open(&c100).unwrap();
    assert_eq!(ds.labels().unwrap(), vec![42, 99], "fine labels");
    assert!(err(data::open_with(&c100, &DataSpec { split: Split::Test, ..Default::default() })).contains("Test"));
    std::fs::write(c10.join("data_batch_3.bin"), vec![0u8; 3073 + 5]).unwrap();
    let e = err(data::open(&c10));
    assert!(e.contains("data_batch_3.bin") && e.contains("3073"), "{e}");
}

#[test]
fn csv_header_label_column_and_cell_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    std::fs::write(&p, "a,species,b\n1.5,2,3\n-1,0,4e1\n").unwrap();
    let opt = CsvOptions { label_column: Some("species".into()), ..Default::default() };
    let ds = data::open_with(&p, &DataSpec { csv: opt, ..Default::default() }).unwrap();
    assert_eq!(ds.labels().unwrap(), vec![2, 0]);
    assert_eq!(floats(&all(ds.as_ref()).0), vec![1.5, 3.0, -1.0, 40.0]);
    assert_eq!(ds.sample_name(1), "sample 1 (line 3)");

    std::fs::write(&p, "0.1,0.2,1\n0.3,0.4,0\n").unwrap();
    let ds = data::open(&p).unwrap();
    assert_eq!((ds.labels().unwrap(), ds.sample_shape().unwrap()), (vec![1, 0], vec![2]), "no header: last column");
    let by_index =
        DataSpec { csv: CsvOptions { label_column: Some("1".into()), header: Some(false) }, ..Default::default() };
    assert!(err(data::open_with(&p, &by_index)).contains("`0.1` is not an integer class id"));

    std::fs::write(&p, "x1,x2,label\n1,2,0\n3,oops,1\n").unwrap();
    let e = err(data::open(&p));
    assert!(
        e.contains("t.csv") && e.contains("line 3") && e.contains("column 2 (`x2`)") && e.contains("`oops`"),
        "{e}"
    );
    std::fs::write(&p, "x1,label\n1,0\nnan,1\n").unwrap();
    let e = err(data::open(&p));
    assert!(e.contains("line 3") && e.contains("not a finite number"), "{e}");
    std::fs::write(&p, "1,0\n2,x\n").unwrap();
    assert_eq!(err(data::open(&p)), format!("{}: line 2, column 2: `x` is not a number", p.display()));
    let past = DataSpec { csv: CsvOptions { label_column: Some("3".into()), header: None }, ..Default::default() };
    assert!(err(data::open_with(&p, &past)).contains("label column 3: columns count from 1 to 2"));
    std::fs::write(&p, "x1,label\n1,0\n2\n").unwrap();
    assert!(err(data::open(&p)).contains("t.csv"));
    let spec =
        DataSpec { csv: CsvOptions { label_column: Some("kind".into()), ..Default::default() }, ..Default::default() };
    std::fs::write(&p, "x1,label\n1,0\n").unwrap();
    assert!(err(data::open_with(&p, &spec)).contains("no column named `kind`"));
    std::fs::write(&p, "x1,label\n").unwrap();
    assert!(err(data::open(&p)).contains("holds no samples"));
}

#[test]
fn open_names_unknown_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.parquet");
    std::fs::write(&p, b"x").unwrap();
    assert!(err(data::open(&p)).contains("d.parquet: unknown data format"));
    assert!(err(data::open(&dir.path().join("nope.npz"))).contains("nope.npz: no such file"));
    assert!(err(data::open(dir.path())).contains("no class folders"));
}

#[test]
fn validate_labels_against_class_count() {
    let x = Tensor::zeros([3, 2], (Kind::Float, tch::Device::Cpu));
    let ds = NpzDataset::from_tensors("mem", x, Tensor::from_slice(&[0i64, 9, 10])).unwrap();
    data::validate(&ds, 11).unwrap();
    let e = err(data::validate(&ds, 10));
    assert!(e.contains("mem: sample 2 has label 10, outside the model's 10 classes"), "{e}");
    let empty = data::Subset { inner: &ds, idx: vec![] };
    assert!(err(data::validate(&empty, 10)).contains("holds no samples"));
    let inf = Tensor::from_slice(&[0f32, f32::INFINITY]).view([2, 1]);
    let e = err(NpzDataset::from_tensors("mem", inf, Tensor::from_slice(&[0i64, 1])));
    assert!(e.contains("sample 1 holds NaN or Inf"), "{e}");
}
