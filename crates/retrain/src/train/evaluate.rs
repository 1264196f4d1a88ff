//! Using a trained model: evaluation with metrics, and pooled-feature extraction.

use super::features::{batch_to_rows, inference_layers, run_inference};
use super::metrics::{ClassReport, Confusion};
use crate::data::augment::center_view;
use crate::data::folder::Sample;
use crate::error::Result;
use crate::layers::{Batch, Context, Layer, Precision};
use crate::model::Sequential;
use crate::zoo::PretrainedConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::Device;
use image::RgbImage;
use serde::Serialize;

/// Evaluation of a classifier on labelled images.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction right.
    pub accuracy: f64,
    /// Per-class precision, recall, F1.
    pub per_class: Vec<ClassReport>,
    /// Confusion matrix.
    pub confusion: Confusion,
}

/// Evaluate `model` (logits output) on decoded, labelled images.
pub fn evaluate(
    model: &Sequential,
    items: &[(Sample, RgbImage)],
    class_names: &[String],
    pretrained: &PretrainedConfig,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    let [h, w] = pretrained.input_size;
    let layers = inference_layers(model, device)?;
    let mut loss_sum = 0.0;
    let mut pairs = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size.max(1)) {
        let views: Vec<Vec<f32>> = chunk
            .iter()
            .map(|(_, img)| center_view(img, pretrained))
            .collect();
        let x = crate::data::image::batch_tensor(&views, h, w, device);
        let logits = run_inference(&layers, Batch::Maps(x), device, Precision::F32)?
            .into_vectors(model.name())?;
        let classes = logits.dims()[1];
        let (_, logp) = batch_to_rows(Batch::Vectors(log_softmax(logits, 1)));
        for ((sample, _), row) in chunk.iter().zip(logp.chunks(classes)) {
            loss_sum -= f64::from(row[sample.label]);
            let predicted = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            pairs.push((sample.label, predicted));
        }
    }
    let confusion = Confusion::new(class_names, pairs);
    Ok(Evaluation {
        loss: loss_sum / items.len().max(1) as f64,
        accuracy: confusion.accuracy(),
        per_class: confusion.per_class(),
        confusion,
    })
}

/// Run `model` on images in inference mode, the products of its convolution and dense layers at
/// `precision`, and return per-image output rows (e.g. pooled features of a base built with
/// average pooling), with the output's per-sample shape. With `layer`, the rows are that layer's
/// output instead of the model's.
#[allow(clippy::too_many_arguments)]
pub fn extract_features(
    model: &Sequential,
    layer: Option<&str>,
    images: &[RgbImage],
    pretrained: &PretrainedConfig,
    batch_size: usize,
    device: &Device,
    precision: Precision,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<usize>, Vec<f32>)> {
    let [h, w] = pretrained.input_size;
    let tap = layer
        .map(|name| model.feature_extractor(&[name]))
        .transpose()?;
    let layers = inference_layers(model, device)?;
    let mut dims = Vec::new();
    let mut out = Vec::new();
    for (i, chunk) in images.chunks(batch_size.max(1)).enumerate() {
        let views: Vec<Vec<f32>> = chunk
            .iter()
            .map(|img| center_view(img, pretrained))
            .collect();
        let x = crate::data::image::batch_tensor(&views, h, w, device);
        let y = match &tap {
            Some(extractor) => extractor
                .run(
                    Batch::Maps(x),
                    &mut Context::inference(device).with_precision(precision),
                )?
                .remove(0),
            None => run_inference(&layers, Batch::Maps(x), device, precision)?,
        };
        let (d, rows) = batch_to_rows(y);
        dims = d;
        out.extend(rows);
        progress((i * batch_size.max(1) + chunk.len()).min(images.len()));
    }
    Ok((dims, out))
}
