//! Sequential models with Keras-style surgery: add, pop, get a layer, reuse another model's layers.

use crate::error::{Error, Result};
use crate::layers::{Batch, Context, Layer, LayerBase, LayerKind, LayerRef, LayerSpec};
use crate::shape::Shape;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A stack of shared layers run one after the other.
///
/// A `Sequential` is a [`Layer`] too, so a whole pretrained base can sit in another model as one
/// row (`vgg16 (Functional)`), and freezing it freezes everything inside.
pub struct Sequential {
    base: LayerBase,
    layers: Vec<LayerRef>,
    input: Option<Shape>,
    functional: bool,
}

/// The serializable description of a [`Sequential`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Declared input shape, if any.
    pub input: Option<Shape>,
    /// Shown as a Keras functional model (an `InputLayer` row, class `Functional`).
    pub functional: bool,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

impl Sequential {
    /// An empty model; `name` defaults to `sequential`, `sequential_1`, ...
    pub fn new(name: Option<&str>) -> Self {
        Sequential {
            base: LayerBase::new(name.map(str::to_string), "sequential"),
            layers: Vec::new(),
            input: None,
            functional: false,
        }
    }

    /// Declare the input shape (Keras `Input(shape=...)`), which lets layers build as they are added.
    pub fn with_input(mut self, input: Shape) -> Self {
        self.input = Some(input);
        self
    }

    /// Show this model like a Keras functional application (`InputLayer` row, class `Functional`).
    pub fn as_functional(mut self) -> Self {
        self.functional = true;
        self
    }

    /// A new model over the given layers (shared, not copied), built if the input is known.
    pub fn from_layers(name: Option<&str>, layers: &[LayerRef]) -> Result<Self> {
        let mut model = Sequential::new(name);
        for layer in layers {
            model.add(layer.clone())?;
        }
        Ok(model)
    }

    /// Rebuild a model from its description (weights are created lazily; load them afterwards).
    pub fn from_spec(name: &str, spec: &ModelSpec) -> Result<Self> {
        let mut model = Sequential::new(Some(name));
        model.input = spec.input;
        model.functional = spec.functional;
        for layer in &spec.layers {
            model.add(layer.instantiate()?)?;
        }
        Ok(model)
    }

    /// The model's description.
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            input: self.input,
            functional: self.functional,
            layers: self.layers.iter().map(|l| l.spec()).collect(),
        }
    }

    /// Append a layer. When the input shape is known the new layer is built at once, so a
    /// shape mistake (Flatten after an unknown size, Dense on feature maps) is an error here and
    /// the model is left unchanged.
    pub fn add(&mut self, layer: LayerRef) -> Result<()> {
        if self.layers.iter().any(|l| l.name() == layer.name()) {
            return Err(Error::Invalid(format!(
                "model '{}' already has a layer named '{}'",
                self.name(),
                layer.name()
            )));
        }
        self.layers.push(layer);
        if let Some(input) = self.declared_input() {
            if let Err(e) = self.build(input) {
                self.layers.pop();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Remove and return the last layer (Keras `model.pop()`).
    pub fn pop(&mut self) -> Option<LayerRef> {
        self.layers.pop()
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[LayerRef] {
        &self.layers
    }

    /// A top-level layer by name (Keras `get_layer`).
    pub fn get_layer(&self, name: &str) -> Result<LayerRef> {
        self.layers
            .iter()
            .find(|l| l.name() == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self.layers.iter().map(|l| l.name()).collect();
                Error::Invalid(format!(
                    "model '{}' has no layer '{name}'; its layers are: {}",
                    self.name(),
                    names.join(", ")
                ))
            })
    }

    /// The input shape: declared, or the one the first layer was built for.
    pub fn declared_input(&self) -> Option<Shape> {
        self.input
            .or_else(|| self.layers.first().and_then(|l| l.input_shape()))
    }

    /// Whether this model is shown as a Keras functional model.
    pub fn is_functional(&self) -> bool {
        self.functional
    }

    /// Run on a batch of NCHW images in inference mode, after checking the batch fits the model.
    pub fn predict(&self, images: Tensor<4>) -> Result<Batch> {
        let device = images.device();
        let mut ctx = Context::inference(&device);
        self.forward(Batch::Maps(images), &mut ctx)
    }

    /// Initialize every variable no weights were loaded into, reproducibly from `seed`.
    pub fn initialize(&self, seed: u64, device: &Device) {
        for v in self.variables() {
            v.initialize(seed, device);
        }
    }

    fn check_batch(&self, x: &Batch) -> Result<()> {
        let dims = x.dims();
        if let Some(input) = self.declared_input() {
            if !input.accepts(&dims) {
                return Err(Error::shape(
                    self.name(),
                    format!(
                        "expects input {input} (channels-last), got a batch of {dims:?} (NCHW)"
                    ),
                ));
            }
        }
        // Shape inference on the concrete size: too-small images, lazy layers.
        self.layers
            .iter()
            .try_fold(x.shape(), |shape, layer| layer.setup(shape))
            .map(|_| ())
    }
}

impl Layer for Sequential {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        if self.functional {
            "Functional"
        } else {
            "Sequential"
        }
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        if let Some(declared) = self.input {
            let fits = match (declared, input) {
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
                ) => c1 == c2 && (h1.is_none() || h1 == h2) && (w1.is_none() || w1 == w2),
                (a, b) => a == b,
            };
            if !fits {
                return Err(Error::shape(
                    self.name(),
                    format!("expects input {declared}, got {input}"),
                ));
            }
        }
        self.layers
            .iter()
            .try_fold(input, |shape, layer| layer.build(shape))
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        self.check_batch(&x)?;
        self.layers
            .iter()
            .try_fold(x, |x, layer| layer.forward(x, ctx))
    }

    fn sublayers(&self) -> Vec<LayerRef> {
        self.layers.clone()
    }

    fn as_model(&self) -> Option<&Sequential> {
        Some(self)
    }

    fn input_shape(&self) -> Option<Shape> {
        self.base
            .recorded_io()
            .map(|(input, _)| input)
            .or_else(|| self.declared_input())
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Model(self.model_spec()),
        }
    }
}

impl From<Sequential> for LayerRef {
    fn from(model: Sequential) -> Self {
        Arc::new(model)
    }
}
