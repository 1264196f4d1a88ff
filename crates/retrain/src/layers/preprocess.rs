//! Input preprocessing as layers inside the model, so nobody forgets it.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::{Error, Result};
use crate::shape::Shape;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How RGB pixels in [0, 255] become network inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreprocessMode {
    /// Keras `caffe` (VGG, ResNet50): RGB -> BGR, then subtract 103.939, 116.779, 123.68.
    Caffe,
    /// Keras `tf` (MobileNet, Inception): x / 127.5 - 1, into [-1, 1].
    Tf,
    /// Keras `torch` / torchvision: x / 255, then ImageNet mean (0.485, 0.456, 0.406) and std
    /// (0.229, 0.224, 0.225) per channel.
    Torch,
    /// x / 255, then `(x - mean) / std` per RGB channel.
    MeanStd { mean: [f64; 3], std: [f64; 3] },
}

impl PreprocessMode {
    /// Per-channel `(scale, offset)` so that `out = in * scale + offset`, and whether the
    /// channels are reversed first.
    fn affine(&self) -> ([f64; 3], [f64; 3], bool) {
        let from_mean_std = |mean: [f64; 3], std: [f64; 3]| {
            (
                [0, 1, 2].map(|c| 1.0 / (255.0 * std[c])),
                [0, 1, 2].map(|c| -mean[c] / std[c]),
                false,
            )
        };
        match self {
            PreprocessMode::Caffe => ([1.0; 3], [-103.939, -116.779, -123.68], true),
            PreprocessMode::Tf => ([1.0 / 127.5; 3], [-1.0; 3], false),
            PreprocessMode::Torch => from_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            PreprocessMode::MeanStd { mean, std } => from_mean_std(*mean, *std),
        }
    }
}

fn channel_tensor(values: [f64; 3], ctx: &Context) -> Tensor<4> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [1, 3, 1, 1]), &ctx.device)
}

/// Preprocessing layer taking RGB images with values in [0, 255] (Keras `preprocess_input`).
pub struct Preprocess {
    base: LayerBase,
    mode: PreprocessMode,
}

impl Preprocess {
    /// A preprocessing layer; `name` defaults to `preprocess`.
    pub fn new(name: Option<String>, mode: PreprocessMode) -> Self {
        Preprocess {
            base: LayerBase::new(name, "preprocess"),
            mode,
        }
    }
}

impl Layer for Preprocess {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Preprocess"
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        match input {
            Shape::Image { channels: 3, .. } => Ok(input),
            _ => Err(Error::shape(
                self.name(),
                format!("preprocessing expects RGB images, got {input}"),
            )),
        }
    }
    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        let x = x.into_maps(self.name())?;
        if x.dims()[1] != 3 {
            return Err(Error::shape(
                self.name(),
                format!("preprocessing expects 3 channels, got {:?}", x.dims()),
            ));
        }
        let (scale, offset, reverse) = self.mode.affine();
        let x = if reverse { x.flip([1]) } else { x };
        Ok(Batch::Maps(
            x * channel_tensor(scale, ctx) + channel_tensor(offset, ctx),
        ))
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Preprocess {
                mode: self.mode.clone(),
            },
        }
    }
}

/// Keras `Rescaling(scale, offset)`: `x * scale + offset` on every value.
pub struct Rescaling {
    base: LayerBase,
    scale: f64,
    offset: f64,
}

impl Rescaling {
    /// A rescaling layer; `name` defaults to `rescaling`.
    pub fn new(name: Option<String>, scale: f64, offset: f64) -> Self {
        Rescaling {
            base: LayerBase::new(name, "rescaling"),
            scale,
            offset,
        }
    }
}

impl Layer for Rescaling {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Rescaling"
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        Ok(input)
    }
    fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
        let (s, o) = (self.scale, self.offset);
        Ok(match x {
            Batch::Maps(t) => Batch::Maps(t * s + o),
            Batch::Vectors(t) => Batch::Vectors(t * s + o),
        })
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Rescaling {
                scale: self.scale,
                offset: self.offset,
            },
        }
    }
}
