//! Model I/O: load→save round trips preserve the model exactly; external data keeps its layout;
//! replacements change only the named initializers; bad input gets clear errors.
use prost::Message;
use semu::onnx::{OnnxModel, TensorData};
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn all_suite_models() -> Vec<PathBuf> {
    let data = semu::conformance::data_root().expect("onnx test data: run `make setup`");
    let mut v: Vec<PathBuf> = semu::conformance::node_cases(&data).into_iter().map(|d| d.join("model.onnx")).collect();
    for e in std::fs::read_dir(data.join("light")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "onnx") {
            v.push(e.path());
        }
    }
    for f in
        ["digits/model.onnx", "digits_f16/model.onnx", "external/single/model.onnx", "external/per_tensor/model.onnx"]
    {
        v.push(root().join("fixtures").join(f));
    }
    v
}

/// Every initializer decoded, by name (external data read from the model's folder).
fn tensors(m: &OnnxModel) -> HashMap<String, TensorData> {
    m.graph().initializer.iter().map(|t| (t.name().to_string(), m.tensor(t).unwrap())).collect()
}

#[test]
fn round_trip_preserves_every_suite_model() {
    let out = tempfile::tempdir().unwrap();
    let models = all_suite_models();
    assert!(models.len() > 1000, "expected the onnx node suite, found {} models", models.len());
    let mut byte_identical = 0;
    for (i, path) in models.iter().enumerate() {
        let m = OnnxModel::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dst = out.path().join(format!("m{i}")).join("model.onnx");
        m.save(&dst, &HashMap::new()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = OnnxModel::load(&dst).unwrap();
        // Compared as encodings: exact, and NaN-safe (float attributes may hold NaN).
        assert!(back.proto.encode_to_vec() == m.proto.encode_to_vec(), "{}: proto changed", path.display());
        assert_eq!(tensors(&back), tensors(&m), "{}: tensor bytes changed", path.display());
        if std::fs::read(path).unwrap() == std::fs::read(&dst).unwrap() {
            byte_identical += 1;
        }
    }
    println!("{} models round-tripped; {byte_identical} byte-identical files", models.len());
}

#[test]
fn external_data_keeps_its_layout_and_replacement_lands_in_the_data_file() {
    for layout in ["single", "per_tensor"] {
        let src = root().join("fixtures/external").join(layout).join("model.onnx");
        let m = OnnxModel::load(&src).unwrap();
        let name = "classifier.3.weight";
        let t = m.tensor(m.initializer(name).unwrap()).unwrap();
        let new = t.with_f32_values(&vec![0.5; t.numel()]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dst = out.path().join("model.onnx");
        let saved = m.save(&dst, &HashMap::from([(name.to_string(), new.clone())])).unwrap();
        let src_files = std::fs::read_dir(src.parent().unwrap()).unwrap().count();
        let dst_files = std::fs::read_dir(out.path()).unwrap().count();
        assert_eq!(dst_files, src_files, "{layout}: same number of files beside the model");
        assert_eq!(saved.files.len(), dst_files);
        let back = OnnxModel::load(&dst).unwrap();
        // Same external references (location, offset, length) as the input.
        for (a, b) in back.graph().initializer.iter().zip(&m.graph().initializer) {
            assert_eq!(a.external_data, b.external_data, "{layout}: {}", a.name());
            assert!(a.raw_data.is_none(), "{layout}: {} moved inline", a.name());
        }
        let mut want = tensors(&m);
        want.insert(name.into(), new);
        assert_eq!(tensors(&back), want, "{layout}: only the replaced tensor changed");
        // The input is untouched.
        assert_eq!(tensors(&OnnxModel::load(&src).unwrap())[name], t);
    }
}

#[test]
fn saving_beside_the_input_never_overwrites_its_external_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = root().join("fixtures/external/single");
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(src_dir.join(f), tmp.path().join(f)).unwrap();
    }
    let before = std::fs::read(tmp.path().join("model.onnx.data")).unwrap();
    let m = OnnxModel::load(tmp.path().join("model.onnx")).unwrap();
    let name = "classifier.1.bias";
    let t = m.tensor(m.initializer(name).unwrap()).unwrap();
    let new = t.with_f32_values(&vec![1.0; t.numel()]).unwrap();
    m.save(&tmp.path().join("out.onnx"), &HashMap::from([(name.to_string(), new.clone())])).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("model.onnx.data")).unwrap(), before);
    let back = OnnxModel::load(tmp.path().join("out.onnx")).unwrap();
    assert_eq!(back.tensor(back.initializer(name).unwrap()).unwrap(), new);
}

/// The model given by a bare file name (its folder is ""), as `cd dir && semu unlearn --model
/// unet.onnx --out u.onnx` gives it: the output's data used to be committed over the input's
/// `unet.onnx.data` (found on a Stable Diffusion-sized export, README "Stable Diffusion 1.x scale").
#[test]
fn saving_beside_a_model_named_without_folder_never_overwrites_its_external_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = root().join("fixtures/external/single");
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(src_dir.join(f), tmp.path().join(f)).unwrap();
    }
    let before = std::fs::read(tmp.path().join("model.onnx.data")).unwrap();
    // Every other test here uses absolute paths, so changing this process's folder is safe.
    std::env::set_current_dir(tmp.path()).unwrap();
    let m = OnnxModel::load("model.onnx").unwrap();
    let name = "classifier.1.bias";
    let t = m.tensor(m.initializer(name).unwrap()).unwrap();
    let new = t.with_f32_values(&vec![1.0; t.numel()]).unwrap();
    m.save(std::path::Path::new("out.onnx"), &HashMap::from([(name.to_string(), new.clone())])).unwrap();
    let after = std::fs::read(tmp.path().join("model.onnx.data")).unwrap();
    assert!(after == before, "the input's model.onnx.data was overwritten by the output's");
    let back = OnnxModel::load(tmp.path().join("out.onnx")).unwrap();
    assert_eq!(back.tensor(back.initializer(name).unwrap()).unwrap(), new);
}

/// Two exports to one folder: the second used to commit its data over the first's (same file
/// name), so `a.onnx` silently held `b.onnx`'s weights; an export redone keeps its own file.
#[test]
fn a_second_export_to_one_folder_keeps_the_first_exports_data() {
    let tmp = tempfile::tempdir().unwrap();
    let m = OnnxModel::load(root().join("fixtures/external/single/model.onnx")).unwrap();
    let name = "classifier.1.bias";
    let t = m.tensor(m.initializer(name).unwrap()).unwrap();
    let save = |out: &str, v: f32| {
        let new = t.with_f32_values(&vec![v; t.numel()]).unwrap();
        m.save(&tmp.path().join(out), &HashMap::from([(name.to_string(), new.clone())])).unwrap();
        new
    };
    let value = |out: &str| {
        let back = OnnxModel::load(tmp.path().join(out)).unwrap();
        back.tensor(back.initializer(name).unwrap()).unwrap()
    };
    let a = save("a.onnx", 1.0);
    let b = save("b.onnx", 2.0);
    assert_eq!(value("a.onnx"), a, "a.onnx's data was overwritten by b.onnx's");
    assert_eq!(value("b.onnx"), b);
    let a2 = save("a.onnx", 3.0);
    assert_eq!(value("a.onnx"), a2);
    assert_eq!(value("b.onnx"), b);
    let mut files: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    files.sort();
    assert_eq!(files, ["a.onnx", "b.onnx", "b.onnx.model.onnx.data", "model.onnx.data"]);
}

#[test]
fn replacement_with_wrong_shape_is_refused_and_nothing_is_written() {
    let m = OnnxModel::load(root().join("fixtures/digits/model.onnx")).unwrap();
    let t = m.tensor(m.initializer("classifier.3.bias").unwrap()).unwrap();
    let bad = TensorData { dims: vec![t.numel() as i64 - 1], ..t.clone() };
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("x.onnx");
    let err = m.save(&dst, &HashMap::from([("classifier.3.bias".into(), bad)])).unwrap_err().to_string();
    assert!(err.contains("classifier.3.bias"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no partial output");
    let err = m.save(&dst, &HashMap::from([("nope".into(), t)])).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn f16_initializers_keep_their_dtype_through_replacement() {
    let m = OnnxModel::load(root().join("fixtures/digits_f16/model.onnx")).unwrap();
    let init = m.graph().initializer.iter().find(|t| t.data_type() == 10).expect("an f16 initializer");
    let t = m.tensor(init).unwrap();
    let vals: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|v| v * 2.0).collect();
    let new = t.with_f32_values(&vals).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("m.onnx");
    m.save(&dst, &HashMap::from([(init.name().to_string(), new.clone())])).unwrap();
    let back = OnnxModel::load(&dst).unwrap();
    let b = back.initializer(init.name()).unwrap();
    assert_eq!(b.data_type(), 10);
    assert_eq!(back.tensor(b).unwrap(), new);
}

#[test]
fn bad_files_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff not a protobuf").unwrap();
    let e = OnnxModel::load(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.onnx") && e.contains("not a valid ONNX model"), "{e}");
    let e = OnnxModel::load(tmp.path().join("missing.onnx")).unwrap_err().to_string();
    assert!(e.contains("missing.onnx"), "{e}");
    // External data pointing past the end of its file.
    let mut m = OnnxModel::load(root().join("fixtures/external/single/model.onnx")).unwrap().proto;
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    for kv in t.external_data.iter_mut().filter(|kv| kv.key() == "offset") {
        kv.value = Some("99999999".into());
    }
    let name = t.name().to_string();
    std::fs::copy(root().join("fixtures/external/single/model.onnx.data"), tmp.path().join("model.onnx.data")).unwrap();
    let p = tmp.path().join("model.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    // Refused at load (src/onnx/check); reading the tensor of an unchecked model fails too.
    let e = OnnxModel::load(&p).unwrap_err().to_string();
    assert!(e.contains(&format!("initializer '{name}'")) && e.contains("past its end"), "{e}");
    let m = OnnxModel::load_unchecked(&p).unwrap();
    let e = m.tensor(m.initializer(&name).unwrap()).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("past the file's end"), "{e}");
}
