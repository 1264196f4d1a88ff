//! The model zoo: one file per architecture family, each entry with its pretrained config
//! (input size, resize and crop rule, interpolation, preprocessing) like timm's `pretrained_cfg`.

pub mod efficientnet_lite;
pub mod inception_v3;
pub mod mobilenet_v2;
pub mod resnet;
pub mod vgg;

use crate::error::{Error, Result};
use crate::hub::{Digest, WeightSource};
use crate::layers::{ActivationKind, Layer, LayerRef, Merge, PreprocessMode};
use crate::model::{Apply, Sequential, SymbolicTensor};
use crate::weights::NameMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Resampling filter used when resizing images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter, antialiased when shrinking).
    Bilinear,
    /// Bicubic (Catmull-Rom, antialiased when shrinking).
    Bicubic,
}

/// How images must be prepared for a pretrained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainedConfig {
    /// Network input, height and width.
    pub input_size: [usize; 2],
    /// Input size transfer learning (fit, extract) runs the base at, when larger than
    /// `input_size`: a network pretrained on random resized crops saw objects larger than a
    /// center crop shows them, so its features are better at a larger input (FixRes, Touvron et
    /// al. 2019; timm's `test_input_size`). `None`: `input_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_input_size: Option<[usize; 2]>,
    /// The shorter side is resized to `input / crop_pct`, then the center is cropped to the input
    /// (timm's rule; 0.875 gives the classic resize 256, crop 224).
    pub crop_pct: f64,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Pixel normalization, applied by a `Preprocess` layer in front of the model.
    pub preprocess: PreprocessMode,
    /// Where the weights come from, for messages.
    pub weights: String,
}

impl PretrainedConfig {
    /// The config a transfer-learning run uses: `size` if given, else `transfer_input_size`, else
    /// `input_size`; same crop fraction, filter and preprocessing.
    pub fn for_transfer(&self, size: Option<[usize; 2]>) -> PretrainedConfig {
        PretrainedConfig {
            input_size: size.or(self.transfer_input_size).unwrap_or(self.input_size),
            transfer_input_size: None,
            ..self.clone()
        }
    }

    /// The shorter-side length images are resized to before the center crop.
    pub fn resize_to(&self) -> usize {
        (self.input_size[0].min(self.input_size[1]) as f64 / self.crop_pct).floor() as usize
    }
}

/// What to do with the feature map when the classifier is dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Keep the 4-D feature map.
    #[default]
    None,
    /// Global average pooling.
    Avg,
    /// Global max pooling.
    Max,
}

/// Options every zoo builder takes, named after Keras applications' arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ZooOptions {
    /// Keep the ImageNet classifier.
    pub include_top: bool,
    /// Fixed input height and width; `None` accepts any size (only without the top).
    pub input: Option<[usize; 2]>,
    /// Pooling when `include_top` is false.
    pub pooling: Pooling,
    /// Classes of the classifier (1000 for ImageNet).
    pub classes: usize,
    /// Activation of the classifier (`Softmax` like Keras; `Linear` for logits).
    pub classifier_activation: ActivationKind,
}

impl Default for ZooOptions {
    fn default() -> Self {
        ZooOptions {
            include_top: true,
            input: None,
            pooling: Pooling::None,
            classes: 1000,
            classifier_activation: ActivationKind::Softmax,
        }
    }
}

/// One model of the zoo.
pub struct ZooEntry {
    /// Name used on the command line (`vgg16`).
    pub name: &'static str,
    /// One line about it.
    pub description: &'static str,
    /// Build the architecture (weights are lazily initialized until loaded).
    pub build: fn(&ZooOptions) -> Result<Sequential>,
    /// How images must be prepared.
    pub pretrained: fn() -> PretrainedConfig,
    /// Map from a PyTorch checkpoint's names to the model's variables, if one is known.
    pub pytorch_names: Option<fn(&Sequential) -> NameMap>,
    /// Where `--weights imagenet` downloads from, with or without the classifier; `None` when
    /// no source with a published checksum is known.
    pub imagenet: fn(include_top: bool) -> Option<WeightSource>,
}

/// All zoo entries.
pub fn entries() -> &'static [ZooEntry] {
    &[
        vgg::VGG16,
        vgg::VGG19,
        resnet::RESNET50,
        inception_v3::INCEPTION_V3,
        mobilenet_v2::MOBILENET_V2,
        mobilenet_v2::MOBILENET_V2_035,
        efficientnet_lite::EFFICIENTNET_LITE0,
        efficientnet_lite::EFFICIENTNET_LITE1,
        efficientnet_lite::EFFICIENTNET_LITE2,
        efficientnet_lite::EFFICIENTNET_LITE3,
        efficientnet_lite::EFFICIENTNET_LITE4,
    ]
}

/// No known download.
pub(crate) fn no_download(_include_top: bool) -> Option<WeightSource> {
    None
}

/// A Keras applications download (`https://storage.googleapis.com/tensorflow/keras-applications/`)
/// with or without the classifier: `(url, md5)` pairs, the MD5 being what Keras checks.
pub(crate) fn keras_file(
    include_top: bool,
    top: (&'static str, &'static str),
    no_top: (&'static str, &'static str),
) -> Option<WeightSource> {
    let (url, md5) = if include_top { top } else { no_top };
    Some(WeightSource {
        url,
        file: url.rsplit('/').next().unwrap_or(url),
        digest: Digest::Md5(md5),
        member: None,
    })
}

/// The end of a graph-built zoo model: the classifier (`top_pool` then Dense `predictions`)
/// with `include_top`, else the pooling asked for.
pub(crate) fn graph_top(
    x: SymbolicTensor,
    options: &ZooOptions,
    top_pool: Option<String>,
    pooling: Option<LayerRef>,
) -> Result<SymbolicTensor> {
    use crate::layers::{Dense, GlobalAveragePooling2d};
    if options.include_top {
        let pooled = call(GlobalAveragePooling2d::new(top_pool), &x)?;
        let classifier = Dense::with_name(
            "predictions",
            options.classes,
            options.classifier_activation,
        );
        return call(classifier, &pooled);
    }
    match pooling {
        Some(layer) => layer.apply(&x),
        None => Ok(x),
    }
}

/// A zoo entry by name, or an error listing the known names.
pub fn entry(name: &str) -> Result<&'static ZooEntry> {
    entries().iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<&str> = entries().iter().map(|e| e.name).collect();
        Error::Invalid(format!(
            "unknown model '{name}'; the zoo has: {}",
            names.join(", ")
        ))
    })
}

/// The pooling layer asked for when the top is dropped: named `avg_pool` / `max_pool` when
/// `named` (Keras EfficientNet, ResNet), automatically otherwise (Keras VGG, MobileNetV2).
pub(crate) fn pooling_layer(pooling: Pooling, named: bool) -> Option<LayerRef> {
    use crate::layers::{GlobalAveragePooling2d, GlobalMaxPooling2d};
    let name = |n: &str| named.then(|| n.to_string());
    match pooling {
        Pooling::None => None,
        Pooling::Avg => Some(Arc::new(GlobalAveragePooling2d::new(name("avg_pool")))),
        Pooling::Max => Some(Arc::new(GlobalMaxPooling2d::new(name("max_pool")))),
    }
}

/// Append [`pooling_layer`] to a stacked model.
pub(crate) fn add_pooling(model: &mut Sequential, pooling: Pooling, named: bool) -> Result<()> {
    match pooling_layer(pooling, named) {
        Some(layer) => model.add(layer),
        None => Ok(()),
    }
}

/// `layer(x)` for zoo graphs written in the functional style.
pub(crate) fn call(layer: impl Layer + 'static, x: &SymbolicTensor) -> Result<SymbolicTensor> {
    let layer: LayerRef = Arc::new(layer);
    layer.apply(x)
}

/// `merge([a, b, ...])` for zoo graphs.
pub(crate) fn merge(layer: Merge, inputs: &[&SymbolicTensor]) -> Result<SymbolicTensor> {
    let layer: LayerRef = Arc::new(layer);
    layer.apply_to(inputs)
}

/// The input shape of a zoo model: fixed when given or when the top needs it.
pub(crate) fn input_shape(
    name: &str,
    options: &ZooOptions,
    default: usize,
) -> Result<crate::shape::Shape> {
    let [h, w] = match (options.input, options.include_top) {
        (Some(hw), _) => hw.map(Some),
        (None, true) => [Some(default), Some(default)],
        (None, false) => [None, None],
    };
    if options.include_top && (h, w) != (Some(default), Some(default)) {
        return Err(Error::Invalid(format!(
            "{name} with its classifier (include_top) needs a {default}x{default} input; drop the top for other sizes"
        )));
    }
    Ok(crate::shape::Shape::image(h, w, 3))
}

/// Build a zoo model and load a weights file into it: a PyTorch checkpoint through the entry's
/// name map, or a safetensors file with retrain's own variable names or the PyTorch names.
pub fn load_pretrained(
    entry: &ZooEntry,
    options: &ZooOptions,
    weights: &std::path::Path,
    device: &burn::tensor::Device,
) -> Result<Sequential> {
    let model = (entry.build)(options)?;
    let source = crate::weights::open(weights)?;
    let own_names = source.keys().iter().any(|k| k.contains('/'));
    let map = match (source.name_map(&model), own_names, entry.pytorch_names) {
        (Some(map), _, _) => map,
        (None, true, _) => NameMap::identity(&model),
        (None, false, Some(names)) => names(&model),
        (None, false, None) => {
            return Err(Error::Invalid(format!(
                "no PyTorch name map for '{}' yet; give weights saved by retrain (safetensors)",
                entry.name
            )))
        }
    };
    crate::weights::load_into(&model, source.as_ref(), &map, device).map_err(|e| match e {
        Error::TensorShape { .. }
        | Error::MissingTensor { .. }
        | Error::UnexpectedTensors { .. } => {
            Error::format(weights, format!("not weights for '{}': {e}", entry.name))
        }
        other => other,
    })?;
    Ok(model)
}
