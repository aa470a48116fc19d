//! ONNX tensors ↔ libtorch tensors. Unsigned types libtorch lacks widen losslessly
//! (u16→i32, u32→i64); u64 is reinterpreted as i64.
use crate::error::{Error, Result};
use crate::onnx::{DType, TensorData};
use tch::{Kind, Tensor};

pub fn kind_of(d: DType) -> Result<Kind> {
    Ok(match d {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::I16 => Kind::Int16,
        DType::I32 | DType::U16 => Kind::Int,
        DType::I64 | DType::U32 | DType::U64 => Kind::Int64,
        DType::Bool => Kind::Bool,
        DType::C64 => Kind::ComplexFloat,
        DType::C128 => Kind::ComplexDouble,
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
        k => return Err(Error::msg(format!("libtorch kind {k:?} has no ONNX equivalent"))),
    })
}

/// Builds a CPU tensor from ONNX data.
pub fn to_tensor(d: &TensorData) -> Result<Tensor> {
    let kind = kind_of(d.dtype)?;
    let dims = &d.dims;
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
        _ => Tensor::f_from_data_size(&d.bytes, dims, kind)?,
    };
    Ok(t)
}

/// Reads a tensor back as ONNX data of dtype `want` (casting when the kinds differ).
pub fn from_tensor(t: &Tensor, want: DType) -> Result<TensorData> {
    let dims = t.size();
    let cpu = t.f_detach()?.f_to_device(tch::Device::Cpu)?;
    let bytes = match want {
        DType::U16 => {
            let v = Vec::<i32>::try_from(cpu.f_to_kind(Kind::Int)?.f_reshape([-1])?)?;
            v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()
        }
        DType::U32 => {
            let v = Vec::<i64>::try_from(cpu.f_to_kind(Kind::Int64)?.f_reshape([-1])?)?;
            v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect()
        }
        _ => {
            let c = cpu.f_to_kind(kind_of(want)?)?.f_contiguous()?;
            let n = c.numel() * want.size().unwrap_or(0);
            let mut buf = vec![0u8; n];
            c.f_copy_data_u8(&mut buf, c.numel())?;
            buf
        }
    };
    Ok(TensorData { dtype: want, dims, bytes })
}
