//! Classifying images with a model and reading off the top classes.

use crate::data::image::{batch_tensor, load_for_model};
use crate::error::{Error, Result};
use crate::layers::{ActivationKind, Batch};
use crate::model::Sequential;
use crate::train::features::batch_to_rows;
use crate::zoo::PretrainedConfig;
use burn::tensor::{activation::softmax, Device};
use std::path::{Path, PathBuf};

/// One class with its probability.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassScore {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub name: String,
    /// Probability.
    pub probability: f32,
}

/// The outcome for one image file.
#[derive(Debug)]
pub struct ImagePrediction {
    /// The file.
    pub path: PathBuf,
    /// All class probabilities, or why the image could not be used.
    pub probabilities: Result<Vec<f32>>,
}

/// Read class names, one per line (ImageNet's `imagenet_classes.txt` works).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The `k` most probable classes, best first.
pub fn top_k(probabilities: &[f32], labels: &[String], k: usize) -> Vec<ClassScore> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    order
        .into_iter()
        .take(k)
        .map(|index| ClassScore {
            index,
            name: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("class {index}")),
            probability: probabilities[index],
        })
        .collect()
}

/// Class probabilities for each image; images that fail to decode keep their error and do not
/// stop the others. `output` says whether the model ends in softmax already or in logits.
pub fn classify_files(
    model: &Sequential,
    config: &PretrainedConfig,
    output: ActivationKind,
    paths: &[PathBuf],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<ImagePrediction>> {
    let [h, w] = config.input_size;
    let mut results = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(batch_size.max(1)) {
        let decoded: Vec<(PathBuf, Result<Vec<f32>>)> = chunk
            .iter()
            .map(|p| (p.clone(), load_for_model(p, config)))
            .collect();
        let good: Vec<Vec<f32>> = decoded
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect();
        let mut probabilities = if good.is_empty() {
            Vec::new()
        } else {
            let out = model
                .predict(batch_tensor(&good, h, w, device))?
                .into_vectors(crate::layers::Layer::name(model))?;
            let out = match output {
                ActivationKind::Softmax => out,
                _ => softmax(out, 1),
            };
            let (dims, flat) = batch_to_rows(Batch::Vectors(out));
            flat.chunks(dims[0]).map(<[f32]>::to_vec).collect()
        }
        .into_iter();
        for (path, r) in decoded {
            let probabilities = match r {
                Ok(_) => Ok(probabilities.next().expect("one output per decoded image")),
                Err(e) => Err(e),
            };
            results.push(ImagePrediction {
                path,
                probabilities,
            });
        }
    }
    Ok(results)
}
