//! retrain's own model files: `model.json` (architecture, preprocessing, classes) beside
//! `model.safetensors` (every variable under its Keras path), both written atomically.

use super::{ModelSpec, Sequential};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::shape::Shape;
use crate::variable::Variable;
use crate::weights::{load_into, safetensors, NameMap};
use crate::zoo::PretrainedConfig;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File format marker and the version this build writes and reads.
const FORMAT: &str = "retrain-model";
const VERSION: u32 = 1;

/// The weights half of a saved model.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The JSON half of a saved model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always `retrain-model`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Model name.
    pub name: String,
    /// The input shape the model was built for.
    pub input: Option<Shape>,
    /// The architecture.
    pub spec: ModelSpec,
    /// How images must be prepared, when the model came from the zoo.
    #[serde(default)]
    pub pretrained: Option<PretrainedConfig>,
    /// Class names of the classifier, in output order.
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// Save `model` into `dir` (created if needed): weights first, then the JSON that points at them.
pub fn save_model(
    model: &Sequential,
    dir: &Path,
    pretrained: Option<&PretrainedConfig>,
    class_names: &[String],
    device: &Device,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let bytes = weights_bytes(&model.variables(), device)?;
    crate::io::write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    let file = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        name: model.name().to_string(),
        input: model.input_shape(),
        spec: model.model_spec(),
        pretrained: pretrained.cloned(),
        class_names: class_names.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&file).expect("model file serializes");
    crate::io::write_atomic(&dir.join("model.json"), &json)
}

/// `variables` as safetensors bytes, each under its Keras path: the layout of
/// [`WEIGHTS_FILE`], for all of a model's variables or some of them.
pub fn weights_bytes(variables: &[Variable], device: &Device) -> Result<Vec<u8>> {
    let tensors: Vec<safetensors::NamedTensor> = variables
        .iter()
        .map(|v| (v.path().to_string(), v.shape().to_vec(), v.to_vec(device)))
        .collect();
    safetensors::to_bytes(&tensors, None)
}

/// Load a model saved by [`save_model`].
pub fn load_model(dir: &Path, device: &Device) -> Result<(Sequential, ModelFile)> {
    let json_path = dir.join("model.json");
    let text = std::fs::read_to_string(&json_path).map_err(|e| Error::io(&json_path, e))?;
    let (model, file) = model_from_json(&text, &json_path)?;
    let weights = safetensors::SafetensorsFile::open(&dir.join(WEIGHTS_FILE))?;
    load_into(&model, &weights, &NameMap::identity(&model), device)?;
    Ok((model, file))
}

/// Rebuild the (weightless) model a `model.json` text describes; `origin` names it in errors.
pub fn model_from_json(text: &str, origin: &Path) -> Result<(Sequential, ModelFile)> {
    let file: ModelFile = serde_json::from_str(text)
        .map_err(|e| Error::format(origin, format!("not a retrain model file: {e}")))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(Error::format(
            origin,
            format!(
                "format '{}' version {} is not '{FORMAT}' version {VERSION}, which this retrain reads",
                file.format, file.version
            ),
        ));
    }
    let model = Sequential::from_spec(&file.name, &file.spec)?;
    if let Some(input) = file.input {
        model.build(input)?;
    }
    Ok((model, file))
}
