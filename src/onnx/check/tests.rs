//! One model onnxruntime loads, and one mutation per rule that it refuses (each tried against
//! onnxruntime 1.31: see the module's documentation).
use super::check;
use crate::onnx::build::{attr_int, f32_init, node, value};
use crate::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, ValueInfoProto};
use crate::onnx::{DType, OnnxModel};
use std::path::PathBuf;

/// y = relu(x + w), x and w float [2, 3].
fn base() -> OnnxModel {
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![node("Add", &["x", "w"], &["z"]), node("Relu", &["z"], &["y"])],
        initializer: vec![f32_init("w", &[2, 3], &[1.0; 6])],
        input: vec![value("x", DType::F32, &[2, 3])],
        output: vec![value("y", DType::F32, &[2, 3])],
        ..Default::default()
    };
    let proto = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    };
    OnnxModel { proto, path: PathBuf::from("m.onnx"), dir: std::env::temp_dir() }
}

/// The reason `edit` makes `base()` refused (panics if it is accepted).
fn refused(edit: impl FnOnce(&mut ModelProto)) -> String {
    let mut m = base();
    edit(&mut m.proto);
    check(&m).expect_err("accepted")
}

fn accepted(edit: impl FnOnce(&mut ModelProto)) {
    let mut m = base();
    edit(&mut m.proto);
    if let Err(e) = check(&m) {
        panic!("refused: {e}");
    }
}

fn g(p: &mut ModelProto) -> &mut GraphProto {
    p.graph.as_mut().unwrap()
}

#[test]
fn a_valid_model_and_what_onnxruntime_also_loads_pass() {
    accepted(|_| {});
    // Duplicate graph outputs, unsorted nodes, an IR version of 0, value_info contradicting a
    // graph input, and a graph input repeating an initializer of its type all load in onnxruntime.
    accepted(|p| {
        let o = g(p).output[0].clone();
        g(p).output.push(o)
    });
    accepted(|p| g(p).node.reverse());
    accepted(|p| p.ir_version = Some(0));
    accepted(|p| g(p).value_info.push(value("x", DType::I64, &[2, 3])));
    accepted(|p| g(p).input.push(value("w", DType::F32, &[2, 3])));
    accepted(|p| g(p).value_info.push(value("z", DType::F32, &[9, 9, 9])));
    // value_info that is not about an inner value is ignored by onnxruntime, whatever it says.
    for name in ["x", "w", "y", "unused"] {
        accepted(|p| {
            let mut v = value(name, DType::F32, &[]);
            set_elem(&mut v, 999);
            g(p).value_info.push(v);
            g(p).value_info.push(value(name, DType::I64, &[]));
        });
    }
}

#[test]
fn two_nodes_producing_one_value_are_refused() {
    let e = refused(|p| {
        g(p).node[1].output[0] = "z".into();
        g(p).output[0].name = Some("z".into());
    });
    assert!(e.contains("output 'z' is already produced by") && e.contains("Relu"), "{e}");
    let e = refused(|p| g(p).node[0].output[0] = "x".into());
    assert!(e.contains("'x' is already a graph input"), "{e}");
    let e = refused(|p| {
        let i = g(p).input[0].clone();
        g(p).input.push(i)
    });
    assert!(e.contains("graph input 'x' is declared twice"), "{e}");
    let e = refused(|p| {
        g(p).node[0].name = Some("n".into());
        g(p).node[1].name = Some("n".into());
    });
    assert!(e.contains("two nodes are named 'n'"), "{e}");
}

#[test]
fn undefined_values_and_cycles_are_refused() {
    let e = refused(|p| g(p).node[1].input[0] = "nope".into());
    assert!(e.contains("node 'Relu_y' (Relu): input 'nope' is neither"), "{e}");
    let e = refused(|p| g(p).output[0].name = Some("nope".into()));
    assert!(e.contains("graph output 'nope'"), "{e}");
    let e = refused(|p| g(p).node[0].input[1] = "y".into());
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn unknown_element_types_are_refused() {
    let e = refused(|p| g(p).initializer[0].data_type = Some(999));
    assert!(e.contains("initializer 'w': unknown element type 999"), "{e}");
    let e = refused(|p| g(p).initializer[0].data_type = Some(0));
    assert!(e.contains("UNDEFINED"), "{e}");
    for v in ["x", "y", "z"] {
        let e = refused(|p| {
            let mut vi = value(v, DType::F32, &[2, 3]);
            set_elem(&mut vi, 999);
            match v {
                "x" => g(p).input[0] = vi,
                "y" => g(p).output[0] = vi,
                _ => g(p).value_info.push(vi),
            }
        });
        assert!(e.contains(&format!("value '{v}' has an unknown element type 999")), "{e}");
    }
}

fn set_elem(v: &mut ValueInfoProto, code: i32) {
    use crate::onnx::proto::type_proto::Value;
    if let Some(Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = Some(code);
    }
}

#[test]
fn duplicate_and_nameless_attributes_are_refused() {
    let e = refused(|p| g(p).node[1].attribute.extend([attr_int("alpha", 1), attr_int("alpha", 2)]));
    assert!(e.contains("attribute 'alpha' appears more than once"), "{e}");
    let e = refused(|p| g(p).node[1].attribute.push(attr_int("", 1)));
    assert!(e.contains("empty name"), "{e}");
}

#[test]
fn ir_versions_and_opsets_out_of_range_are_refused() {
    assert!(refused(|p| p.ir_version = None).contains("no IR version"));
    assert!(refused(|p| p.ir_version = Some(14)).contains("IR version 14 is newer"));
    for v in [0, -1, 28, 9999] {
        let e = refused(|p| p.opset_import[0].version = Some(v));
        assert!(e.contains(&format!("version {v} is outside")), "{e}");
    }
    assert!(refused(|p| p.opset_import.clear()).contains("imports no opset"));
    let e = refused(|p| g(p).node[0].domain = Some("com.example".into()));
    assert!(e.contains("domain 'com.example' is not imported"), "{e}");
    accepted(|p| p.opset_import.push(OperatorSetIdProto { domain: Some("com.example".into()), version: Some(99) }));
}

#[test]
fn declared_types_that_contradict_the_graph_are_refused() {
    let e = refused(|p| g(p).value_info.push(value("z", DType::F16, &[2, 3])));
    assert!(e.contains("node 'Add_z' (Add): produces 'z' as f32 but its value_info declares f16"), "{e}");
    let e = refused(|p| set_elem(&mut g(p).output[0], DType::I64.onnx_code()));
    assert!(e.contains("produces 'y' as f32 but its graph output declares i64"), "{e}");
    let e = refused(|p| set_elem(&mut g(p).input[0], DType::I64.onnx_code()));
    assert!(e.contains("inputs 'x' (i64) and 'w' (f32) must have one element type"), "{e}");
    let e = refused(|p| {
        g(p).node[1].op_type = Some("Sigmoid".into());
        g(p).node[0].op_type = Some("Equal".into());
    });
    assert!(e.contains("node 'Relu_y' (Sigmoid): input 'z' is bool; Sigmoid takes float tensors only"), "{e}");
    let e = refused(|p| {
        g(p).node[0].op_type = Some("Conv".into());
        g(p).initializer[0].data_type = Some(DType::I8.onnx_code());
        g(p).initializer[0].raw_data = Some(vec![0; 6]);
    });
    assert!(e.contains("(Conv): input 'w' is i8; Conv takes float tensors only"), "{e}");
    let e = refused(|p| g(p).input.push(value("w", DType::I64, &[2, 3])));
    assert!(e.contains("initializer 'w' holds f32 but graph input 'w' declares i64"), "{e}");
}

#[test]
fn missing_or_short_external_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let external = |loc: &'static str| {
        move |p: &mut ModelProto| {
            let t = &mut g(p).initializer[0];
            t.raw_data = None;
            t.data_location = Some(1);
            t.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some(loc.into()) }];
        }
    };
    let mut m = base();
    m.dir = dir.path().to_path_buf();
    external("missing.bin")(&mut m.proto);
    let e = check(&m).unwrap_err();
    assert!(e.contains("initializer 'w': external data file") && e.contains("missing.bin"), "{e}");
    std::fs::write(dir.path().join("short.bin"), [0u8; 8]).unwrap();
    let mut m = base();
    m.dir = dir.path().to_path_buf();
    external("short.bin")(&mut m.proto);
    let e = check(&m).unwrap_err();
    assert!(e.contains("holds 8 bytes; offset 0 + length 24 is past its end"), "{e}");
    std::fs::write(dir.path().join("ok.bin"), [0u8; 24]).unwrap();
    let mut m = base();
    m.dir = dir.path().to_path_buf();
    external("ok.bin")(&mut m.proto);
    check(&m).unwrap();
    let mut m = base();
    m.dir = dir.path().to_path_buf();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    external("sub")(&mut m.proto);
    assert!(check(&m).unwrap_err().contains("is not a regular file"));
}

#[test]
fn subgraphs_see_outer_values_and_are_checked_too() {
    use crate::onnx::proto::AttributeProto;
    let body = |read: &str| GraphProto {
        name: Some("then".into()),
        node: vec![node("Identity", &[read], &["t"])],
        output: vec![value("t", DType::F32, &[2, 3])],
        ..Default::default()
    };
    let with_if = |read: &'static str| {
        move |p: &mut ModelProto| {
            let mut n = node("If", &["c"], &["y"]);
            for b in ["then_branch", "else_branch"] {
                n.attribute.push(AttributeProto {
                    name: Some(b.into()),
                    r#type: Some(5),
                    g: Some(body(read)),
                    ..Default::default()
                });
            }
            g(p).node[1] = n;
            g(p).input.push(value("c", DType::Bool, &[]));
        }
    };
    accepted(with_if("z"));
    let e = refused(with_if("nope"));
    assert!(e.contains("node 'If_y' (If): subgraph 'then_branch': node 'Identity_t' (Identity): input 'nope'"), "{e}");
}
