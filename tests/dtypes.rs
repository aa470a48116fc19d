//! ONNX's narrow element types: float8 (4 kinds), float4 e2m1, e8m0, int4/uint4, int2/uint2.
//! Packing round trips (odd element counts included), exact decoding, Cast's saturate / NaN /
//! Inf rules per float8 type against hand-checked values, and byte-identical model saving.
use prost::Message;
use semu::engine::convert::{from_tensor, to_tensor};
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::build::{attr_int, attr_string, node, value, write};
use semu::onnx::dtype::{e8m0_code, f4e2m1_code, narrow_value, pack_codes, unpack_codes, E8m0Round};
use semu::onnx::proto::TensorProto;
use semu::onnx::{DType, OnnxModel, TensorData};
use std::collections::HashMap;
use tch::{Kind, Tensor};

const FLOAT8: [DType; 4] = [DType::F8E4M3FN, DType::F8E4M3FNUZ, DType::F8E5M2, DType::F8E5M2FNUZ];
const SUB_BYTE: [DType; 5] = [DType::I4, DType::U4, DType::F4E2M1, DType::I2, DType::U2];

/// Same value, NaN equal to NaN, and -0 distinct from +0.
fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn assert_values(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(same(*g, *w), "{what}: element {i} is {g}, expected {w}");
    }
}

#[test]
fn codes_and_sizes_match_onnx_proto() {
    let codes = [
        (DType::F8E4M3FN, 17),
        (DType::F8E4M3FNUZ, 18),
        (DType::F8E5M2, 19),
        (DType::F8E5M2FNUZ, 20),
        (DType::U4, 21),
        (DType::I4, 22),
        (DType::F4E2M1, 23),
        (DType::F8E8M0, 24),
        (DType::U2, 25),
        (DType::I2, 26),
    ];
    for (d, c) in codes {
        assert_eq!(d.onnx_code(), c);
        assert_eq!(DType::from_onnx(c).unwrap(), d);
    }
    assert!(DType::from_onnx(27).is_err() && DType::from_onnx(0).is_err());
    assert_eq!(DType::F8E5M2.size(), Some(1));
    assert_eq!(DType::I4.size(), None);
    assert_eq!(DType::I4.byte_len(5), Some(3));
    assert_eq!(DType::U2.byte_len(5), Some(2));
    assert_eq!(DType::F8E8M0.byte_len(5), Some(5));
}

#[test]
fn sub_byte_types_pack_low_bits_first() {
    // 4-bit: [1, 2, 3] → 0x21, 0x03; 2-bit: [1, 2, 3, 0, 1] → 0b00_11_10_01, 0x01.
    assert_eq!(pack_codes(DType::U4, &[1, 2, 3]), [0x21, 0x03]);
    assert_eq!(pack_codes(DType::U2, &[1, 2, 3, 0, 1]), [0x39, 0x01]);
    assert_eq!(unpack_codes(DType::U2, &[0x39, 0x01], 5), [1, 2, 3, 0, 1]);
    let int4: Vec<f32> = [0x7u8, 0x8, 0xF, 0x0].iter().map(|&c| narrow_value(DType::I4, c)).collect();
    assert_eq!(int4, [7.0, -8.0, -1.0, 0.0]);
    let int2: Vec<f32> = [0u8, 1, 2, 3].iter().map(|&c| narrow_value(DType::I2, c)).collect();
    assert_eq!(int2, [0.0, 1.0, -2.0, -1.0]);
    let f4: Vec<f32> = (0u8..16).map(|c| narrow_value(DType::F4E2M1, c)).collect();
    let mags = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let want: Vec<f32> = mags.iter().copied().chain(mags.iter().map(|m| -m)).collect();
    assert_values(&f4, &want, "float4 codes");
}

#[test]
fn every_code_round_trips_through_libtorch_with_odd_counts() {
    let all: Vec<DType> = SUB_BYTE.iter().chain(&FLOAT8).copied().chain([DType::F8E8M0]).collect();
    for d in all {
        let all_codes: Vec<u8> = (0..1u16 << d.bits().unwrap()).map(|c| c as u8).collect();
        for n in [1, 2, 3, 5, 7, 9, 255, 256, 257] {
            let codes: Vec<u8> = all_codes.iter().copied().cycle().take(n).collect();
            let dims = vec![n as i64];
            let data = TensorData { dtype: d, dims: dims.clone(), bytes: pack_codes(d, &codes) };
            assert_eq!(data.bytes.len(), d.byte_len(n).unwrap());
            let t = to_tensor(&data).unwrap();
            assert_eq!(t.size(), dims);
            let back = from_tensor(&t, d).unwrap();
            // Float8 NaNs keep their bits here: libtorch holds the bytes as they are.
            assert_eq!(back, data, "{d} with {n} elements");
        }
    }
}

#[test]
fn float8_decoding_is_exact_and_agrees_with_libtorch() {
    let hand = [
        (DType::F8E4M3FN, [(0x7E, 448.0), (0x01, 2f32.powi(-9)), (0x38, 1.0), (0xFE, -448.0), (0x7F, f32::NAN)]),
        (DType::F8E4M3FNUZ, [(0x7F, 240.0), (0x01, 2f32.powi(-10)), (0x40, 1.0), (0x80, f32::NAN), (0xFF, -240.0)]),
        (
            DType::F8E5M2,
            [
                (0x7B, 57344.0),
                (0x01, 2f32.powi(-16)),
                (0x7C, f32::INFINITY),
                (0xFC, f32::NEG_INFINITY),
                (0x7D, f32::NAN),
            ],
        ),
        (DType::F8E5M2FNUZ, [(0x7F, 57344.0), (0x01, 2f32.powi(-17)), (0x40, 1.0), (0x80, f32::NAN), (0x00, 0.0)]),
        (DType::F8E8M0, [(0, 2f32.powi(-127)), (127, 1.0), (128, 2.0), (254, 2f32.powi(127)), (255, f32::NAN)]),
    ];
    for (d, pairs) in hand {
        for (c, v) in pairs {
            assert!(same(narrow_value(d, c), v), "{d} code {c:#x}: {} != {v}", narrow_value(d, c));
        }
    }
    for d in FLOAT8 {
        let codes: Vec<u8> = (0..=255).collect();
        let t = to_tensor(&TensorData { dtype: d, dims: vec![256], bytes: codes.clone() }).unwrap();
        let torch = Vec::<f32>::try_from(t.to_kind(Kind::Float)).unwrap();
        let ours: Vec<f32> = codes.iter().map(|&c| narrow_value(d, c)).collect();
        assert_values(&torch, &ours, &format!("{d} decoding"));
    }
}

/// Runs `Cast(x: float32) -> to` with extra attributes and decodes the result's values.
fn cast(x: &[f32], to: DType, attrs: Vec<semu::onnx::proto::AttributeProto>, opset: i64) -> Vec<f32> {
    let mut n = node("Cast", &["x"], &["y"]);
    n.attribute = [attr_int("to", to.onnx_code() as i64)].into_iter().chain(attrs).collect();
    let dims = [x.len() as i64];
    let (_dir, path) = write(vec![n], vec![], vec![value("x", DType::F32, &dims)], vec![value("y", to, &dims)], opset);
    let m = OnnxModel::load(&path).unwrap();
    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
    let y = plan.run(&HashMap::from([("x".to_string(), Tensor::from_slice(x))])).unwrap().remove(0);
    from_tensor(&y, to).unwrap().narrow_values().unwrap()
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

#[test]
fn cast_to_float8_follows_the_saturate_tables() {
    // 0, -0, NaN, Inf, -Inf, far out of range, and a value just past the largest finite one.
    let x = [0.0, -0.0, NAN, INF, -INF, 1e6, -1e6];
    // (type, max, just past max, what it rounds to without saturation)
    let cases = [
        (DType::F8E4M3FN, 448.0, 464.0, 448.0),
        (DType::F8E4M3FNUZ, 240.0, 248.0, NAN),
        (DType::F8E5M2, 57344.0, 61440.0, INF),
        (DType::F8E5M2FNUZ, 57344.0, 61440.0, NAN),
    ];
    for (d, max, past, past_nosat) in cases {
        let uz = matches!(d, DType::F8E4M3FNUZ | DType::F8E5M2FNUZ);
        let neg_zero = if uz { 0.0 } else { -0.0 };
        let mut xs = x.to_vec();
        xs.push(past);
        let sat = cast(&xs, d, vec![], 19);
        assert_values(&sat, &[0.0, neg_zero, NAN, max, -max, max, -max, max], &format!("{d} saturate=1"));
        assert_values(&cast(&xs, d, vec![attr_int("saturate", 1)], 19), &sat, &format!("{d} saturate=1 given"));
        let (inf, ninf) = if d == DType::F8E5M2 { (INF, -INF) } else { (NAN, NAN) };
        let want = [0.0, neg_zero, NAN, inf, ninf, inf, ninf, past_nosat];
        assert_values(&cast(&xs, d, vec![attr_int("saturate", 0)], 19), &want, &format!("{d} saturate=0"));
    }
}

#[test]
fn cast_to_float8_rounds_to_nearest_even() {
    // 1 + 1/16 sits halfway between 1 and 1.125 in e4m3: the even mantissa (1) wins; 1 + 3/16 → 1.25.
    assert_values(&cast(&[1.0625, 1.1875, -1.0625], DType::F8E4M3FN, vec![], 21), &[1.0, 1.25, -1.0], "e4m3fn");
    // e5m2 steps by 0.25 above 1: 1.125 → 1.0, 1.375 → 1.5.
    assert_values(&cast(&[1.125, 1.375], DType::F8E5M2, vec![], 21), &[1.0, 1.5], "e5m2");
}

#[test]
fn cast_to_float4_int4_and_int2() {
    let x = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.5, 9.0, -INF, NAN, -0.0, -0.3];
    let want = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -6.0, 0.0, -0.0, -0.5];
    assert_values(&cast(&x, DType::F4E2M1, vec![], 23), &want, "float4");
    for (x, &w) in x.iter().zip(&want) {
        assert!(same(narrow_value(DType::F4E2M1, f4e2m1_code(*x)), w), "scalar float4 of {x}");
    }
    // Truncate toward zero, then wrap (two's complement); NaN and Inf give 0.
    let x = [-9.0, -8.5, 7.9, 8.0, 15.0, 16.0, 1e6, NAN, INF];
    assert_values(&cast(&x, DType::I4, vec![], 21), &[7.0, -8.0, 7.0, -8.0, -1.0, 0.0, 0.0, 0.0, 0.0], "int4");
    assert_values(&cast(&x, DType::U4, vec![], 21), &[7.0, 8.0, 7.0, 8.0, 15.0, 0.0, 0.0, 0.0, 0.0], "uint4");
    let x = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
    assert_values(&cast(&x, DType::I2, vec![], 25), &[1.0, -2.0, -1.0, 0.0, 1.0, -2.0, -1.0], "int2");
    assert_values(&cast(&x, DType::U2, vec![], 25), &[1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0], "uint2");
}

#[test]
fn cast_to_e8m0_matches_the_scalar_codec_in_every_mode() {
    let mut x = vec![0.0, 0.124, 0.25, 0.5, 1.1, 1.5, 1.75, 3.0, 2f32.powi(-127), 1e-40, f32::MAX, 2f32.powi(127), INF];
    x.extend((0..200).map(|i| (i as f32 * 0.731).exp2() * 1e-20));
    for (round, name) in [(E8m0Round::Up, "up"), (E8m0Round::Down, "down"), (E8m0Round::Nearest, "nearest")] {
        for saturate in [0, 1] {
            let attrs = vec![attr_int("saturate", saturate), attr_string("round_mode", name)];
            let got = cast(&x, DType::F8E8M0, attrs, 25);
            let want: Vec<f32> =
                x.iter().map(|&v| narrow_value(DType::F8E8M0, e8m0_code(v, saturate == 1, round))).collect();
            assert_values(&got, &want, &format!("e8m0 {name} saturate={saturate}"));
        }
    }
    // Hand-checked, default mode (up, saturate): the ONNX test's inputs and the extremes.
    let got = cast(&[0.0, 0.124, 0.25, 1.1, f32::MAX, INF, NAN], DType::F8E8M0, vec![], 25);
    assert_values(&got, &[2f32.powi(-127), 0.125, 0.25, 2.0, 2f32.powi(127), 2f32.powi(127), NAN], "e8m0 up");
    let got = cast(&[f32::MAX, INF, 1.5], DType::F8E8M0, vec![attr_int("saturate", 0)], 25);
    assert_values(&got, &[NAN, NAN, 2.0], "e8m0 up, no saturation");
    let bad = node_error(DType::F8E8M0, vec![attr_string("round_mode", "sideways")]);
    assert!(bad.contains("round_mode"), "{bad}");
}

fn node_error(to: DType, attrs: Vec<semu::onnx::proto::AttributeProto>) -> String {
    let mut n = node("Cast", &["x"], &["y"]);
    n.attribute = [attr_int("to", to.onnx_code() as i64)].into_iter().chain(attrs).collect();
    let (_dir, path) = write(vec![n], vec![], vec![value("x", DType::F32, &[1])], vec![value("y", to, &[1])], 25);
    let m = OnnxModel::load(&path).unwrap();
    let Err(e) = Plan::new(&m, &Registry::standard(), &PlanOptions::default()) else { panic!("must fail") };
    e.to_string()
}

#[test]
fn models_with_narrow_initializers_save_byte_identical() {
    let raw = |name: &str, d: DType, dims: &[i64], bytes: Vec<u8>| TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(d.onnx_code()),
        raw_data: Some(bytes),
        ..Default::default()
    };
    let int4 = raw("w_int4", DType::I4, &[5], pack_codes(DType::I4, &[7, 8, 15, 1, 2]));
    let f8 = raw("w_f8", DType::F8E4M3FN, &[3], vec![0x38, 0x7E, 0xB8]);
    let f4 = raw("w_f4", DType::F4E2M1, &[1, 3], pack_codes(DType::F4E2M1, &[1, 15, 7]));
    // Typed-field encoding: one packed byte per int32, as onnx.helper.make_tensor writes them.
    let uint2 = TensorProto {
        name: Some("w_u2".into()),
        dims: vec![5],
        data_type: Some(DType::U2.onnx_code()),
        int32_data: vec![0x39, 0x01],
        ..Default::default()
    };
    let inits = vec![int4, f8, f4, uint2];
    let ids: Vec<_> =
        ["w_int4", "w_f8", "w_f4", "w_u2"].iter().map(|w| node("Identity", &[w], &[&format!("{w}_out")])).collect();
    let outs = [
        ("w_int4_out", DType::I4, 5),
        ("w_f8_out", DType::F8E4M3FN, 3),
        ("w_f4_out", DType::F4E2M1, 3),
        ("w_u2_out", DType::U2, 5),
    ];
    let outs = outs.iter().map(|(n, d, k)| value(n, *d, &[*k])).collect();
    let (_dir, path) = write(ids, inits, vec![], outs, 21);
    let m = OnnxModel::load(&path).unwrap();
    let vals = |name: &str| m.tensor(m.initializer(name).unwrap()).unwrap().narrow_values().unwrap();
    assert_eq!(vals("w_int4"), [7.0, -8.0, -1.0, 1.0, 2.0]);
    assert_eq!(vals("w_f8"), [1.0, 448.0, -1.0]);
    assert_eq!(vals("w_f4"), [0.5, -6.0, 6.0]);
    assert_eq!(vals("w_u2"), [1.0, 2.0, 3.0, 0.0, 1.0]);
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("model.onnx");
    m.save(&dst, &HashMap::new()).unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&path).unwrap(), "saved bytes differ");
    assert_eq!(OnnxModel::load(&dst).unwrap().proto.encode_to_vec(), m.proto.encode_to_vec());
    // The engine sees the initializers as widened values.
    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
    let y = plan.run(&HashMap::new()).unwrap();
    assert_eq!(Vec::<i8>::try_from(&y[0]).unwrap(), [7, -8, -1, 1, 2]);
    assert_eq!(y[1].kind(), Kind::Float8e4m3fn);
    assert_eq!(Vec::<f32>::try_from(y[2].reshape([-1])).unwrap(), [0.5, -6.0, 6.0]);
    assert_eq!(Vec::<u8>::try_from(&y[3]).unwrap(), [1, 2, 3, 0, 1]);
    // A packed tensor of the wrong length is refused.
    let short = raw("bad", DType::I4, &[5], vec![0, 0]);
    assert!(TensorData::from_proto(&short, out.path()).is_err());
}

/// The gradient of a float4 / float8 cast passes straight through inside the saturation range
/// and is zero outside it, so training through a quantising cast is not cut off. (A finite
/// difference of a rounding step is zero almost everywhere, hence this check instead.)
#[test]
fn float_casts_pass_the_gradient_straight_through() {
    for (to, max) in [(DType::F4E2M1, 6.0), (DType::F8E4M3FN, 448.0), (DType::F8E5M2, 57344.0)] {
        let mut n = node("Cast", &["x"], &["c"]);
        n.attribute = vec![attr_int("to", to.onnx_code() as i64)];
        let mut back = node("Cast", &["c"], &["y"]);
        back.attribute = vec![attr_int("to", DType::F32.onnx_code() as i64)];
        let (_dir, path) =
            write(vec![n, back], vec![], vec![value("x", DType::F32, &[4])], vec![value("y", DType::F32, &[4])], 21);
        let m = OnnxModel::load(&path).unwrap();
        let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
        let x = Tensor::from_slice(&[0.3f32, -1.7, 2.0 * max, -0.05]).set_requires_grad(true);
        let y = plan.run(&HashMap::from([("x".to_string(), x.shallow_clone())])).unwrap().remove(0);
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        y.f_mul(&w).unwrap().sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [1.0, 2.0, 0.0, 4.0], "{to}");
    }
}

/// Inside a graph (no output re-encoding), CastLike into an input declared INT4 wraps to 4 bits,
/// although the engine stores that input as Int8.
#[test]
fn castlike_uses_the_declared_narrow_type() {
    let mut back = node("Cast", &["y"], &["z"]);
    back.attribute.push(attr_int("to", 1));
    let (_d, path) = write(
        vec![node("CastLike", &["x", "like"], &["y"]), back],
        vec![],
        vec![value("x", DType::F32, &[3]), value("like", DType::I4, &[1])],
        vec![value("z", DType::F32, &[3])],
        21,
    );
    let m = OnnxModel::load(&path).unwrap();
    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
    let feeds = HashMap::from([
        ("x".to_string(), Tensor::from_slice(&[9.7f32, -3.2, 7.0])),
        ("like".to_string(), Tensor::from_slice(&[1i8])),
    ]);
    let z = Vec::<f32>::try_from(plan.run(&feeds).unwrap().remove(0)).unwrap();
    assert_eq!(z, vec![-7.0, -3.0, 7.0]);
}
