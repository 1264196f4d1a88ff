//! Merge layers of functional graphs: `Add`, `Multiply` (element-wise, with Keras broadcasting
//! of size-1 spatial dimensions) and `Concatenate` (along channels, Keras `axis=-1`).

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// Which merge a [`Merge`] layer performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeKind {
    /// Element-wise sum (residual connections).
    Add,
    /// Element-wise product (squeeze-and-excitation gates).
    Multiply,
    /// Stacking along the channel axis (Inception branches).
    Concatenate,
}

impl MergeKind {
    fn prefix(self) -> &'static str {
        match self {
            MergeKind::Add => "add",
            MergeKind::Multiply => "multiply",
            MergeKind::Concatenate => "concatenate",
        }
    }
}

/// A layer that merges two or more inputs into one.
pub struct Merge {
    base: LayerBase,
    kind: MergeKind,
}

impl Merge {
    /// A merge layer; `name` defaults to `add`, `add_1`, ... (`multiply`, `concatenate`).
    pub fn new(name: Option<String>, kind: MergeKind) -> Self {
        Merge {
            base: LayerBase::new(name, kind.prefix()),
            kind,
        }
    }

    /// Keras `Add`.
    pub fn add(name: Option<String>) -> Self {
        Merge::new(name, MergeKind::Add)
    }

    /// Keras `Multiply`.
    pub fn multiply(name: Option<String>) -> Self {
        Merge::new(name, MergeKind::Multiply)
    }

    /// Keras `Concatenate` (channels).
    pub fn concatenate(name: Option<String>) -> Self {
        Merge::new(name, MergeKind::Concatenate)
    }

    fn mismatch(&self, inputs: &[Shape]) -> Error {
        let shapes: Vec<String> = inputs.iter().map(Shape::to_string).collect();
        let rule = match self.kind {
            MergeKind::Concatenate => "the same spatial size",
            _ => "the same shape (or size-1 height and width to broadcast)",
        };
        Error::shape(
            self.name(),
            format!("inputs need {rule}, got {}", shapes.join(" and ")),
        )
    }
}

/// The broadcast of two element-wise operands, if they are compatible.
fn broadcast(a: Shape, b: Shape) -> Option<Shape> {
    match (a, b) {
        (Shape::Vector(x), Shape::Vector(y)) if x == y => Some(a),
        (
            Shape::Image {
                height: h1,
                width: w1,
                channels: c1,
            },
            Shape::Image {
                height: h2,
                width: w2,
                channels: c2,
            },
        ) if c1 == c2 => {
            let side = |p: Option<usize>, q: Option<usize>| match (p, q) {
                (Some(1), other) | (other, Some(1)) => Some(other),
                (p, q) if p == q => Some(p),
                _ => None,
            };
            Some(Shape::image(side(h1, h2)?, side(w1, w2)?, c1))
        }
        _ => None,
    }
}

impl Layer for Merge {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        match self.kind {
            MergeKind::Add => "Add",
            MergeKind::Multiply => "Multiply",
            MergeKind::Concatenate => "Concatenate",
        }
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        self.setup_inputs(&[input])
    }

    fn setup_inputs(&self, inputs: &[Shape]) -> Result<Shape> {
        if inputs.len() < 2 {
            return Err(Error::shape(
                self.name(),
                format!("merges two or more inputs, got {}", inputs.len()),
            ));
        }
        match self.kind {
            MergeKind::Add | MergeKind::Multiply => inputs[1..]
                .iter()
                .try_fold(inputs[0], |acc, &s| broadcast(acc, s))
                .ok_or_else(|| self.mismatch(inputs)),
            MergeKind::Concatenate => {
                let channels = inputs.iter().map(Shape::channels).sum();
                match inputs[0] {
                    Shape::Vector(_) if inputs.iter().all(|s| matches!(s, Shape::Vector(_))) => {
                        Ok(Shape::Vector(channels))
                    }
                    Shape::Image { height, width, .. }
                        if inputs.iter().all(|s| {
                            matches!(s, Shape::Image { height: h, width: w, .. } if *h == height && *w == width)
                        }) =>
                    {
                        Ok(Shape::image(height, width, channels))
                    }
                    _ => Err(self.mismatch(inputs)),
                }
            }
        }
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        self.forward_inputs(vec![x], ctx)
    }

    fn forward_inputs(&self, xs: Vec<Batch>, _ctx: &mut Context) -> Result<Batch> {
        let shapes: Vec<Shape> = xs.iter().map(Batch::shape).collect();
        self.setup_inputs(&shapes)?;
        let name = self.name();
        if matches!(xs[0], Batch::Vectors(_)) {
            let ts = xs
                .into_iter()
                .map(|x| x.into_vectors(name))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Batch::Vectors(match self.kind {
                MergeKind::Add => ts.into_iter().reduce(|a, b| a + b).expect("two inputs"),
                MergeKind::Multiply => ts.into_iter().reduce(|a, b| a * b).expect("two inputs"),
                MergeKind::Concatenate => burn::tensor::Tensor::cat(ts, 1),
            }));
        }
        let ts = xs
            .into_iter()
            .map(|x| x.into_maps(name))
            .collect::<Result<Vec<_>>>()?;
        Ok(Batch::Maps(match self.kind {
            MergeKind::Add => ts.into_iter().reduce(|a, b| a + b).expect("two inputs"),
            MergeKind::Multiply => ts.into_iter().reduce(|a, b| a * b).expect("two inputs"),
            MergeKind::Concatenate => burn::tensor::Tensor::cat(ts, 1),
        }))
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: match self.kind {
                MergeKind::Add => LayerKind::Add,
                MergeKind::Multiply => LayerKind::Multiply,
                MergeKind::Concatenate => LayerKind::Concatenate,
            },
        }
    }
}
