//! Flatten: feature maps to vectors, in Keras (height, width, channels) order.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// Keras `Flatten`. Needs a known spatial size: the next Dense layer's weights depend on it.
pub struct Flatten {
    base: LayerBase,
}

impl Flatten {
    /// A Flatten layer; `name` defaults to `flatten`, `flatten_1`, ...
    pub fn new(name: Option<String>) -> Self {
        Flatten {
            base: LayerBase::new(name, "flatten"),
        }
    }
}

impl Layer for Flatten {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Flatten"
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        match input {
            Shape::Vector(n) => Ok(Shape::Vector(n)),
            Shape::Image {
                height: Some(h),
                width: Some(w),
                channels,
            } => Ok(Shape::Vector(h * w * channels)),
            Shape::Image { .. } => Err(Error::shape(
                self.name(),
                format!(
                    "cannot flatten input {input} with unknown height or width; give the model a fixed input size or use GlobalAveragePooling2D"
                ),
            )),
        }
    }
    fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
        Ok(match x {
            // NCHW -> NHWC before flattening so the order matches Keras weights.
            Batch::Maps(t) => Batch::Vectors(t.permute([0, 2, 3, 1]).flatten(1, 3)),
            v => v,
        })
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Flatten,
        }
    }
}
