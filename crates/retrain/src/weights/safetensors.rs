//! Safetensors files: reading any f32/f16/bf16/f64 tensors, writing retrain's own weights.

use super::{f32_from_le, FloatDType, TensorSource};
use crate::error::{Error, Result};
use ::safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A named f32 tensor to write: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A safetensors file held in memory, its header validated on open.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    /// Read and validate a safetensors file (header, offsets and sizes are checked by the parser).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(path, format!("invalid safetensors file: {e}")))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated on open")
    }

    /// The free-form metadata of the header.
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }
}

impl TensorSource for SafetensorsFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        self.parsed()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.parsed().tensor(key).ok().map(|t| t.shape().to_vec())
    }

    fn read(&self, key: &str) -> Result<Vec<f32>> {
        let view = self
            .parsed()
            .tensor(key)
            .map_err(|e| Error::format(&self.path, format!("tensor '{key}': {e}")))?;
        let dtype = match view.dtype() {
            Dtype::F32 => FloatDType::F32,
            Dtype::F64 => FloatDType::F64,
            Dtype::F16 => FloatDType::F16,
            Dtype::BF16 => FloatDType::BF16,
            other => {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{key}' is {other:?}, not floating point"),
                ))
            }
        };
        Ok(f32_from_le(view.data(), dtype))
    }
}

/// Serialize named f32 tensors (name, shape, values) to safetensors bytes.
pub fn to_bytes(
    tensors: &[NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    to_bytes_with_integers(tensors, &[], metadata)
}

/// Serialize f32 tensors and i64 tensors (labels, indices) to safetensors bytes.
pub fn to_bytes_with_integers(
    floats: &[NamedTensor],
    integers: &[(String, Vec<usize>, Vec<i64>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = floats
        .iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), Dtype::F32, shape.clone(), bytes)
        })
        .collect();
    raw.extend(integers.iter().map(|(name, shape, values)| {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        (name.clone(), Dtype::I64, shape.clone(), bytes)
    }));
    let views = raw
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            ::safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("cannot serialize tensors: {e}")))?;
    ::safetensors::serialize(views, metadata)
        .map_err(|e| Error::Invalid(format!("cannot serialize tensors: {e}")))
}
