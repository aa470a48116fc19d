//! Forget selection from one training set: by class, fraction, indices file, explicit set; the
//! retain set is the exact complement, choices are deterministic, the hash is the indices file's.
use super::{all, err, fx};
use semu::data::{self, indices_sha256, select_forget, Dataset, ForgetBy, NpzDataset};
use sha2::{Digest, Sha256};
use std::rc::Rc;

fn train() -> Rc<dyn Dataset> {
    Rc::new(NpzDataset::open(&fx("digits/train.npz")).unwrap())
}

fn npz_index(name: &str) -> Vec<usize> {
    let arrays = tch::Tensor::read_npz(fx(name)).unwrap();
    let t = arrays.iter().find(|(n, _)| n == "index").unwrap().1.shallow_clone();
    Vec::<i64>::try_from(t).unwrap().into_iter().map(|i| i as usize).collect()
}

/// Forget and retain partition 0..n, and each subset serves its own samples.
fn assert_partition(s: &data::ForgetSplit, train: &dyn Dataset) {
    let n = train.len();
    let mut seen = vec![0u8; n];
    s.forget.idx.iter().chain(&s.retain.idx).for_each(|&i| seen[i] += 1);
    assert!(seen.iter().all(|&c| c == 1), "forget ∪ retain is 0..n, disjoint");
    assert_eq!((s.count, s.forget_indices.as_slice()), (s.forget.len(), s.forget.idx.as_slice()));
    assert!(s.forget_indices.windows(2).all(|w| w[0] < w[1]), "ascending, unique");
    let (fx_, fy) = all(&s.forget);
    let (tx, ty) = train.batch(&s.forget_indices).unwrap();
    assert!(fx_.equal(&tx) && fy.equal(&ty));
}

#[test]
fn by_class_is_the_fixture_split() {
    let t = train();
    let s = select_forget(t.clone(), &ForgetBy::Classes(vec![3])).unwrap();
    assert_partition(&s, t.as_ref());
    assert_eq!(s.forget_indices, npz_index("digits/forget_class3.npz"));
    assert_eq!(s.retain.idx, npz_index("digits/retain_class3.npz"));
    assert!(s.forget.labels().unwrap().iter().all(|&l| l == 3));
    assert!(s.retain.labels().unwrap().iter().all(|&l| l != 3));
    let two = select_forget(t.clone(), &ForgetBy::Classes(vec![3, 5])).unwrap();
    assert!(two.count > s.count && two.description == "classes 3,5");
    assert!(err(select_forget(t, &ForgetBy::Classes(vec![12]))).contains("class 12 has no sample"));
}

#[test]
fn by_fraction_is_seeded_and_exact_in_size() {
    let t = train();
    let pick = |seed| select_forget(t.clone(), &ForgetBy::Fraction { fraction: 0.1, seed }).unwrap();
    let (a, b, c) = (pick(7), pick(7), pick(8));
    assert_partition(&a, t.as_ref());
    assert_eq!(a.count, 143, "floor(0.1 × 1437)");
    assert_eq!((a.forget_indices.clone(), a.sha256.clone()), (b.forget_indices, b.sha256), "same seed, same set");
    assert_ne!(a.forget_indices, c.forget_indices);
    for bad in [0.0, 1.5, f64::NAN, 0.0001] {
        assert!(select_forget(t.clone(), &ForgetBy::Fraction { fraction: bad, seed: 0 }).is_err(), "{bad}");
    }
}

#[test]
fn by_indices_file_with_line_errors_and_hash() {
    let t = train();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("forget.txt");
    std::fs::write(&p, "# forget these\n5\n\n1\n1436\n").unwrap();
    let s = select_forget(t.clone(), &ForgetBy::IndicesFile(p.clone())).unwrap();
    assert_partition(&s, t.as_ref());
    assert_eq!(s.forget_indices, vec![1, 5, 1436]);
    // The hash is the one of a file listing the sorted indices, one a line.
    std::fs::write(dir.path().join("sorted.txt"), "1\n5\n1436\n").unwrap();
    let file_hash: String = Sha256::digest(std::fs::read(dir.path().join("sorted.txt")).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(s.sha256, file_hash);
    assert_eq!(indices_sha256(&[1, 5, 1436]), file_hash);

    for (text, want) in [
        ("3\nthree\n", "forget.txt:2: `three` is not a sample index"),
        ("3\n-1\n", "forget.txt:2: `-1` is not a sample index"),
        ("0\n\n1437\n", "forget.txt:3: index 1437 is outside the training set (1437 samples"),
        ("4\n2\n4\n", "forget.txt:3: index 4 repeats line 1"),
        ("# nothing\n", "lists no index"),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = err(select_forget(t.clone(), &ForgetBy::IndicesFile(p.clone())));
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let e = err(select_forget(t.clone(), &ForgetBy::IndicesFile(dir.path().join("missing.txt"))));
    assert!(e.contains("missing.txt"), "{e}");
    let s = select_forget(t.clone(), &ForgetBy::Indices(vec![9, 2])).unwrap();
    assert_eq!(s.forget_indices, vec![2, 9]);
    assert!(err(select_forget(t, &ForgetBy::Indices(vec![2, 2]))).contains("listed twice"));
}

#[test]
fn by_explicit_forget_set_finds_its_training_samples() {
    let t = train();
    let forget: Rc<dyn Dataset> = Rc::new(NpzDataset::open(&fx("digits/forget_random10.npz")).unwrap());
    let s = select_forget(t.clone(), &ForgetBy::Samples(forget)).unwrap();
    assert_partition(&s, t.as_ref());
    let mut want = npz_index("digits/forget_random10.npz");
    want.sort();
    // Equal duplicates in the training set would be forgotten too; digits has none among these.
    assert_eq!(s.forget_indices, want);
    let test: Rc<dyn Dataset> = Rc::new(NpzDataset::open(&fx("digits/test.npz")).unwrap());
    let e = err(select_forget(t, &ForgetBy::Samples(test)));
    assert!(e.contains("test.npz") && e.contains("is not in the training set"), "{e}");
}
