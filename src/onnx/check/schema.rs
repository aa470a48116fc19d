//! Each node against its op's schema in force at the model's opset (from the onnx package,
//! written by `tools/make_op_schemas.py`): input and output counts, attribute names and types,
//! required attributes — what the ONNX checker and onnxruntime refuse. Ops the standard does not
//! define (vendor domains, ops newer than the model's opset) are left to the engine's registry.
use crate::onnx::proto::NodeProto;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct File {
    ops: HashMap<String, Vec<Version>>,
}

/// since, min/max inputs, min/max outputs, attributes (type code, required).
#[derive(serde::Deserialize)]
struct Version(i64, i64, i64, i64, i64, BTreeMap<String, (i32, bool)>);

fn schemas() -> &'static HashMap<String, Vec<Version>> {
    static S: OnceLock<HashMap<String, Vec<Version>>> = OnceLock::new();
    S.get_or_init(|| {
        let f: File = serde_json::from_str(include_str!("schemas.json")).expect("schemas.json is generated, valid");
        f.ops
    })
}

fn attr_type(code: i32) -> &'static str {
    const NAMES: [&str; 15] = [
        "UNDEFINED",
        "FLOAT",
        "INT",
        "STRING",
        "TENSOR",
        "GRAPH",
        "FLOATS",
        "INTS",
        "STRINGS",
        "TENSORS",
        "GRAPHS",
        "SPARSE_TENSOR",
        "SPARSE_TENSORS",
        "TYPE_PROTO",
        "TYPE_PROTOS",
    ];
    NAMES.get(code as usize).copied().unwrap_or("an unknown type")
}

fn range(lo: i64, hi: i64) -> String {
    match (lo, hi) {
        (lo, hi) if lo == hi => format!("{lo}"),
        (lo, i64::MAX) | (lo, 2147483647) => format!("{lo} or more"),
        (lo, hi) => format!("{lo} to {hi}"),
    }
}

/// `n` (in `domain`, normalised) against the schema in force at `opset`.
pub fn check_node(n: &NodeProto, domain: &str, opset: i64) -> Result<(), String> {
    let op = n.op_type();
    let Some(history) = schemas().get(&format!("{domain}|{op}")) else { return Ok(()) };
    let Some(Version(since, min_in, max_in, min_out, max_out, attrs)) = history.iter().rev().find(|v| v.0 <= opset)
    else {
        return Ok(());
    };
    let at = format!("{op} (opset {since})");
    let (ins, outs) = (n.input.len() as i64, n.output.len() as i64);
    if !(*min_in..=*max_in).contains(&ins) {
        return Err(format!("has {ins} inputs; {at} takes {}", range(*min_in, *max_in)));
    }
    if !(*min_out..=*max_out).contains(&outs) {
        return Err(format!("has {outs} outputs; {at} gives {}", range(*min_out, *max_out)));
    }
    for a in &n.attribute {
        if a.ref_attr_name.is_some() {
            continue; // a function body's reference to its caller's attribute
        }
        let given = a.r#type.unwrap_or(0); // 0: unset, as old exporters leave it
        match attrs.get(a.name()) {
            None => return Err(format!("attribute '{}' is not one of {at}'s", a.name())),
            Some((ty, _)) if given != 0 && given != *ty => {
                return Err(format!("attribute '{}' is {}; {at} takes {}", a.name(), attr_type(given), attr_type(*ty)))
            }
            Some(_) => {}
        }
    }
    if let Some((name, _)) =
        attrs.iter().find(|(name, (_, req))| *req && !n.attribute.iter().any(|a| a.name() == *name))
    {
        return Err(format!("lacks attribute '{name}', which {at} requires"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{attr_int, attr_string, node};

    #[test]
    fn counts_names_types_and_required_attributes() {
        let conv = node("Conv", &["x", "w"], &["y"]);
        assert_eq!(check_node(&conv, "", 13), Ok(()));
        let e = check_node(&node("Conv", &["x"], &["y"]), "", 13).unwrap_err();
        assert_eq!(e, "has 1 inputs; Conv (opset 11) takes 2 to 3");
        let mut c = conv.clone();
        c.attribute.push(attr_int("colour", 1));
        assert!(check_node(&c, "", 13).unwrap_err().contains("'colour' is not one of Conv (opset 11)'s"));
        let mut c = conv.clone();
        c.attribute.push(attr_string("group", "two"));
        assert!(check_node(&c, "", 13).unwrap_err().contains("'group' is STRING; Conv (opset 11) takes INT"));
        let e = check_node(&node("Cast", &["x"], &["y"]), "", 13).unwrap_err();
        assert!(e.contains("lacks attribute 'to'"), "{e}");
        let e = check_node(&node("Concat", &["a", "b"], &["y", "z"]), "", 13).unwrap_err();
        assert!(e.contains("has 2 outputs; Concat (opset 13) gives 1"), "{e}");
        // Vendor ops and ops newer than the opset are left to the registry.
        assert_eq!(check_node(&node("FusedMatMul", &["a"], &["y"]), "com.microsoft", 1), Ok(()));
        assert_eq!(check_node(&node("Gelu", &[], &[]), "", 13), Ok(()));
    }
}
