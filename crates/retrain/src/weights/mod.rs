//! Weight files, one module per format, loaded into models through an explicit name map.
//!
//! Loading checks everything first (missing, unexpected and mis-shaped tensors, each named) and
//! only then assigns, so a failed load leaves the model as it was.

pub mod keras_h5;
pub mod pickle_guard;
pub mod pytorch;
pub mod safetensors;

use crate::error::{Error, Result};
use crate::layers::Layer;
use burn::tensor::Device;
use std::collections::HashSet;
use std::path::Path;

/// Read access to the tensors of a weights file, by key.
pub trait TensorSource {
    /// The file the tensors come from.
    fn path(&self) -> &Path;
    /// All tensor keys.
    fn keys(&self) -> Vec<String>;
    /// Shape of one tensor.
    fn shape(&self, key: &str) -> Option<Vec<usize>>;
    /// Values of one tensor as f32 (converted from f16 / bf16 / f64 where needed).
    fn read(&self, key: &str) -> Result<Vec<f32>>;

    /// How this file's names map onto `model`'s variables, when the format fixes it (Keras
    /// HDF5); `None` leaves the choice to the caller.
    fn name_map(&self, _model: &dyn Layer) -> Option<NameMap> {
        None
    }

    /// Read every tensor once, so a file whose data does not match its header fails here;
    /// returns how many tensors there are.
    fn verify(&self) -> Result<usize> {
        let keys = self.keys();
        keys.iter().try_for_each(|k| self.read(k).map(|_| ()))?;
        Ok(keys.len())
    }
}

/// How a source tensor becomes a variable's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Same layout.
    Identity,
    /// A 2-D matrix transposed (PyTorch Linear `[out, in]` to Dense `[in, out]`).
    Transpose,
    /// A Keras convolution kernel `[kh, kw, in, out]` to retrain's `[out, in, kh, kw]`.
    KerasConv,
    /// A Keras depthwise kernel `[kh, kw, channels, multiplier]` to retrain's
    /// `[channels * multiplier, 1, kh, kw]`.
    KerasDepthwise,
}

/// Which source tensor feeds which model variable.
#[derive(Clone, Debug, Default)]
pub struct NameMap {
    entries: Vec<(String, String, Transform)>,
    ignored_suffixes: Vec<String>,
    ignored_prefixes: Vec<String>,
}

impl NameMap {
    /// An empty map.
    pub fn new() -> Self {
        NameMap::default()
    }

    /// Feed variable `variable` from tensor `key`.
    pub fn map(
        &mut self,
        variable: impl Into<String>,
        key: impl Into<String>,
        transform: Transform,
    ) {
        self.entries.push((variable.into(), key.into(), transform));
    }

    /// Source tensors ending in `suffix` are expected and unused (e.g. `num_batches_tracked`).
    pub fn ignore_suffix(&mut self, suffix: &str) {
        self.ignored_suffixes.push(suffix.to_string());
    }

    /// Source tensors starting with `prefix` are expected and unused (e.g. a dropped classifier).
    pub fn ignore_prefix(&mut self, prefix: &str) {
        self.ignored_prefixes.push(prefix.to_string());
    }

    /// The identity map over a model's own variable paths (retrain's own files).
    pub fn identity(model: &dyn Layer) -> Self {
        let mut map = NameMap::new();
        for v in model.variables() {
            map.map(v.path(), v.path(), Transform::Identity);
        }
        map
    }

    fn is_ignored(&self, key: &str) -> bool {
        self.ignored_suffixes
            .iter()
            .any(|s| key.ends_with(s.as_str()))
            || self
                .ignored_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
    }
}

/// What a successful load did.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Variables that received values.
    pub loaded: usize,
    /// Source tensors deliberately left unused.
    pub ignored: Vec<String>,
}

fn transformed_shape(shape: &[usize], transform: Transform) -> Vec<usize> {
    match (transform, shape) {
        (Transform::Transpose, [a, b]) => vec![*b, *a],
        (Transform::KerasConv, [kh, kw, i, o]) => vec![*o, *i, *kh, *kw],
        (Transform::KerasDepthwise, [kh, kw, c, m]) => vec![c * m, 1, *kh, *kw],
        _ => shape.to_vec(),
    }
}

/// Whether `transform` applies to a tensor of `rank` dimensions.
fn fits_rank(transform: Transform, rank: usize) -> bool {
    match transform {
        Transform::Identity => true,
        Transform::Transpose => rank == 2,
        Transform::KerasConv | Transform::KerasDepthwise => rank == 4,
    }
}

/// Reorder a row-major `[d0, d1, d2, d3]` tensor so that output axis k is input axis
/// `order[k]`.
fn permute4(values: &[f32], dims: [usize; 4], order: [usize; 4]) -> Vec<f32> {
    let strides = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1];
    let out_dims = order.map(|k| dims[k]);
    let mut out = Vec::with_capacity(values.len());
    for a in 0..out_dims[0] {
        for b in 0..out_dims[1] {
            for c in 0..out_dims[2] {
                for d in 0..out_dims[3] {
                    let index = [a, b, c, d];
                    let source: usize = (0..4).map(|k| index[k] * strides[order[k]]).sum();
                    out.push(values[source]);
                }
            }
        }
    }
    out
}

fn transpose(values: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Load `source` into every variable of `model` through `map`.
///
/// Errors name the tensor at fault: a model variable without a source tensor, a source tensor
/// without a place in the model, or a shape that differs (both shapes given).
pub fn load_into(
    model: &dyn Layer,
    source: &dyn TensorSource,
    map: &NameMap,
    device: &Device,
) -> Result<LoadReport> {
    let keys: HashSet<String> = source.keys().into_iter().collect();
    let mut plan = Vec::new();
    let mut used = HashSet::new();
    for variable in model.variables() {
        let (_, key, transform) = map
            .entries
            .iter()
            .find(|(v, _, _)| v == variable.path())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the name map has no entry for variable '{}'",
                    variable.path()
                ))
            })?;
        let shape = source
            .shape(key)
            .filter(|_| keys.contains(key))
            .ok_or_else(|| Error::MissingTensor {
                tensor: key.clone(),
                variable: variable.path().to_string(),
            })?;
        let found = transformed_shape(&shape, *transform);
        if found != variable.shape() || !fits_rank(*transform, shape.len()) {
            return Err(Error::TensorShape {
                tensor: key.clone(),
                variable: variable.path().to_string(),
                expected: transformed_shape(variable.shape(), *transform),
                found: shape,
            });
        }
        used.insert(key.clone());
        plan.push((variable, key.clone(), *transform, shape));
    }
    let mut unexpected: Vec<String> = keys
        .iter()
        .filter(|k| !used.contains(*k) && !map.is_ignored(k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(Error::UnexpectedTensors {
            tensors: unexpected,
        });
    }
    let mut values = Vec::with_capacity(plan.len());
    for (variable, key, transform, shape) in &plan {
        let data = source.read(key)?;
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(Error::format(
                source.path(),
                format!(
                    "tensor '{key}' holds {} values, its shape says {expected}",
                    data.len()
                ),
            ));
        }
        let data = match (transform, shape.as_slice()) {
            (Transform::Transpose, [rows, cols]) => transpose(data, *rows, *cols),
            (Transform::KerasConv, &[a, b, c, d]) => permute4(&data, [a, b, c, d], [3, 2, 0, 1]),
            (Transform::KerasDepthwise, &[a, b, c, d]) => {
                permute4(&data, [a, b, c, d], [2, 3, 0, 1])
            }
            _ => data,
        };
        values.push((variable, data));
    }
    for (variable, data) in values {
        variable.assign_data(data, device);
    }
    let mut ignored: Vec<String> = keys.into_iter().filter(|k| !used.contains(k)).collect();
    ignored.sort();
    Ok(LoadReport {
        loaded: plan.len(),
        ignored,
    })
}

/// Open a weights file by its content: safetensors, a PyTorch checkpoint (zip or legacy), or
/// Keras HDF5 weights.
pub fn open(path: &Path) -> Result<Box<dyn TensorSource>> {
    let mut head = [0u8; 9];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.read(&mut head).map_err(|e| Error::io(path, e))?
    };
    if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        Ok(Box::new(keras_h5::KerasH5File::open(path)?))
    } else if n >= 2 && head[0] == 0x80 || head.starts_with(b"PK") {
        Ok(Box::new(pytorch::PytorchFile::open(path)?))
    } else if n == 9 && head[8] == b'{' {
        Ok(Box::new(safetensors::SafetensorsFile::open(path)?))
    } else {
        Err(Error::format(
            path,
            "not a safetensors file, a PyTorch checkpoint (.pth/.pt) or Keras HDF5 weights (.h5)",
        ))
    }
}

/// Convert little-endian bytes of a floating dtype to f32.
pub(crate) fn f32_from_le(bytes: &[u8], dtype: FloatDType) -> Vec<f32> {
    match dtype {
        FloatDType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FloatDType::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        FloatDType::F16 => bytes
            .chunks_exact(2)
            .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        FloatDType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// The floating dtypes weights may be stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatDType {
    F32,
    F64,
    F16,
    BF16,
}

impl FloatDType {
    pub(crate) fn size(self) -> usize {
        match self {
            FloatDType::F64 => 8,
            FloatDType::F32 => 4,
            FloatDType::F16 | FloatDType::BF16 => 2,
        }
    }
}
