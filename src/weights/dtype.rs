//! safetensors element types ↔ ONNX element types, and conversions between float types.
use crate::error::{Error, Result};
use crate::onnx::DType;
use safetensors::tensor::Dtype;

/// The ONNX type of a safetensors type (every safetensors 0.3 type has one).
pub fn onnx_dtype(d: Dtype) -> DType {
    match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U64 => DType::U64,
        // `Dtype` is non-exhaustive; newer types have no counterpart here.
        _ => DType::Other(0),
    }
}

/// The safetensors type of an ONNX type, if safetensors has one.
pub fn safetensors_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::U16 => Dtype::U16,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::U32 => Dtype::U32,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
        DType::U64 => Dtype::U64,
        _ => return None,
    })
}

/// True when values of `from` can be converted to `to` by [`convert`] (float to float).
pub fn convertible(from: DType, to: DType) -> bool {
    from == to || (from.is_float() && to.is_float())
}

/// Converts little-endian float data between f64/f32/f16/bf16, rounding once (to nearest even)
/// through f64, which holds every value of the other three exactly.
pub fn convert(bytes: &[u8], from: DType, to: DType) -> Result<Vec<u8>> {
    if from == to {
        return Ok(bytes.to_vec());
    }
    if !convertible(from, to) {
        return Err(Error::msg(format!("cannot convert {from} values to {to}")));
    }
    let n = bytes.len() / from.size().unwrap_or(1);
    let mut out = Vec::with_capacity(n * to.size().unwrap_or(0));
    let read: fn(&[u8]) -> f64 = match from {
        DType::F64 => |c| f64::from_le_bytes(c.try_into().expect("8 bytes")),
        DType::F32 => |c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))),
        DType::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
        _ => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
    };
    for c in bytes.chunks_exact(from.size().unwrap_or(1)) {
        let v = read(c);
        match to {
            DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            _ => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_once_and_keep_exact_values() {
        let v = [1.0f32, -2.5, 65504.0, 1.0 + 1.0 / 1024.0, 3.0e-8];
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let h = convert(&b, DType::F32, DType::F16).unwrap();
        let back = convert(&h, DType::F16, DType::F32).unwrap();
        let back: Vec<f32> = back.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&back[..4], &v[..4], "values representable in f16 survive the round trip");
        assert!(back[4].abs() < 1e-7);
        let bf = convert(&b, DType::F32, DType::BF16).unwrap();
        assert_eq!(bf.len(), 10);
        assert!(convert(&b, DType::F32, DType::I64).is_err());
    }
}
