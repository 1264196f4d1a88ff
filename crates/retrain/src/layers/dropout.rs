//! Dropout: zeroes a fraction of the inputs during training, identity at inference.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::{Error, Result};
use crate::shape::Shape;
use burn::tensor::{Distribution, Tensor};

/// Keras `Dropout(rate)` (inverted dropout: kept values are scaled by 1 / (1 - rate)).
pub struct Dropout {
    base: LayerBase,
    rate: f64,
}

impl Dropout {
    /// A dropout layer dropping `rate` of its inputs while training.
    pub fn new(name: Option<String>, rate: f64) -> Self {
        Dropout {
            base: LayerBase::new(name, "dropout"),
            rate,
        }
    }

    fn drop<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let keep = 1.0 - self.rate;
        let mask = x.random_like(Distribution::Bernoulli(keep));
        x * mask / keep
    }
}

impl Layer for Dropout {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Dropout"
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::shape(
                self.name(),
                format!("dropout rate {} is not in [0, 1)", self.rate),
            ));
        }
        Ok(input)
    }
    fn training_dependent(&self) -> bool {
        self.rate > 0.0
    }
    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        if !ctx.training || self.rate == 0.0 {
            return Ok(x);
        }
        Ok(match x {
            Batch::Maps(t) => Batch::Maps(self.drop(t)),
            Batch::Vectors(t) => Batch::Vectors(self.drop(t)),
        })
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Dropout { rate: self.rate },
        }
    }
}
