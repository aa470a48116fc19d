//! The data layer for records and text: tokenization equal to the Python `tokenizers` library
//! (fixtures/text_cls/tokenized_ref.npz), JSONL/CSV reading and its errors, padding and
//! truncation, string labels, record arrays, and forget selection on a text set.
use semu::data::forget::{select_forget, ForgetBy};
use semu::data::{self, DataSpec, Dataset, TextDataset, TextOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tch::{Kind, Tensor};

fn fx(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/text_cls").join(name);
    assert!(p.exists(), "missing fixture {}: run `make fixtures`", p.display());
    p
}

fn opts() -> TextOptions {
    TextOptions { tokenizer: Some(fx("tokenizer.json")), ..Default::default() }
}

fn spec(text: TextOptions) -> DataSpec {
    DataSpec { text, ..Default::default() }
}

fn err(r: semu::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_npz(fx("tokenized_ref.npz"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n.trim_end_matches(".npy").to_string(), t))
        .collect()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// The fixture's label names, from the model's config.json.
fn label2id() -> HashMap<String, i64> {
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx("config.json")).unwrap()).unwrap();
    cfg["label2id"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect()
}

fn first(n: usize) -> Vec<usize> {
    (0..n).collect()
}

#[test]
fn token_ids_equal_the_python_tokenizers_library() {
    let r = reference();
    let ds = data::open_with(&fx("test.jsonl"), &spec(opts())).unwrap();
    let b = ds.records(&first(32)).unwrap();
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let got = b.input(name).unwrap_or_else(|| panic!("no input {name}"));
        assert_eq!(got.kind(), Kind::Int64, "{name}");
        assert_eq!(got.size(), r[name].size(), "{name}: padded to the longest of the 32");
        assert_eq!(ints(got), ints(&r[name]), "{name}");
    }
    let cut = data::open_with(&fx("test.jsonl"), &spec(TextOptions { max_length: Some(16), ..opts() })).unwrap();
    let b = cut.records(&first(32)).unwrap();
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let want = &r[&format!("{name}_max16")];
        assert_eq!(b.input(name).unwrap().size(), want.size(), "{name}_max16");
        assert_eq!(ints(b.input(name).unwrap()), ints(want), "{name}_max16");
    }
    // `batch` gives the same ids; labels are the file's.
    let (x, y) = ds.batch(&first(32)).unwrap();
    assert_eq!(ints(&x), ints(&r["input_ids"]));
    let labels: Vec<i64> = std::fs::read_to_string(fx("test.jsonl"))
        .unwrap()
        .lines()
        .take(32)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].as_i64().unwrap())
        .collect();
    assert_eq!(ints(&y), labels);
}

#[test]
fn csv_with_a_text_column_reads_as_text_like_the_jsonl() {
    let csv = data::open_with(&fx("test_head.csv"), &spec(opts())).unwrap();
    let jsonl = data::open_with(&fx("test.jsonl"), &spec(opts())).unwrap();
    assert_eq!(csv.len(), 8);
    let (a, b) = (csv.records(&first(8)).unwrap(), jsonl.records(&first(8)).unwrap());
    let names: Vec<&str> = a.inputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    for ((n, x), (_, y)) in a.inputs.iter().zip(&b.inputs) {
        assert_eq!(ints(x), ints(y), "{n}");
    }
    assert_eq!(ints(&a.y), ints(&b.y));
    assert_eq!(csv.sample_name(2), "sample 2 (test_head.csv:4)");

    // A CSV without a text column stays a numeric table.
    let dir = tempfile::tempdir().unwrap();
    let table = write(dir.path(), "t.csv", "a,b,label\n1,2.5,0\n3,4,1\n");
    let ds = data::open_with(&table, &spec(opts())).unwrap();
    let (x, y) = ds.batch(&[0, 1]).unwrap();
    assert_eq!((x.kind(), x.size()), (Kind::Float, vec![2, 2]));
    assert_eq!(ints(&y), [0, 1]);
    // …unless --text-column says which column is text.
    let e = err(data::open_with(&table, &spec(TextOptions { text_column: Some("body".into()), ..opts() })));
    assert!(e.contains("t.csv:1: no column `body`") && e.contains("`a`, `b`, `label`"), "{e}");
}

#[test]
fn a_batch_pads_to_its_longest_text_or_to_a_fixed_length() {
    let ds = TextDataset::open(&fx("test.jsonl"), &opts()).unwrap();
    let lens: Vec<usize> = (0..6).map(|i| ds.token_ids(i).unwrap().len()).collect();
    for pair in [[0usize, 1], [2, 3], [4, 5]] {
        let b = ds.records(&pair).unwrap();
        let ids = b.input("input_ids").unwrap();
        let longest = lens[pair[0]].max(lens[pair[1]]) as i64;
        assert_eq!(ids.size(), [2, longest], "batch {pair:?} pads to its own longest");
        let mask = b.input("attention_mask").unwrap();
        let per_row: Vec<i64> = ints(&mask.sum_dim_intlist(1, false, Kind::Int64));
        assert_eq!(per_row, [lens[pair[0]] as i64, lens[pair[1]] as i64]);
        // Right padding with the pad id 0 ([PAD]) where the mask is 0.
        let (ids, mask) = (ints(ids), ints(mask));
        let row0 = &ids[..longest as usize];
        assert_eq!(row0[..lens[pair[0]]], ds.token_ids(pair[0]).unwrap().iter().map(|&t| t as i64).collect::<Vec<_>>());
        assert!(ids.iter().zip(&mask).all(|(&t, &m)| m == 1 || t == 0));
    }
    let fixed = TextDataset::open(&fx("test.jsonl"), &TextOptions { pad_to: Some(100), ..opts() }).unwrap();
    let b = fixed.records(&[0, 1]).unwrap();
    for (n, t) in &b.inputs {
        assert_eq!(t.size(), [2, 100], "{n}");
    }
    assert_eq!(ints(&b.input("attention_mask").unwrap().sum(Kind::Int64)), [(lens[0] + lens[1]) as i64]);
    assert_eq!(fixed.records(&[3]).unwrap().input("input_ids").unwrap().size(), [1, 100]);
}

#[test]
fn padding_follows_the_tokenizers_own_padding_params() {
    let dir = tempfile::tempdir().unwrap();
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx("tokenizer.json")).unwrap()).unwrap();
    tok["padding"] = serde_json::json!({"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": null,
        "pad_id": 4, "pad_type_id": 1, "pad_token": "[MASK]"});
    let path = write(dir.path(), "tokenizer.json", &tok.to_string());
    let ds = TextDataset::open(&fx("test.jsonl"), &TextOptions { tokenizer: Some(path), ..opts() }).unwrap();
    let (a, b) = (ds.token_ids(0).unwrap().len(), ds.token_ids(1).unwrap().len());
    let (short, long) = if a < b { (0, b) } else { (1, a) };
    let batch = ds.records(&[short]).unwrap();
    assert_eq!(batch.input("input_ids").unwrap().size()[1] as usize, ds.token_ids(short).unwrap().len());
    let batch = ds.records(&[0, 1]).unwrap();
    let ids = ints(batch.input("input_ids").unwrap());
    let types = ints(batch.input("token_type_ids").unwrap());
    let mask = ints(batch.input("attention_mask").unwrap());
    let row = short * long;
    let n_pad = long - ds.token_ids(short).unwrap().len();
    assert!(n_pad > 0);
    assert!(ids[row..row + n_pad].iter().all(|&t| t == 4), "left padding with pad_id 4: {:?}", &ids[row..row + long]);
    assert!(types[row..row + n_pad].iter().all(|&t| t == 1));
    assert!(mask[row..row + n_pad].iter().all(|&m| m == 0));
    assert_eq!(ids[row + n_pad], 2, "the text starts with [CLS] right after the padding");
    assert_eq!(mask[row + n_pad..row + long].iter().sum::<i64>() as usize, long - n_pad);
}

#[test]
fn texts_are_truncated_keeping_special_tokens() {
    let ds = TextDataset::open(&fx("test.jsonl"), &TextOptions { max_length: Some(12), ..opts() }).unwrap();
    let full = TextDataset::open(&fx("test.jsonl"), &opts()).unwrap();
    let mut cut = 0;
    for i in 0..ds.len() {
        let (t, f) = (ds.token_ids(i).unwrap(), full.token_ids(i).unwrap());
        assert!(t.len() <= 12);
        assert_eq!((t[0], *t.last().unwrap()), (2, 3), "[CLS] … [SEP] kept");
        if f.len() > 12 {
            cut += 1;
            assert_eq!(t[..11], f[..11]);
        } else {
            assert_eq!(t, f);
        }
    }
    assert!(cut > 10, "the fixture has long texts");
    // Without --max-length, a fixed model length truncates (with a warning).
    let fixed = TextDataset::open(&fx("test.jsonl"), &TextOptions { pad_to: Some(20), ..opts() }).unwrap();
    assert!((0..fixed.len()).all(|i| fixed.token_ids(i).unwrap().len() <= 20));
    assert_eq!(fixed.records(&first(5)).unwrap().input("input_ids").unwrap().size(), [5, 20]);
    // A --max-length the model cannot take is an error, not a silent cut.
    let e =
        err(TextDataset::open(&fx("test.jsonl"), &TextOptions { pad_to: Some(20), max_length: Some(30), ..opts() }));
    assert!(e.contains("test.jsonl") && e.contains("--max-length 30") && e.contains("fixed sequence length 20"), "{e}");
    let e = err(TextDataset::open(&fx("test.jsonl"), &TextOptions { max_length: Some(2), ..opts() }));
    assert!(e.contains("no room for text") && e.contains("2 special tokens"), "{e}");
}

#[test]
fn string_labels_map_through_label2id() {
    let with = TextOptions { label_column: Some("licence".into()), label2id: Some(label2id()), ..opts() };
    let named = TextDataset::open(&fx("train.jsonl"), &with).unwrap();
    let numbered = TextDataset::open(&fx("train.jsonl"), &opts()).unwrap();
    assert_eq!(named.labels().unwrap(), numbered.labels().unwrap());
    assert_eq!(named.labels().unwrap().iter().max(), Some(&4));

    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "s.jsonl",
        "{\"text\": \"a b\", \"label\": \"GPL-3\"}\n{\"text\": \"c\", \"label\": \"BSD\"}\n",
    );
    let e = err(TextDataset::open(&f, &TextOptions { label2id: Some(label2id()), ..opts() }));
    assert!(e.contains("s.jsonl:2") && e.contains("\"BSD\"") && e.contains("\"Apache-2.0\"=0"), "{e}");
    let e = err(TextDataset::open(&f, &opts()));
    assert!(e.contains("s.jsonl:1") && e.contains("label2id") && e.contains("config.json"), "{e}");
    // A language model's set needs no label column.
    let lm = TextOptions { labels_required: false, label_column: None, ..opts() };
    let g = write(dir.path(), "lm.jsonl", "{\"text\": \"a b\"}\n\n{\"text\": \"c d e\"}\n");
    let ds = TextDataset::open(&g, &lm).unwrap();
    assert_eq!(ds.labels().unwrap(), [0, 0]);
    assert_eq!(ds.sample_name(1), "sample 1 (lm.jsonl:3)");
}

#[test]
fn reading_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, body: &str| err(TextDataset::open(&write(dir.path(), name, body), &opts()));
    let ok = "{\"text\": \"fine\", \"label\": 1}\n";
    let e = open("bad.jsonl", &format!("{ok}{{\"text\": \"x\", \n"));
    assert!(e.contains("bad.jsonl:2: not valid JSON"), "{e}");
    let e = open("key.jsonl", &format!("{ok}{ok}{{\"body\": \"x\", \"label\": 0}}\n"));
    assert!(e.contains("key.jsonl:3: no `text` key (keys: `body`, `label`)") && e.contains("--text-column"), "{e}");
    let e = open("float.jsonl", "{\"text\": \"x\", \"label\": 1.5}\n");
    assert!(e.contains("float.jsonl:1") && e.contains("not an integer class id"), "{e}");
    let e = open("nolabel.jsonl", "{\"text\": \"x\"}\n");
    assert!(e.contains("nolabel.jsonl:1: no `label` key") && e.contains("--label-column"), "{e}");
    let e = open("array.jsonl", "[1, 2]\n");
    assert!(e.contains("array.jsonl:1") && e.contains("not an object"), "{e}");
    let e = open("empty.jsonl", "\n\n");
    assert!(e.contains("empty.jsonl: holds no samples"), "{e}");
    let e = open("label.csv", "text,label\n\"a, b\",1\nc,\n");
    assert!(e.contains("label.csv:3") && e.contains("`label` is empty"), "{e}");
    let e = open("nocol.csv", "text,y\na,1\n");
    assert!(e.contains("nocol.csv:1: no column `label`") && e.contains("`text`, `y`"), "{e}");
    let e = open("header.csv", "text,label\n");
    assert!(e.contains("header.csv: holds no samples (only a header)"), "{e}");

    let f = write(dir.path(), "ok.jsonl", ok);
    let missing = dir.path().join("nowhere/tokenizer.json");
    let e = err(TextDataset::open(&f, &TextOptions { tokenizer: Some(missing.clone()), ..opts() }));
    assert!(e.contains("ok.jsonl") && e.contains(&missing.display().to_string()) && e.contains("--tokenizer"), "{e}");
    let junk = write(dir.path(), "junk.json", "{\"not\": \"a tokenizer\"}");
    let e = err(TextDataset::open(&f, &TextOptions { tokenizer: Some(junk), ..opts() }));
    assert!(e.contains("junk.json: not a readable tokenizer.json") && e.contains("--tokenizer"), "{e}");
}

#[test]
fn record_arrays_keep_every_input_and_its_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let ids = Tensor::arange(35, (Kind::Int64, tch::Device::Cpu)).view([5, 7]);
    let mask = Tensor::ones([5, 7], (Kind::Int64, tch::Device::Cpu));
    let pos = Tensor::arange(5, (Kind::Int, tch::Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 1, 0, 1]);
    let npz = dir.path().join("r.npz");
    Tensor::write_npz(&[("input_ids", &ids), ("attention_mask", &mask), ("position", &pos), ("labels", &labels)], &npz)
        .unwrap();
    let ds = data::open_with(&npz, &DataSpec::default()).unwrap();
    assert_eq!((ds.len(), ds.labels().unwrap()), (5, vec![0, 1, 1, 0, 1]));
    let b = ds.records(&[3, 1]).unwrap();
    let mut names: Vec<&str> = b.inputs.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["attention_mask", "input_ids", "position"]);
    assert_eq!(ints(b.input("input_ids").unwrap()), (21..28).chain(7..14).collect::<Vec<i64>>());
    assert_eq!(b.input("position").unwrap().kind(), Kind::Int, "dtype kept");
    assert_eq!(ints(b.input("position").unwrap()), [3, 1]);
    assert_eq!(ints(&b.y), [0, 1]);
    let (x, _) = ds.batch(&[4]).unwrap();
    assert_eq!(ints(&x), (28..35).collect::<Vec<i64>>(), "batch gives input_ids");

    // The same arrays in safetensors.
    let st = dir.path().join("r.safetensors");
    Tensor::write_safetensors(&[("input_ids", &ids), ("attention_mask", &mask), ("y", &labels)], &st).unwrap();
    let ds = data::open_with(&st, &DataSpec::default()).unwrap();
    assert_eq!(ints(ds.records(&[2]).unwrap().input("input_ids").unwrap()), (14..21).collect::<Vec<i64>>());
    assert_eq!(ds.labels().unwrap(), [0, 1, 1, 0, 1]);

    // Errors name the file and the array.
    let short = dir.path().join("short.npz");
    Tensor::write_npz(&[("input_ids", &ids), ("attention_mask", &mask.narrow(0, 0, 4)), ("y", &labels)], &short)
        .unwrap();
    let e = err(data::open_with(&short, &DataSpec::default()));
    assert!(e.contains("short.npz") && e.contains("array `attention_mask` is [4, 7]"), "{e}");
    let unlabelled = dir.path().join("u.npz");
    Tensor::write_npz(&[("input_ids", &ids)], &unlabelled).unwrap();
    let e = err(data::open_with(&unlabelled, &DataSpec::default()));
    assert!(e.contains("u.npz: has no labels") && e.contains("`y`"), "{e}");
    let lm = spec(TextOptions { labels_required: false, ..Default::default() });
    assert_eq!(data::open_with(&unlabelled, &lm).unwrap().labels().unwrap(), [0; 5]);

    // A file with `x` reads as before: one unnamed float input.
    let xy = dir.path().join("xy.npz");
    Tensor::write_npz(&[("x", &ids.to_kind(Kind::Int)), ("y", &labels)], &xy).unwrap();
    let b = data::open_with(&xy, &DataSpec::default()).unwrap().records(&[0]).unwrap();
    assert_eq!((b.inputs.len(), b.inputs[0].0.as_str(), b.inputs[0].1.kind()), (1, "", Kind::Float));
}

#[test]
fn forget_selection_works_on_a_text_set() {
    let train: Rc<dyn Dataset> = Rc::new(TextDataset::open(&fx("train.jsonl"), &opts()).unwrap());
    let labels = train.labels().unwrap();
    let split = select_forget(train.clone(), &ForgetBy::Classes(vec![4])).unwrap();
    let want: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 4).collect();
    assert!(!want.is_empty());
    assert_eq!(split.forget_indices, want);
    assert_eq!(split.retain.len() + split.forget.len(), train.len());
    // The forget subset hands out records with every input.
    assert!(split.forget.records(&[0, 1]).unwrap().input("attention_mask").is_some());

    // --forget FILE: some training lines, in another order and format, found by their tokens and label.
    let lines: Vec<&str> = include_str!("../fixtures/text_cls/train.jsonl").lines().collect();
    let dir = tempfile::tempdir().unwrap();
    let pick = [40usize, 3, 17, 200];
    let mut csv = ::csv::Writer::from_path(dir.path().join("f.csv")).unwrap();
    csv.write_record(["label", "text"]).unwrap();
    for &i in &pick {
        let v: serde_json::Value = serde_json::from_str(lines[i]).unwrap();
        csv.write_record([v["label"].to_string(), v["text"].as_str().unwrap().to_string()]).unwrap();
    }
    csv.flush().unwrap();
    for pad_to in [None, Some(128)] {
        let o = TextOptions { pad_to, ..opts() };
        let train: Rc<dyn Dataset> = Rc::new(TextDataset::open(&fx("train.jsonl"), &o).unwrap());
        let forget: Rc<dyn Dataset> = Rc::from(data::open_with(&dir.path().join("f.csv"), &spec(o.clone())).unwrap());
        let split = select_forget(train, &ForgetBy::Samples(forget)).unwrap();
        assert_eq!(split.forget_indices, [3, 17, 40, 200], "pad_to {pad_to:?}");
    }
    // A text that is not in the training set, or the right text with another label, is not found.
    let v: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
    let other = (v["label"].as_i64().unwrap() + 1) % 5;
    let f = write(
        dir.path(),
        "g.jsonl",
        &format!("{}\n{}\n", lines[7], serde_json::json!({"text": v["text"], "label": other})),
    );
    let forget: Rc<dyn Dataset> = Rc::new(TextDataset::open(&f, &opts()).unwrap());
    let e = err(select_forget(train, &ForgetBy::Samples(forget)));
    assert!(e.contains("sample 1 (g.jsonl:2) is not in the training set"), "{e}");
}
