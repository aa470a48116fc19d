//! Tensor payloads: decode any `TensorProto` encoding (typed fields, `raw_data`, external data)
//! into dense little-endian bytes, and encode replacement bytes back. Sub-byte types (int4,
//! uint4, float4, int2, uint2) stay packed exactly as in `raw_data`, so they round-trip unchanged.
use super::dtype::{narrow_value, unpack_codes, DType};
use super::proto::TensorProto;
use crate::error::{Error, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A dense tensor: element type, shape and packed little-endian bytes (row-major; 4-/2-bit
/// elements packed several per byte, the first in the low bits).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub bytes: Vec<u8>,
}

/// Where an external tensor's bytes live, read from `external_data` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

pub const LOCATION_EXTERNAL: i32 = 1;

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(LOCATION_EXTERNAL)
}

pub fn external_ref(t: &TensorProto) -> Result<ExternalRef> {
    let mut r = ExternalRef { location: String::new(), offset: 0, length: None };
    for kv in &t.external_data {
        let (k, v) = (kv.key(), kv.value());
        let num =
            || v.parse::<u64>().map_err(|_| tensor_err(t, format!("external_data '{k}' = '{v}' is not a number")));
        match k {
            "location" => r.location = v.to_string(),
            "offset" => r.offset = num()?,
            "length" => r.length = Some(num()?),
            _ => {} // "checksum" and future keys are informational
        }
    }
    if r.location.is_empty() {
        return Err(tensor_err(t, "external data without a 'location'".into()));
    }
    Ok(r)
}

fn tensor_err(t: &TensorProto, reason: String) -> Error {
    Error::Tensor { tensor: t.name().to_string(), reason }
}

/// Resolves an external location against the model folder, refusing paths that escape it
/// lexically (absolute, `..`); the file itself may not exist yet (a download's destination).
pub fn external_path(base: &Path, location: &str) -> Result<std::path::PathBuf> {
    crate::paths::relative_inside(base, location, "external data location")
}

/// The existing external-data file `location` names: also its real path (symlinks resolved)
/// inside the model folder's, and a regular file (checked before it is opened).
pub fn external_file(base: &Path, location: &str) -> Result<std::path::PathBuf> {
    crate::paths::file_inside(base, location, "external data location")
}

pub fn numel(dims: &[i64]) -> usize {
    dims.iter().map(|&d| d.max(0) as usize).product()
}

impl TensorData {
    /// Decodes `t`; external data is read relative to `base` (the model's folder).
    pub fn from_proto(t: &TensorProto, base: &Path) -> Result<Self> {
        let dtype = DType::from_onnx(t.data_type())?;
        let dims = t.dims.clone();
        let n = numel(&dims);
        let bytes = if is_external(t) {
            read_external(t, base)?
        } else if !t.raw_data().is_empty() || typed_len(t) == 0 {
            t.raw_data().to_vec()
        } else {
            typed_bytes(t, dtype)?
        };
        if let Some(want) = dtype.byte_len(n) {
            if bytes.len() != want {
                return Err(tensor_err(
                    t,
                    format!("holds {} bytes but shape {:?} of {} needs {}", bytes.len(), dims, dtype, want),
                ));
            }
        }
        Ok(TensorData { dtype, dims, bytes })
    }

    pub fn numel(&self) -> usize {
        numel(&self.dims)
    }

    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            DType::F32 => self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::F64 => {
                self.bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            DType::F16 => self.bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => {
                self.bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1 | DType::F8E8M0 => {
                self.narrow_values()?
            }
            d => return Err(Error::msg(format!("cannot read {d} tensor as float"))),
        })
    }

    /// The exact values of a float8 / float4 / e8m0 / int4 / uint4 / int2 / uint2 tensor.
    pub fn narrow_values(&self) -> Result<Vec<f32>> {
        if !self.dtype.is_narrow() {
            return Err(Error::msg(format!("{} is not a narrow (8-bit float or sub-byte) type", self.dtype)));
        }
        let codes = unpack_codes(self.dtype, &self.bytes, self.numel());
        Ok(codes.into_iter().map(|c| narrow_value(self.dtype, c)).collect())
    }

    /// Converts f32 values into this tensor's float dtype (f32/f64/f16/bf16), same shape.
    pub fn with_f32_values(&self, values: &[f32]) -> Result<Self> {
        if values.len() != self.numel() {
            return Err(Error::msg(format!("{} values for a tensor of {} elements", values.len(), self.numel())));
        }
        let bytes: Vec<u8> = match self.dtype {
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F64 => values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            d => return Err(Error::msg(format!("cannot write float values into a {d} tensor"))),
        };
        Ok(TensorData { dtype: self.dtype, dims: self.dims.clone(), bytes })
    }
}

fn typed_len(t: &TensorProto) -> usize {
    t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len()
        + t.string_data.len()
}

fn read_external(t: &TensorProto, base: &Path) -> Result<Vec<u8>> {
    let r = external_ref(t)?;
    let path = external_file(base, &r.location).map_err(|e| tensor_err(t, e.to_string()))?;
    let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let len = r.length.unwrap_or(file_len.saturating_sub(r.offset));
    if r.offset + len > file_len {
        return Err(tensor_err(
            t,
            format!(
                "external data {}: offset {} + length {} is past the file's end ({} bytes)",
                path.display(),
                r.offset,
                len,
                file_len
            ),
        ));
    }
    f.seek(SeekFrom::Start(r.offset)).map_err(|e| Error::io(&path, e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
    Ok(buf)
}

/// The typed repeated fields, as the ONNX spec assigns them per dtype.
fn typed_bytes(t: &TensorProto, dtype: DType) -> Result<Vec<u8>> {
    let i32s = || t.int32_data.iter();
    Ok(match dtype {
        DType::F32 | DType::C64 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 | DType::C128 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::U32 => t.uint64_data.iter().flat_map(|&v| (v as u32).to_le_bytes()).collect(),
        DType::U64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I32 => i32s().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I16 => i32s().flat_map(|&v| (v as i16).to_le_bytes()).collect(),
        DType::U16 | DType::F16 | DType::BF16 => i32s().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
        DType::I8 => i32s().map(|&v| v as i8 as u8).collect(),
        // One byte per int32: a bool, an 8-bit code, or a packed pair/quad of 4-/2-bit elements.
        d if d.bits().is_some_and(|b| b <= 8) => i32s().map(|&v| v as u8).collect(),
        d => return Err(tensor_err(t, format!("element type {d} is not supported"))),
    })
}

/// Replaces the payload of an in-proto tensor by `raw_data` (clearing typed fields).
pub fn set_inline(t: &mut TensorProto, data: &TensorData) {
    t.float_data.clear();
    t.int32_data.clear();
    t.int64_data.clear();
    t.double_data.clear();
    t.uint64_data.clear();
    t.string_data.clear();
    t.raw_data = Some(data.bytes.clone());
}
