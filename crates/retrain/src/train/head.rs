//! Building a transfer-learning model: preprocessing, a frozen pretrained base, a new head.

use crate::error::{Error, Result};
use crate::layers::{
    ActivationKind, Dense, Dropout, Flatten, GlobalAveragePooling2d, GlobalMaxPooling2d, Layer,
    LayerRef, Preprocess,
};
use crate::model::{LeafGraph, Sequential};
use crate::zoo::{self, Pooling, PretrainedConfig, ZooOptions};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// How the head turns the feature map into a vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadPooling {
    /// Global average pooling (any input size).
    #[default]
    Gap,
    /// Flatten (fixed input size).
    Flatten,
    /// Global max pooling.
    Max,
}

/// The new classifier on top of the base (default: global average pooling, then the Dense
/// layer alone).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Feature map to vector.
    pub pooling: HeadPooling,
    /// An optional hidden Dense layer (ReLU) of this width.
    pub hidden: Option<usize>,
    /// Dropout before the last Dense layer (0 for none).
    pub dropout: f64,
}

/// `Sequential[Preprocess, base (frozen, no top, `pooling`)]` named `name`, the base loaded from
/// `weights`, at `input_size` if given, else at its pretrained config's transfer size
/// ([`PretrainedConfig::for_transfer`]). Returns the config the run's images must follow.
pub fn frozen_base(
    name: &str,
    base_name: &str,
    weights: &Path,
    pooling: Pooling,
    input_size: Option<[usize; 2]>,
    device: &Device,
) -> Result<(Sequential, PretrainedConfig)> {
    let entry = zoo::entry(base_name)?;
    let pretrained = (entry.pretrained)().for_transfer(input_size);
    let base = zoo::load_pretrained(
        entry,
        &ZooOptions {
            include_top: false,
            input: Some(pretrained.input_size),
            pooling,
            ..ZooOptions::default()
        },
        weights,
        device,
    )?;
    base.set_trainable(false);
    let mut model = Sequential::new(Some(name));
    model.add(Arc::new(Preprocess::new(
        None,
        pretrained.preprocess.clone(),
    )))?;
    model.add(Arc::new(base))?;
    Ok((model, pretrained))
}

/// `Sequential[Preprocess, base (frozen), pooling, (Dense + ReLU), (Dropout), Dense(classes)]`,
/// the base loaded from `weights` (at `input_size` as in [`frozen_base`]). The output is logits.
pub fn transfer_model(
    base_name: &str,
    weights: &Path,
    head: &HeadConfig,
    classes: usize,
    input_size: Option<[usize; 2]>,
    device: &Device,
) -> Result<(Sequential, PretrainedConfig)> {
    let (mut model, pretrained) = frozen_base(
        "classifier",
        base_name,
        weights,
        Pooling::None,
        input_size,
        device,
    )?;
    let pooling: LayerRef = match head.pooling {
        HeadPooling::Gap => Arc::new(GlobalAveragePooling2d::new(None)),
        HeadPooling::Flatten => Arc::new(Flatten::new(None)),
        HeadPooling::Max => Arc::new(GlobalMaxPooling2d::new(None)),
    };
    model.add(pooling)?;
    if let Some(width) = head.hidden {
        model.add(Arc::new(Dense::with_name(
            "hidden",
            width,
            ActivationKind::Relu,
        )))?;
    }
    if head.dropout > 0.0 {
        model.add(Arc::new(Dropout::new(None, head.dropout)))?;
    }
    model.add(Arc::new(Dense::with_name(
        "predictions",
        classes,
        ActivationKind::Linear,
    )))?;
    Ok((model, pretrained))
}

/// Which part of the base to unfreeze for fine-tuning.
#[derive(Clone, Debug, PartialEq)]
pub enum Unfreeze {
    /// This layer and every layer after it.
    From(String),
    /// The last N blocks (`block5_*` in VGG, `block7a` in EfficientNet), and what follows them.
    LastBlocks(usize),
}

/// The block a layer belongs to: `block5` for `block5_conv1`, `block6a` for `block6a`.
fn block_of(name: &str) -> Option<&str> {
    name.starts_with("block")
        .then(|| name.split('_').next().unwrap_or(name))
}

/// Unfreeze part of the model for fine-tuning; BatchNorm layers in it stay frozen (inference
/// mode) when `freeze_batch_norm`. Returns the name of the first unfrozen layer.
pub fn unfreeze(model: &Sequential, rule: &Unfreeze, freeze_batch_norm: bool) -> Result<String> {
    // Leaf layers, so a layer inside a block (`block6a_expand_conv`) is a valid starting point.
    let graph = LeafGraph::of(model);
    let layers = &graph.layers;
    let start = match rule {
        Unfreeze::From(name) => graph
            .start_of(name)
            .ok_or_else(|| graph.unknown(model.name(), name, "to unfreeze from"))?,
        Unfreeze::LastBlocks(n) => {
            let mut blocks: Vec<(&str, usize)> = Vec::new();
            for (i, l) in layers.iter().enumerate() {
                if let Some(b) = block_of(l.name()) {
                    if blocks.last().map(|(last, _)| *last) != Some(b) {
                        blocks.push((b, i));
                    }
                }
            }
            if *n == 0 || *n > blocks.len() {
                return Err(Error::Invalid(format!(
                    "cannot unfreeze the last {n} blocks: the model has {} ({})",
                    blocks.len(),
                    blocks
                        .iter()
                        .map(|(b, _)| *b)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            blocks[blocks.len() - n].1
        }
    };
    for layer in &layers[start..] {
        layer.set_trainable(true);
        if freeze_batch_norm {
            freeze_batch_norms(layer.as_ref());
        }
    }
    Ok(layers[start].name().to_string())
}

fn freeze_batch_norms(layer: &dyn Layer) {
    if layer.class_name() == "BatchNormalization" {
        layer.set_trainable(false);
    }
    for sub in layer.sublayers() {
        freeze_batch_norms(sub.as_ref());
    }
}
