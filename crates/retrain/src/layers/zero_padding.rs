//! ZeroPadding2D: zeros around feature maps (Keras ResNet's `conv1_pad`, MobileNet's `block_N_pad`).

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// Keras `ZeroPadding2D(((top, bottom), (left, right)))`.
pub struct ZeroPadding2d {
    base: LayerBase,
    padding: [(usize, usize); 2],
}

impl ZeroPadding2d {
    /// Pad `((top, bottom), (left, right))`; `name` defaults to `zero_padding2d`, ...
    pub fn new(name: Option<String>, padding: [(usize, usize); 2]) -> Self {
        ZeroPadding2d {
            base: LayerBase::new(name, "zero_padding2d"),
            padding,
        }
    }
}

impl Layer for ZeroPadding2d {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        let (height, width, channels) = input.maps(self.name())?;
        let [(top, bottom), (left, right)] = self.padding;
        let grow = |size: Option<usize>, a: usize, b: usize| match size {
            None => Ok(None),
            Some(n) => n
                .checked_add(a)
                .and_then(|n| n.checked_add(b))
                .map(Some)
                .ok_or_else(|| {
                    Error::shape(
                        self.name(),
                        format!("padding {:?} is too large", self.padding),
                    )
                }),
        };
        Ok(Shape::image(
            grow(height, top, bottom)?,
            grow(width, left, right)?,
            channels,
        ))
    }
    fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
        let maps = x.into_maps(self.name())?;
        Ok(Batch::Maps(maps.pad(self.padding, 0.0f32)))
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::ZeroPadding2d {
                padding: self.padding,
            },
        }
    }
}
