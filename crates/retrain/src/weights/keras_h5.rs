//! Keras HDF5 weights, read with a pure-Rust HDF5 decoder (`hdf5-reader`: no libhdf5, so the
//! one static binary stays one static binary):
//!
//! - the legacy layout of the Keras applications files and `save_weights("x.h5")`: root
//!   attribute `layer_names`, each layer group's `weight_names`, datasets at
//!   `layer/weight_name` (also inside a full-model file's `model_weights` group);
//! - Keras 3 `.weights.h5`: `layers/<path>/vars/<i>`, the layer's name in the `vars` group's
//!   `name` attribute, nested models under their own `layers`.
//!
//! Tensors are keyed `layer/#i` (the i-th weight of the layer, in Keras order, which is
//! retrain's order too); [`keras_names`] maps a model's variables onto them and picks the layout
//! change of each kernel.

use super::{NameMap, TensorSource, Transform};
use crate::error::{Error, Result};
use crate::layers::Layer;
use hdf5_reader::group::Group;
use hdf5_reader::Hdf5File;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A Keras HDF5 weights file.
pub struct KerasH5File {
    path: PathBuf,
    file: Hdf5File,
    /// Key -> (dataset path, Keras shape).
    tensors: BTreeMap<String, (String, Vec<usize>)>,
}

fn h5_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::format(
        path,
        format!("not a readable Keras HDF5 weights file ({what}: {e})"),
    )
}

/// A string-array attribute; an empty attribute of another type (Keras writes `[]` as floats)
/// is an empty list.
fn strings(group: &Group, name: &str, path: &Path) -> Result<Vec<String>> {
    let attribute = group.attribute(name).map_err(|e| h5_error(path, name, e))?;
    match attribute.read_strings() {
        Ok(list) => Ok(list),
        Err(_) if attribute.num_elements().unwrap_or(1) == 0 => Ok(Vec::new()),
        Err(e) => Err(h5_error(path, name, e)),
    }
}

impl KerasH5File {
    /// Open and index a Keras HDF5 file (legacy or Keras 3 layout).
    pub fn open(path: &Path) -> Result<Self> {
        let file = Hdf5File::open(path).map_err(|e| h5_error(path, "open", e))?;
        let root = file.root_group().map_err(|e| h5_error(path, "root", e))?;
        let mut tensors = BTreeMap::new();
        let (groups, _) = root
            .member_names()
            .map_err(|e| h5_error(path, "members", e))?;
        if groups.iter().any(|g| g == "layers") && root.attribute("layer_names").is_err() {
            let layers = root
                .group("layers")
                .map_err(|e| h5_error(path, "layers", e))?;
            index_keras3(&layers, "layers", path, &mut tensors)?;
        } else {
            let weights = if groups.iter().any(|g| g == "model_weights") {
                root.group("model_weights")
                    .map_err(|e| h5_error(path, "model_weights", e))?
            } else {
                root
            };
            let prefix = if weights.name().ends_with("model_weights") {
                "model_weights/"
            } else {
                ""
            };
            for layer in strings(&weights, "layer_names", path)? {
                let group = weights
                    .group(&layer)
                    .map_err(|e| h5_error(path, &layer, e))?;
                for (i, weight) in strings(&group, "weight_names", path)?.iter().enumerate() {
                    let dataset_path = format!("{prefix}{layer}/{weight}");
                    let dataset = file
                        .dataset(&dataset_path)
                        .map_err(|e| h5_error(path, &dataset_path, e))?;
                    let shape = dataset.shape().iter().map(|&d| d as usize).collect();
                    tensors.insert(format!("{layer}/#{i}"), (dataset_path, shape));
                }
            }
        }
        if tensors.is_empty() {
            return Err(Error::format(path, "holds no Keras layer weights"));
        }
        Ok(KerasH5File {
            path: path.to_path_buf(),
            file,
            tensors,
        })
    }
}

/// Index the `vars` of every layer under a Keras 3 `layers` group, recursing into nested models.
fn index_keras3(
    layers: &Group,
    at: &str,
    path: &Path,
    tensors: &mut BTreeMap<String, (String, Vec<usize>)>,
) -> Result<()> {
    let (children, _) = layers.member_names().map_err(|e| h5_error(path, at, e))?;
    for child in children {
        let group = layers
            .group(&child)
            .map_err(|e| h5_error(path, &child, e))?;
        let here = format!("{at}/{child}");
        let (subgroups, _) = group.member_names().map_err(|e| h5_error(path, &here, e))?;
        if subgroups.iter().any(|g| g == "layers") {
            let nested = group
                .group("layers")
                .map_err(|e| h5_error(path, &here, e))?;
            index_keras3(&nested, &format!("{here}/layers"), path, tensors)?;
        }
        if !subgroups.iter().any(|g| g == "vars") {
            continue;
        }
        let vars = group.group("vars").map_err(|e| h5_error(path, &here, e))?;
        let name = vars
            .attribute("name")
            .and_then(|a| a.read_string())
            .unwrap_or(child.clone());
        let (_, datasets) = vars.member_names().map_err(|e| h5_error(path, &here, e))?;
        for dataset_name in datasets {
            let Ok(i) = dataset_name.parse::<usize>() else {
                continue;
            };
            let dataset_path = format!("{here}/vars/{dataset_name}");
            let dataset = vars
                .dataset(&dataset_name)
                .map_err(|e| h5_error(path, &dataset_path, e))?;
            let shape = dataset.shape().iter().map(|&d| d as usize).collect();
            tensors.insert(format!("{name}/#{i}"), (dataset_path, shape));
        }
    }
    Ok(())
}

impl TensorSource for KerasH5File {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|(_, shape)| shape.clone())
    }

    fn name_map(&self, model: &dyn Layer) -> Option<NameMap> {
        Some(keras_names(model, self))
    }

    fn read(&self, key: &str) -> Result<Vec<f32>> {
        let (dataset_path, _) = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor '{key}'")))?;
        let dataset = self
            .file
            .dataset(dataset_path)
            .map_err(|e| h5_error(&self.path, dataset_path, e))?;
        let array = dataset
            .read_array::<f32>()
            .map_err(|e| h5_error(&self.path, dataset_path, e))?;
        Ok(array.iter().copied().collect())
    }
}

/// Map every variable of `model` onto a Keras file's `layer/#i` keys, the i-th variable of a
/// layer to its i-th weight, converting kernels from Keras's layouts when the shapes say so.
pub fn keras_names(model: &dyn Layer, source: &dyn TensorSource) -> NameMap {
    let mut map = NameMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for variable in model.variables() {
        let layer = variable
            .path()
            .rsplit_once('/')
            .map_or(variable.path(), |(layer, _)| layer)
            .to_string();
        let index = seen.entry(layer.clone()).or_insert(0);
        let key = format!("{layer}/#{index}");
        *index += 1;
        let ours = variable.shape();
        let transform = match source.shape(&key).as_deref() {
            Some(&[kh, kw, i, o]) if ours == [o, i, kh, kw] => Transform::KerasConv,
            Some(&[kh, kw, c, m]) if ours == [c * m, 1, kh, kw] => Transform::KerasDepthwise,
            _ => Transform::Identity,
        };
        map.map(variable.path(), key, transform);
    }
    map
}
