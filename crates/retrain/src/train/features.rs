//! The frozen prefix of a model and the cache of its outputs.
//!
//! When the first K layers are frozen (and, for BatchNorm, therefore in inference mode) and
//! deterministic, their output for an image never changes during training. retrain computes it
//! once per image, keeps it in memory (and on disk, keyed by everything it depends on), and each
//! epoch runs only the layers after it.

use crate::error::{Error, Result};
use crate::layers::{Batch, Context, LayerRef, Precision};
use crate::model::{Segment, Sequential};
use burn::tensor::{Device, Tensor, TensorData};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The layers of `model` in execution order, nested models expanded (blocks stay whole, and so
/// do the parts of a graph between its single-tensor cuts).
pub fn execution_layers(model: &Sequential) -> Vec<LayerRef> {
    let mut out = Vec::new();
    for segment in model.chain_segments() {
        match segment {
            Segment::Layer(layer) => match layer.as_model() {
                Some(nested) => out.extend(execution_layers(nested)),
                None => out.push(layer),
            },
            Segment::Graph(part) => out.push(part),
        }
    }
    out
}

/// The layers of `model` prepared for inference: nested models expanded, BatchNorms folded into
/// the convolutions before them.
pub fn inference_layers(model: &Sequential, device: &Device) -> Result<Vec<LayerRef>> {
    crate::model::fold_batch_norms(&execution_layers(model), device)
}

/// How many leading layers are frozen and deterministic: their outputs can be cached.
pub fn frozen_prefix_len(layers: &[LayerRef]) -> usize {
    layers
        .iter()
        .position(|l| !l.trainable_variables().is_empty() || l.training_dependent())
        .unwrap_or(layers.len())
}

/// Run `layers` one after the other.
pub fn run_layers(layers: &[LayerRef], x: Batch, ctx: &mut Context) -> Result<Batch> {
    crate::layers::run_chain(layers, x, ctx)
}

/// Images per slice of the batch in [`run_inference`]: the feature maps of two images stay near
/// the caches where those of a whole batch do not (EfficientNet-Lite0 at 288x288, batch 32:
/// prefix 21.6 s -> 17.7 s on the ants/bees set; VGG16 unchanged).
const IMAGES_PER_TASK: usize = 2;

/// Run `layers` in inference mode, the products of convolution and dense layers at `precision`,
/// with the batch split into slices run side by side.
///
/// Images are independent at inference, so slices of [`IMAGES_PER_TASK`] images go to the CPU's
/// threads as tasks (matrix products still share out their own work): every core stays busy in
/// layers whose kernels run on one, and each task's maps stay small. Other devices, and batches
/// of one, run whole.
pub fn run_inference(
    layers: &[LayerRef],
    x: Batch,
    device: &Device,
    precision: Precision,
) -> Result<Batch> {
    use rayon::prelude::*;
    let context = || Context::inference(device).with_precision(precision);
    let rows = x.dims()[0];
    let parts = rayon::current_num_threads()
        .max(rows.div_ceil(IMAGES_PER_TASK))
        .min(rows);
    if parts <= 1 || *device != Device::flex() {
        return run_layers(layers, x, &mut context());
    }
    let slices: Vec<Batch> = match x {
        Batch::Maps(t) => t.chunk(parts, 0).into_iter().map(Batch::Maps).collect(),
        Batch::Vectors(t) => t.chunk(parts, 0).into_iter().map(Batch::Vectors).collect(),
    };
    let outputs = slices
        .into_par_iter()
        .map(|slice| run_layers(layers, slice, &mut context()))
        .collect::<Result<Vec<Batch>>>()?;
    let mut maps = Vec::new();
    let mut vectors = Vec::new();
    for output in outputs {
        match output {
            Batch::Maps(t) => maps.push(t),
            Batch::Vectors(t) => vectors.push(t),
        }
    }
    Ok(match maps.is_empty() {
        true => Batch::Vectors(Tensor::cat(vectors, 0)),
        false => Batch::Maps(Tensor::cat(maps, 0)),
    })
}

/// Stack host rows of per-sample shape `dims` into a batch.
pub fn rows_to_batch(
    data: Vec<f32>,
    rows: usize,
    dims: &[usize],
    device: &Device,
) -> Result<Batch> {
    match *dims {
        [f] => Ok(Batch::Vectors(Tensor::from_data(
            TensorData::new(data, [rows, f]),
            device,
        ))),
        [c, h, w] => Ok(Batch::Maps(Tensor::from_data(
            TensorData::new(data, [rows, c, h, w]),
            device,
        ))),
        _ => Err(Error::Invalid(format!(
            "unsupported feature shape {dims:?}"
        ))),
    }
}

/// A batch back to host rows: (per-sample dims, values).
pub fn batch_to_rows(batch: Batch) -> (Vec<usize>, Vec<f32>) {
    let dims = batch.dims()[1..].to_vec();
    let data = match batch {
        Batch::Maps(t) => t.into_data(),
        Batch::Vectors(t) => t.into_data(),
    };
    (
        dims,
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 features"),
    )
}

/// Outputs of the frozen prefix for a list of samples, in memory or on disk.
pub struct FeatureStore {
    dims: Vec<usize>,
    storage: Storage,
}

enum Storage {
    Memory(Vec<f32>),
    Disk(File),
}

/// A cache location and the key everything it depends on hashes to.
pub struct CacheFile {
    /// Raw little-endian f32 rows.
    pub path: PathBuf,
    /// Hash of the prefix (architecture and weights), the images and the preprocessing.
    pub key: u64,
}

impl CacheFile {
    /// The cache file for `name` in `dir`, keyed by `key`.
    pub fn new(dir: &Path, name: &str, key: u64) -> Self {
        CacheFile {
            path: dir.join(format!("{name}-{key:016x}.f32")),
            key,
        }
    }

    fn meta_path(&self) -> PathBuf {
        self.path.with_extension("json")
    }
}

/// Bump when decoding, resizing or cropping code changes what a cached row holds.
const CACHE_FORMAT: u32 = 2;

/// A fingerprint of the prefix: its architecture, its weights and how images are prepared
/// (`view`). It reads every prefix weight, so compute it once per training run.
pub fn prefix_fingerprint(prefix: &[LayerRef], view: &str, device: &Device) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    CACHE_FORMAT.hash(&mut h);
    view.hash(&mut h);
    for layer in prefix {
        serde_json::to_string(&layer.spec())
            .unwrap_or_default()
            .hash(&mut h);
        for v in layer.variables() {
            let bits = v
                .to_vec(device)
                .iter()
                .fold(0u64, |acc, x| acc.rotate_left(5) ^ u64::from(x.to_bits()));
            (v.path(), bits).hash(&mut h);
        }
    }
    h.finish()
}

/// A key over everything a cached prefix output depends on: the prefix fingerprint and the
/// image files (path, size, modification time).
pub fn cache_key(prefix_fingerprint: u64, files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prefix_fingerprint.hash(&mut h);
    for f in files {
        f.hash(&mut h);
        if let Ok(meta) = std::fs::metadata(f) {
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

impl FeatureStore {
    /// Reuse the cache file when its key matches, else run `prefix` over every input (given as
    /// prepared CHW images by `input`) in batches, its products at `precision`, and write it.
    /// Rows stay in memory up to `memory_budget` bytes, beyond that they are read from the file.
    #[allow(clippy::too_many_arguments)]
    pub fn load_or_compute(
        prefix: &[LayerRef],
        rows: usize,
        input: &(dyn Fn(usize) -> Vec<f32> + Sync),
        input_hw: [usize; 2],
        batch_size: usize,
        cache: Option<&CacheFile>,
        memory_budget: usize,
        device: &Device,
        precision: Precision,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        if let Some(cache) = cache {
            if let Some(store) = Self::open(cache, rows, memory_budget)? {
                progress(rows);
                return Ok(store);
            }
        }
        let mut dims = Vec::new();
        let mut memory: Vec<f32> = Vec::new();
        let mut keep_in_memory = true;
        let tmp = cache.map(|c| c.path.with_extension("tmp"));
        let mut writer = match &tmp {
            Some(t) => {
                if let Some(dir) = t.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                Some(BufWriter::new(
                    File::create(t).map_err(|e| Error::io(t, e))?,
                ))
            }
            None => None,
        };
        let [h, w] = input_hw;
        let mut done = 0;
        while done < rows {
            let n = batch_size.min(rows - done);
            let images: Vec<Vec<f32>> = {
                use rayon::prelude::*;
                (done..done + n).into_par_iter().map(input).collect()
            };
            let x = crate::data::image::batch_tensor(&images, h, w, device);
            let out = run_inference(prefix, Batch::Maps(x), device, precision)?;
            let (d, values) = batch_to_rows(out);
            dims = d;
            if let (Some(wr), Some(t)) = (writer.as_mut(), tmp.as_ref()) {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                wr.write_all(&bytes).map_err(|e| Error::io(t, e))?;
            }
            if keep_in_memory {
                memory.extend_from_slice(&values);
                if memory.len() * 4 > memory_budget && writer.is_some() {
                    keep_in_memory = false;
                    memory = Vec::new();
                }
            }
            done += n;
            progress(done);
        }
        if let (Some(wr), Some(t), Some(cache)) = (writer, tmp, cache) {
            let file = wr.into_inner().map_err(|e| Error::io(&t, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&t, e))?;
            std::fs::rename(&t, &cache.path).map_err(|e| Error::io(&cache.path, e))?;
            let meta = serde_json::json!({ "key": format!("{:016x}", cache.key), "rows": rows, "dims": dims });
            crate::io::write_atomic(&cache.meta_path(), meta.to_string().as_bytes())?;
        }
        let storage = if keep_in_memory {
            Storage::Memory(memory)
        } else {
            let path = &cache.expect("disk storage has a cache file").path;
            Storage::Disk(File::open(path).map_err(|e| Error::io(path, e))?)
        };
        Ok(FeatureStore { dims, storage })
    }

    fn open(cache: &CacheFile, rows: usize, memory_budget: usize) -> Result<Option<Self>> {
        let Ok(text) = std::fs::read_to_string(cache.meta_path()) else {
            return Ok(None);
        };
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        let dims: Vec<usize> = meta["dims"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default();
        let row_len: usize = dims.iter().product();
        let expected_bytes = (rows * row_len * 4) as u64;
        let size = std::fs::metadata(&cache.path).map(|m| m.len()).unwrap_or(0);
        if meta["key"] != format!("{:016x}", cache.key)
            || meta["rows"] != rows
            || size != expected_bytes
            || dims.is_empty()
        {
            return Ok(None);
        }
        let storage = if (expected_bytes as usize) <= memory_budget {
            let bytes = std::fs::read(&cache.path).map_err(|e| Error::io(&cache.path, e))?;
            Storage::Memory(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        } else {
            Storage::Disk(File::open(&cache.path).map_err(|e| Error::io(&cache.path, e))?)
        };
        Ok(Some(FeatureStore { dims, storage }))
    }

    /// The rows at `indices` as one batch.
    pub fn gather(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let row_len: usize = self.dims.iter().product();
        let mut data = Vec::with_capacity(indices.len() * row_len);
        match &self.storage {
            Storage::Memory(values) => {
                for &i in indices {
                    data.extend_from_slice(&values[i * row_len..(i + 1) * row_len]);
                }
            }
            Storage::Disk(file) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; row_len * 4];
                for &i in indices {
                    file.read_exact_at(&mut buf, (i * row_len * 4) as u64)
                        .map_err(|e| Error::Invalid(format!("reading the feature cache: {e}")))?;
                    data.extend(
                        buf.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
            }
        }
        rows_to_batch(data, indices.len(), &self.dims, device)
    }
}
