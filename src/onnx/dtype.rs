//! ONNX element types (`TensorProto.DataType`), their sizes, and the bit-level codecs of the
//! narrow types (float8, float4, e8m0, int4/uint4, int2/uint2) that libtorch lacks or packs.
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    String,
    Bool,
    F16,
    F64,
    U32,
    U64,
    C64,
    C128,
    BF16,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    /// 4-bit types: two per byte in `raw_data`, the first in the low nibble.
    U4,
    I4,
    F4E2M1,
    /// A power of two, 2^(code − 127); code 255 is NaN (the scale of microscaling formats).
    F8E8M0,
    /// 2-bit types: four per byte, the first in the two least significant bits.
    U2,
    I2,
    /// A code this crate does not know (`weights::dtype` uses `Other(0)` for "no ONNX type").
    Other(i32),
}

const BY_CODE: [DType; 26] = [
    DType::F32,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::String,
    DType::Bool,
    DType::F16,
    DType::F64,
    DType::U32,
    DType::U64,
    DType::C64,
    DType::C128,
    DType::BF16,
    DType::F8E4M3FN,
    DType::F8E4M3FNUZ,
    DType::F8E5M2,
    DType::F8E5M2FNUZ,
    DType::U4,
    DType::I4,
    DType::F4E2M1,
    DType::F8E8M0,
    DType::U2,
    DType::I2,
];

impl DType {
    pub fn from_onnx(code: i32) -> Result<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|c| c.checked_sub(1))
            .and_then(|i| BY_CODE.get(i).copied())
            .ok_or_else(|| Error::msg(format!("unknown ONNX data type {code}")))
    }

    pub fn onnx_code(self) -> i32 {
        match self {
            DType::Other(c) => c,
            d => BY_CODE.iter().position(|&x| x == d).map_or(0, |i| i as i32 + 1),
        }
    }

    /// Bytes per element in `raw_data`, or None for strings and sub-byte types (see
    /// [`DType::byte_len`]).
    pub fn size(self) -> Option<usize> {
        match self.bits()? {
            b if b >= 8 => Some(b / 8),
            _ => None,
        }
    }

    /// Bits per element; None for strings and unknown types.
    pub fn bits(self) -> Option<usize> {
        Some(match self {
            DType::U2 | DType::I2 => 2,
            DType::U4 | DType::I4 | DType::F4E2M1 => 4,
            DType::U8 | DType::I8 | DType::Bool => 8,
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0 => 8,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 16,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 64,
            DType::C128 => 128,
            DType::String | DType::Other(_) => return None,
        })
    }

    /// Bytes `n` elements take in `raw_data`: sub-byte types are packed, the last byte padded.
    pub fn byte_len(self, n: usize) -> Option<usize> {
        Some((n * self.bits()?).div_ceil(8))
    }

    /// The float types the engine computes (and trains) in; float8/float4/e8m0 are storage.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// float8, float4, e8m0 and the 4-/2-bit integers: the types [`narrow_value`] decodes.
    pub fn is_narrow(self) -> bool {
        self.bits().is_some_and(|b| b < 8)
            || matches!(self, DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F8E8M0)
    }

    pub fn name(self) -> String {
        match self {
            DType::Other(c) => format!("onnx-type-{c}"),
            d => format!("{d:?}").to_lowercase(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One code per element: sub-byte types are split out of their bytes (low bits first), other
/// one-byte types pass through. Padding past `n` is dropped.
pub fn unpack_codes(d: DType, bytes: &[u8], n: usize) -> Vec<u8> {
    match d.bits() {
        Some(w @ (2 | 4)) => {
            let per = 8 / w;
            let mask = (1u8 << w) - 1;
            (0..n).map(|i| (bytes.get(i / per).copied().unwrap_or(0) >> (w * (i % per))) & mask).collect()
        }
        _ => bytes[..n.min(bytes.len())].to_vec(),
    }
}

/// The inverse of [`unpack_codes`]: only each code's low bits are kept; the last byte is padded
/// with zero bits, as `onnx.numpy_helper` does.
pub fn pack_codes(d: DType, codes: &[u8]) -> Vec<u8> {
    match d.bits() {
        Some(w @ (2 | 4)) => {
            let per = 8 / w;
            let mask = (1u8 << w) - 1;
            codes
                .chunks(per)
                .map(|c| c.iter().enumerate().fold(0u8, |b, (i, &x)| b | ((x & mask) << (w * i))))
                .collect()
        }
        _ => codes.to_vec(),
    }
}

/// A sign / exponent / mantissa code with IEEE-style subnormals and no special values.
fn minifloat(code: u8, exp_bits: u32, man_bits: u32, bias: i32) -> f32 {
    let sign = if (code >> (exp_bits + man_bits)) & 1 == 1 { -1.0 } else { 1.0 };
    let e = i32::from((code >> man_bits) & ((1 << exp_bits) - 1));
    let frac = f32::from(code & ((1 << man_bits) - 1)) / (1u32 << man_bits) as f32;
    let mag = if e == 0 { frac * 2f32.powi(1 - bias) } else { (1.0 + frac) * 2f32.powi(e - bias) };
    sign * mag
}

/// The exact value of one element code of a one-byte-or-narrower type (as [`unpack_codes`]
/// gives them). NaN for types wider than a byte.
pub fn narrow_value(d: DType, code: u8) -> f32 {
    match d {
        DType::F8E4M3FN if code & 0x7F == 0x7F => f32::NAN,
        DType::F8E4M3FN => minifloat(code, 4, 3, 7),
        DType::F8E4M3FNUZ | DType::F8E5M2FNUZ if code == 0x80 => f32::NAN,
        DType::F8E4M3FNUZ => minifloat(code, 4, 3, 8),
        DType::F8E5M2 if code & 0x7C == 0x7C => {
            if code & 0x03 != 0 {
                f32::NAN
            } else if code & 0x80 != 0 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }
        }
        DType::F8E5M2 => minifloat(code, 5, 2, 15),
        DType::F8E5M2FNUZ => minifloat(code, 5, 2, 16),
        DType::F4E2M1 => minifloat(code & 0x0F, 2, 1, 1),
        DType::F8E8M0 => match code {
            0xFF => f32::NAN,
            0 => f32::from_bits(0x0040_0000), // 2^-127, a float32 subnormal
            c => f32::from_bits(u32::from(c) << 23),
        },
        DType::I4 => f32::from(((code & 0x0F) ^ 0x08) as i8 - 8),
        DType::I2 => f32::from(((code & 0x03) ^ 0x02) as i8 - 2),
        DType::U4 => f32::from(code & 0x0F),
        DType::U2 => f32::from(code & 0x03),
        DType::U8 | DType::Bool => f32::from(code),
        DType::I8 => f32::from(code as i8),
        _ => f32::NAN,
    }
}

/// FLOAT4E2M1 magnitudes by 3-bit code; an even code has an even mantissa.
const F4_MAGNITUDES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// f32 → FLOAT4E2M1 code: round to nearest, ties to even; saturates at ±6 (±Inf too). The type
/// has no NaN: NaN becomes 0, as in the ONNX reference's test data.
pub fn f4e2m1_code(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    let a = x.abs().min(6.0);
    let mut best = 0;
    for (i, &m) in F4_MAGNITUDES.iter().enumerate().skip(1) {
        let (d, db) = ((a - m).abs(), (a - F4_MAGNITUDES[best]).abs());
        if d < db || (d == db && i % 2 == 0) {
            best = i;
        }
    }
    best as u8 | if x.is_sign_negative() { 0x08 } else { 0 }
}

/// Cast's `round_mode` for FLOAT8E8M0 (opset 24+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E8m0Round {
    /// Any fraction rounds away from zero (the default).
    Up,
    /// Truncate to the power of two below.
    Down,
    /// To nearest, ties up.
    Nearest,
}

impl E8m0Round {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(E8m0Round::Up),
            "down" => Some(E8m0Round::Down),
            "nearest" => Some(E8m0Round::Nearest),
            _ => None,
        }
    }
}

/// f32 → FLOAT8E8M0 code, following `onnx.numpy_helper.to_float8e8m0` bit for bit on finite
/// values (the sign is ignored: negative inputs are unspecified). NaN → NaN; ±Inf → the largest
/// code when saturating, NaN otherwise (the Cast spec's table).
pub fn e8m0_code(x: f32, saturate: bool, round: E8m0Round) -> u8 {
    let b = x.to_bits();
    let e = (b >> 23) & 0xFF;
    if e == 0xFF {
        return if x.is_infinite() && saturate { 0xFE } else { 0xFF };
    }
    let up = match round {
        E8m0Round::Up => b & 0x7F_FFFF != 0,
        E8m0Round::Down => false,
        // Guard bit set, and round or sticky bits, or a normal number (the reference's "lsb").
        E8m0Round::Nearest => b & 0x40_0000 != 0 && (b & 0x3F_FFFF != 0 || e > 0),
    };
    let up = up && !(saturate && e == 0xFE);
    (e + u32::from(up)) as u8
}
