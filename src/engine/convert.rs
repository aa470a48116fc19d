//! ONNX tensors ↔ libtorch tensors. Unsigned types libtorch lacks widen losslessly
//! (u16→i32, u32→i64); u64 is reinterpreted as i64.
//!
//! Narrow types: the four float8 types map to libtorch's own float8 kinds. The rest live widened,
//! holding only values their type can represent: int4/int2 in Int8, uint4/uint2 in Uint8 (one
//! element per byte, unpacked on the way in, packed again on the way out), float4 (e2m1) and
//! e8m0 in Float. The op producing them (Cast) applies the type's rounding, saturation and
//! wrapping; [`from_tensor`] only re-encodes (a stray value still gets a valid code: integers
//! wrap, float4 rounds to nearest even and saturates, e8m0 rounds to the nearest power of two).
use crate::error::{Error, Result};
use crate::onnx::dtype::{e8m0_code, f4e2m1_code, pack_codes, unpack_codes, E8m0Round};
use crate::onnx::{DType, TensorData};
use tch::{Kind, Tensor};

pub fn kind_of(d: DType) -> Result<Kind> {
    Ok(match d {
        DType::F32 | DType::F4E2M1 | DType::F8E8M0 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I8 | DType::I4 | DType::I2 => Kind::Int8,
        DType::U8 | DType::U4 | DType::U2 => Kind::Uint8,
        DType::I16 => Kind::Int16,
        DType::I32 | DType::U16 => Kind::Int,
        DType::I64 | DType::U32 | DType::U64 => Kind::Int64,
        DType::Bool => Kind::Bool,
        DType::C64 => Kind::ComplexFloat,
        DType::C128 => Kind::ComplexDouble,
        DType::F8E4M3FN => Kind::Float8e4m3fn,
        DType::F8E4M3FNUZ => Kind::Float8e4m3fnuz,
        DType::F8E5M2 => Kind::Float8e5m2,
        DType::F8E5M2FNUZ => Kind::Float8e5m2fnuz,
        d => return Err(Error::msg(format!("element type {d} has no libtorch equivalent"))),
    })
}

/// The ONNX dtype a libtorch kind naturally maps back to.
pub fn dtype_of(k: Kind) -> Result<DType> {
    Ok(match k {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::BF16,
        Kind::Int8 => DType::I8,
        Kind::Uint8 => DType::U8,
        Kind::Int16 => DType::I16,
        Kind::Int => DType::I32,
        Kind::Int64 => DType::I64,
        Kind::Bool => DType::Bool,
        Kind::ComplexFloat => DType::C64,
        Kind::ComplexDouble => DType::C128,
        Kind::Float8e4m3fn => DType::F8E4M3FN,
        Kind::Float8e4m3fnuz => DType::F8E4M3FNUZ,
        Kind::Float8e5m2 => DType::F8E5M2,
        Kind::Float8e5m2fnuz => DType::F8E5M2FNUZ,
        k => return Err(Error::msg(format!("libtorch kind {k:?} has no ONNX equivalent"))),
    })
}

pub fn is_float8(k: Kind) -> bool {
    matches!(k, Kind::Float8e4m3fn | Kind::Float8e4m3fnuz | Kind::Float8e5m2 | Kind::Float8e5m2fnuz)
}

/// `t` in a kind the usual CPU kernels accept: float8 (which few ops support) becomes Float.
pub fn computable(t: &Tensor) -> Result<Tensor> {
    Ok(if is_float8(t.kind()) { t.f_to_kind(Kind::Float)? } else { t.shallow_clone() })
}

/// Builds a CPU tensor from ONNX data.
pub fn to_tensor(d: &TensorData) -> Result<Tensor> {
    let kind = kind_of(d.dtype)?;
    let dims = &d.dims;
    let n = d.numel();
    let t = match d.dtype {
        DType::U16 => {
            let v: Vec<i32> = d.bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i32).collect();
            Tensor::f_from_slice(&v)?.f_reshape(dims)?
        }
        DType::U32 => {
            let v: Vec<i64> =
                d.bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect();
            Tensor::f_from_slice(&v)?.f_reshape(dims)?
        }
        DType::I4 | DType::I2 => {
            let v: Vec<i8> = d.narrow_values()?.into_iter().map(|x| x as i8).collect();
            Tensor::f_from_slice(&v)?.f_reshape(dims)?
        }
        DType::U4 | DType::U2 => Tensor::f_from_slice(&unpack_codes(d.dtype, &d.bytes, n))?.f_reshape(dims)?,
        DType::F4E2M1 | DType::F8E8M0 => Tensor::f_from_slice(&d.narrow_values()?)?.f_reshape(dims)?,
        _ => Tensor::f_from_data_size(&d.bytes, dims, kind)?,
    };
    Ok(t)
}

/// Reads a tensor back as ONNX data of dtype `want` (casting when the kinds differ).
pub fn from_tensor(t: &Tensor, want: DType) -> Result<TensorData> {
    let dims = t.size();
    let raw = t.f_detach()?.f_to_device(tch::Device::Cpu)?;
    let cpu = computable(&raw)?;
    let flat = |k: Kind| cpu.f_to_kind(k).and_then(|c| c.f_reshape([-1]));
    let bytes = match want {
        DType::U16 => {
            let v = Vec::<i32>::try_from(flat(Kind::Int)?)?;
            v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()
        }
        DType::U32 => {
            let v = Vec::<i64>::try_from(flat(Kind::Int64)?)?;
            v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect()
        }
        // Two's-complement low bits: an out-of-range integer wraps, as Cast does.
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            let v = Vec::<i64>::try_from(flat(Kind::Int64)?)?;
            pack_codes(want, &v.iter().map(|&x| x as u8).collect::<Vec<_>>())
        }
        DType::F4E2M1 => {
            let v = Vec::<f32>::try_from(flat(Kind::Float)?)?;
            pack_codes(want, &v.into_iter().map(f4e2m1_code).collect::<Vec<_>>())
        }
        // Nearest keeps every representable value, 2^-127 (a float32 subnormal) included.
        DType::F8E8M0 => {
            let v = Vec::<f32>::try_from(flat(Kind::Float)?)?;
            v.into_iter().map(|x| e8m0_code(x, true, E8m0Round::Nearest)).collect()
        }
        _ => {
            // Same kind: the bytes as they are (float8 NaN payloads included).
            let kind = kind_of(want)?;
            let c = if raw.kind() == kind { raw } else { cpu.f_to_kind(kind)? }.f_contiguous()?;
            let n = c.numel() * want.size().unwrap_or(0);
            let mut buf = vec![0u8; n];
            c.f_copy_data_u8(&mut buf, c.numel())?;
            buf
        }
    };
    Ok(TensorData { dtype: want, dims, bytes })
}
