//! PyTorch checkpoints: the zip format (torch >= 1.6) and the legacy pickle-stream format.
//!
//! Every pickle in the file is first proven to be plain data by [`super::pickle_guard`]; only
//! then does `burn-store`'s pytorch-reader (a Rust pickle interpreter that runs no Python)
//! index the tensors.

use super::pickle_guard::check_pickles;
use super::{f32_from_le, FloatDType, TensorSource};
use crate::error::{Error, Result};
use burn::store::pytorch_reader::{DType, PytorchReader, Tensor as PtTensor};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Pickles at the start of a legacy file: magic, protocol, sys info, the state dict, storage keys.
const LEGACY_PICKLES: usize = 5;

/// An opened, checked PyTorch checkpoint.
pub struct PytorchFile {
    path: PathBuf,
    tensors: HashMap<String, PtTensor>,
}

/// Refuse a checkpoint whose pickles would import anything but tensor and container types.
pub fn check_checkpoint(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .map_err(|e| Error::format(path, format!("broken zip archive: {e}")))?;
        let names: Vec<String> = archive
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .filter(|n| n.ends_with(".pkl"))
            .collect();
        if names.is_empty() {
            return Err(Error::format(path, "zip archive holds no data.pkl"));
        }
        for name in names {
            let mut entry = archive
                .by_name(&name)
                .map_err(|e| Error::format(path, format!("zip entry '{name}': {e}")))?;
            let mut pickle = Vec::new();
            entry
                .by_ref()
                .take(1 << 30)
                .read_to_end(&mut pickle)
                .map_err(|e| Error::format(path, format!("zip entry '{name}': {e}")))?;
            check_pickles(&pickle, 1, Path::new(&format!("{}:{name}", path.display())))?;
        }
        Ok(())
    } else {
        check_pickles(&bytes, LEGACY_PICKLES, path).map(|_| ())
    }
}

impl PytorchFile {
    /// Check and index a checkpoint. Nothing in it is executed.
    pub fn open(path: &Path) -> Result<Self> {
        check_checkpoint(path)?;
        let reader = PytorchReader::new(path)
            .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: {e}")))?;
        if reader.is_empty() {
            return Err(Error::format(
                path,
                "the checkpoint holds no tensors (is it a state dict?)",
            ));
        }
        Ok(PytorchFile {
            path: path.to_path_buf(),
            tensors: reader.into_tensors(),
        })
    }
}

impl TensorSource for PytorchFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.shape().to_vec())
    }

    fn read(&self, key: &str) -> Result<Vec<f32>> {
        let tensor = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor '{key}'")))?;
        let dtype = match tensor.dtype() {
            DType::F32 => FloatDType::F32,
            DType::F64 => FloatDType::F64,
            DType::F16 => FloatDType::F16,
            DType::BF16 => FloatDType::BF16,
            other => {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{key}' is {other:?}, not floating point"),
                ))
            }
        };
        let bytes = tensor
            .read()
            .map_err(|e| Error::format(&self.path, format!("tensor '{key}': {e}")))?;
        if bytes.len() != tensor.num_elements() * dtype.size() {
            return Err(Error::format(
                &self.path,
                format!("tensor '{key}' data is truncated"),
            ));
        }
        Ok(f32_from_le(&bytes, dtype))
    }
}
