//! String tensors: StringNormalizer, StringConcat, StringSplit, RegexFullMatch, Equal on strings,
//! LabelEncoder (in `label_encoder`), and Constant with string values.
//! Strings live on the CPU as `Value::Str`; nothing here is differentiable (string data has no
//! gradient, and the tensor paths of Equal/Constant are the existing ones).
use super::elementwise::binary;
use super::shape::broadcast_shapes;
use crate::engine::{vop, BoxOp, OpCtx, Registry, Strings, Value, ValueInputs};
use crate::error::Result;
use crate::onnx::{DType, NodeExt};
use regex::Regex;
use std::path::Path;
use tch::Tensor;

mod label_encoder;

pub fn register(r: &mut Registry) {
    r.add("StringNormalizer", 10, string_normalizer);
    r.add("StringConcat", 20, string_concat);
    r.add("StringSplit", 20, string_split);
    r.add("RegexFullMatch", 20, regex_full_match);
    label_encoder::register(r);
}

/// Input `i`, which must be a string tensor.
fn strs<'a>(x: &ValueInputs<'a>, i: usize) -> Result<&'a Strings> {
    match x.req(i)? {
        Value::Str(s) => Ok(s),
        v => Err(x.err(format!("input {i} must be a string tensor, found {}", v.describe()))),
    }
}

fn str_value(dims: Vec<i64>, data: Vec<String>) -> Result<Value> {
    Ok(Value::Str(Strings::new(dims, data)?))
}

/// A CPU tensor of `dims` from row-major data (bool masks, int64 lengths).
fn tensor_of<T: tch::kind::Element>(data: &[T], dims: &[i64]) -> Result<Value> {
    Ok(Value::Tensor(Tensor::f_from_slice(data)?.f_reshape(dims)?))
}

/// For every element of shape `to` (row-major), the flat index of the element of `from` that
/// broadcasting reads.
fn broadcast_index(from: &[i64], to: &[i64]) -> Vec<usize> {
    let off = to.len() - from.len();
    // Strides of `from` aligned to `to`'s axes; 0 where `from` has size 1 (or lacks the axis).
    let mut strides = vec![0usize; to.len()];
    let mut acc = 1usize;
    for (i, &d) in from.iter().enumerate().rev() {
        strides[i + off] = if d == 1 { 0 } else { acc };
        acc *= d as usize;
    }
    let total: i64 = to.iter().product();
    let mut idx = vec![0usize; to.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for ax in (0..to.len()).rev() {
            idx[ax] += 1;
            if (idx[ax] as i64) < to[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// Applies `f` to the broadcast pairs of two string tensors: the output shape and data.
fn zip_strings<T>(x: &ValueInputs, f: impl Fn(&str, &str) -> T) -> Result<(Vec<i64>, Vec<T>)> {
    let (a, b) = (strs(x, 0)?, strs(x, 1)?);
    let dims = broadcast_shapes(&a.dims, &b.dims)
        .ok_or_else(|| x.err(format!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims)))?;
    let (ia, ib) = (broadcast_index(&a.dims, &dims), broadcast_index(&b.dims, &dims));
    let data = ia.iter().zip(&ib).map(|(&i, &j)| f(&a.data[i], &b.data[j])).collect();
    Ok((dims, data))
}

fn string_concat(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| {
        let (dims, data) = zip_strings(x, |a, b| format!("{a}{b}"))?;
        Ok(vec![str_value(dims, data)?])
    })
}

/// Equal: strings compare elementwise (opset 19+); tensors keep the numeric op.
pub(crate) fn equal(ctx: &OpCtx) -> Result<BoxOp> {
    let numeric = binary(ctx, Tensor::f_eq_tensor)?;
    vop(move |x| match (x.get(0), x.get(1)) {
        (Some(Value::Str(_)), _) | (_, Some(Value::Str(_))) => {
            let (dims, data) = zip_strings(x, |a, b| a == b)?;
            Ok(vec![tensor_of(&data, &dims)?])
        }
        _ => numeric.run_values(x),
    })
}

/// Constant: string values (`value_string`, `value_strings`, a string `value` tensor) here, every
/// other form through the tensor builder in `shape`.
pub(crate) fn constant(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let s = if let Some(s) = n.get_s("value_string")? {
        Strings { dims: vec![], data: vec![s] }
    } else if let Some(v) = n.get_strings("value_strings")? {
        Strings { dims: vec![v.len() as i64], data: v }
    } else if let Some(tp) = n.get_t("value")?.filter(|t| t.data_type() == DType::String.onnx_code()) {
        match Value::from_tensor_proto(tp, Path::new(".")).map_err(|e| n.attr_err("value", e.to_string()))? {
            Value::Str(s) => s,
            v => return Err(n.attr_err("value", format!("decoded as {}, not strings", v.describe()))),
        }
    } else {
        return super::shape::constant(ctx);
    };
    vop(move |_| Ok(vec![Value::Str(s.clone())]))
}

/// RegexFullMatch: true where the whole element matches. ONNX specifies RE2 syntax, which the
/// `regex` crate implements (both lack backreferences and lookaround); one difference: here
/// `\w`, `\d`, `\s` and `\b` are Unicode-aware where RE2's are ASCII-only.
fn regex_full_match(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let pat = n.get_s("pattern")?.ok_or_else(|| n.attr_err("pattern", "required attribute is missing"))?;
    let bad = |e: regex::Error| n.attr_err("pattern", format!("not a valid RE2 pattern: {e}"));
    // Validate the pattern alone first, so an unbalanced one cannot pair with the anchors' group.
    Regex::new(&pat).map_err(bad)?;
    let re = Regex::new(&format!(r"\A(?:{pat})\z")).map_err(bad)?;
    vop(move |x| {
        let s = strs(x, 0)?;
        let hits: Vec<bool> = s.data.iter().map(|t| re.is_match(t)).collect();
        Ok(vec![tensor_of(&hits, &s.dims)?])
    })
}

/// Python's `str.split(None, maxsplit)`: runs of whitespace separate, leading whitespace is
/// dropped, and after `max` splits the rest (trailing whitespace included) is one piece.
fn split_whitespace(s: &str, max: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if max == Some(out.len()) {
            out.push(rest.to_string());
            break;
        }
        match rest.find(char::is_whitespace) {
            Some(p) => {
                out.push(rest[..p].to_string());
                rest = rest[p..].trim_start();
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

/// StringSplit → (substrings padded with "" to the longest split, number of substrings).
fn string_split(ctx: &OpCtx) -> Result<BoxOp> {
    let delim = ctx.node.get_s("delimiter")?.filter(|d| !d.is_empty());
    // A negative maxsplit means no limit, as in Python.
    let max = ctx.node.get_i("maxsplit")?.filter(|&m| m >= 0).map(|m| m as usize);
    vop(move |x| {
        let s = strs(x, 0)?;
        let parts: Vec<Vec<String>> = s
            .data
            .iter()
            .map(|t| match (&delim, max) {
                (None, _) => split_whitespace(t, max),
                (Some(d), None) => t.split(d.as_str()).map(String::from).collect(),
                (Some(d), Some(m)) => t.splitn(m + 1, d.as_str()).map(String::from).collect(),
            })
            .collect();
        let width = parts.iter().map(Vec::len).max().unwrap_or(0);
        let lens: Vec<i64> = parts.iter().map(|p| p.len() as i64).collect();
        let mut data = Vec::with_capacity(parts.len() * width);
        for mut p in parts {
            p.resize(width, String::new());
            data.extend(p);
        }
        let dims: Vec<i64> = s.dims.iter().copied().chain([width as i64]).collect();
        Ok(vec![str_value(dims, data)?, tensor_of(&lens, &s.dims)?])
    })
}

/// StringNormalizer on a [C] or [1, C] tensor: drops stopwords, then changes case. When every
/// element is dropped the result is one empty string, shaped [1] or [1, 1].
fn string_normalizer(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let action = n.get_s("case_change_action")?.unwrap_or_else(|| "NONE".into());
    let change: fn(&str) -> String = match action.as_str() {
        "NONE" => str::to_string,
        "LOWER" => str::to_lowercase,
        "UPPER" => str::to_uppercase,
        a => return Err(n.attr_err("case_change_action", format!("'{a}' is not LOWER, UPPER or NONE"))),
    };
    let locale = n.get_s("locale")?.unwrap_or_default();
    // Case mapping here is Unicode's default, which is what English locales use.
    if !(locale.is_empty() || locale.starts_with("en") || locale == "C" || locale == "POSIX") {
        return Err(n.attr_err("locale", format!("locale '{locale}' is unsupported (only English locales)")));
    }
    let sensitive = n.get_i("is_case_sensitive")?.unwrap_or(0) != 0;
    let fold = move |w: &str| if sensitive { w.to_string() } else { w.to_lowercase() };
    let stops: std::collections::HashSet<String> =
        n.get_strings("stopwords")?.unwrap_or_default().iter().map(|w| fold(w)).collect();
    vop(move |x| {
        let s = strs(x, 0)?;
        let row = match s.dims[..] {
            [_] => false,
            [1, _] => true,
            _ => return Err(x.err(format!("input must be [C] or [1, C], got {:?}", s.dims))),
        };
        let mut kept: Vec<String> = s.data.iter().filter(|w| !stops.contains(&fold(w))).map(|w| change(w)).collect();
        if kept.is_empty() {
            kept.push(String::new());
        }
        let c = kept.len() as i64;
        Ok(vec![str_value(if row { vec![1, c] } else { vec![c] }, kept)?])
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::onnx::build::{attr_int, attr_string, node};
    use crate::onnx::proto::{AttributeProto, NodeProto};

    /// Builds `n` at `opset` with the standard registry and runs it on `inputs`.
    pub fn run(n: &NodeProto, domain: &str, opset: i64, inputs: &[Value]) -> Result<Vec<Value>> {
        let build = crate::engine::Registry::standard().find(domain, n.op_type(), opset).expect("registered");
        let op = build(&OpCtx::new(n, opset))?;
        op.run_values(&ValueInputs { node: n, vals: inputs.iter().map(Some).collect() })
    }

    pub fn strings(dims: &[i64], v: &[&str]) -> Value {
        Value::Str(Strings::new(dims.to_vec(), v.iter().map(|s| s.to_string()).collect()).unwrap())
    }

    pub fn attr_strings(name: &str, v: &[&str]) -> AttributeProto {
        let strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        AttributeProto { name: Some(name.into()), r#type: Some(8), strings, ..Default::default() }
    }

    fn as_strings(v: &Value) -> &Strings {
        match v {
            Value::Str(s) => s,
            v => panic!("not strings: {}", v.describe()),
        }
    }

    #[test]
    fn normalizer_drops_case_insensitively_and_keeps_the_row_shape() {
        let mut n = node("StringNormalizer", &["x"], &["y"]);
        n.attribute = vec![attr_strings("stopwords", &["MONDAY"]), attr_string("case_change_action", "LOWER")];
        let y = run(&n, "", 10, &[strings(&[1, 2], &["Monday", "monday"])]).unwrap();
        assert_eq!(as_strings(&y[0]), &Strings { dims: vec![1, 1], data: vec![String::new()] });
        n.attribute.push(attr_int("is_case_sensitive", 1));
        let y = run(&n, "", 10, &[strings(&[2], &["Monday", "MONDAY"])]).unwrap();
        assert_eq!(as_strings(&y[0]).data, ["monday"]);
        n.attribute.push(attr_string("locale", "tr_TR"));
        assert!(run(&n, "", 10, &[strings(&[1], &["x"])]).is_err());
    }

    #[test]
    fn constant_strings_and_identity_pass_through() {
        let mut n = node("Constant", &[], &["y"]);
        n.attribute = vec![attr_string("value_string", "héllo")];
        let y = run(&n, "", 12, &[]).unwrap();
        assert_eq!(as_strings(&y[0]), &Strings { dims: vec![], data: vec!["héllo".into()] });
        let id = node("Identity", &["x"], &["y"]);
        let y = run(&id, "", 16, &[Value::Opt(None)]).unwrap();
        assert!(matches!(y[0], Value::Opt(None)));
    }

    #[test]
    fn regex_is_anchored_and_rejects_bad_patterns() {
        let mut n = node("RegexFullMatch", &["x"], &["y"]);
        n.attribute = vec![attr_string("pattern", "a|b")];
        let y = run(&n, "", 20, &[strings(&[3], &["a", "ab", "b"])]).unwrap();
        let got = Vec::<bool>::try_from(y[0].as_tensor().unwrap()).unwrap();
        assert_eq!(got, [true, false, true]);
        n.attribute = vec![attr_string("pattern", "a)(b")];
        assert!(run(&n, "", 20, &[]).is_err());
    }

    #[test]
    fn broadcasting_indexes() {
        assert_eq!(broadcast_shapes(&[2, 1], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2], &[3]), None);
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[], &[2]), vec![0, 0]);
        assert!(broadcast_index(&[0], &[0]).is_empty());
    }

    #[test]
    fn whitespace_split_follows_python() {
        assert_eq!(split_whitespace("  a b  c ", None), ["a", "b", "c"]);
        assert_eq!(split_whitespace(" a b  c ", Some(1)), ["a", "b  c "]);
        assert_eq!(split_whitespace("a  ", Some(1)), ["a"]);
        assert_eq!(split_whitespace("  a b", Some(0)), ["a b"]);
        assert!(split_whitespace("   ", None).is_empty());
    }
}
