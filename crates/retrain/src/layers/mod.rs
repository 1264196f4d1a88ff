//! Layers: small named units with a `trainable` flag, one concept per file, the Keras way.
//!
//! A layer is shared through `Arc<dyn Layer>`: putting the same layer into two models shares its
//! weights and its `trainable` flag, exactly like reusing a Keras layer object.

mod activation;
mod batch_norm;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod merge;
mod pooling;
mod preprocess;
mod zero_padding;

pub use activation::{Activation, ActivationKind};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dense::{Dense, DenseConfig};
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use merge::{Merge, MergeKind};
pub use pooling::{AvgPool2d, GlobalAveragePooling2d, GlobalMaxPooling2d, MaxPool2d, PoolConfig};
pub use preprocess::{Preprocess, PreprocessMode, Rescaling};
pub use zero_padding::ZeroPadding2d;

use crate::error::{Error, Result};
pub use crate::kernels::bf16::Precision;
use crate::shape::Shape;
use crate::variable::Variable;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A batch flowing between layers: feature maps (NCHW) or flat vectors (NC).
#[derive(Clone, Debug)]
pub enum Batch {
    /// `[batch, channels, height, width]`.
    Maps(Tensor<4>),
    /// `[batch, features]`.
    Vectors(Tensor<2>),
}

impl Batch {
    /// The concrete dimensions, batch first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Batch::Maps(t) => t.dims().to_vec(),
            Batch::Vectors(t) => t.dims().to_vec(),
        }
    }

    /// The per-sample shape of this batch.
    pub fn shape(&self) -> Shape {
        match self {
            Batch::Maps(t) => {
                let [_, c, h, w] = t.dims();
                Shape::image(Some(h), Some(w), c)
            }
            Batch::Vectors(t) => Shape::Vector(t.dims()[1]),
        }
    }

    /// The feature maps, or a shape error naming `layer`.
    pub fn into_maps(self, layer: &str) -> Result<Tensor<4>> {
        match self {
            Batch::Maps(t) => Ok(t),
            Batch::Vectors(t) => Err(Error::shape(
                layer,
                format!("expects feature maps, got vectors of shape {:?}", t.dims()),
            )),
        }
    }

    /// The vectors, or a shape error naming `layer`.
    pub fn into_vectors(self, layer: &str) -> Result<Tensor<2>> {
        match self {
            Batch::Vectors(t) => Ok(t),
            Batch::Maps(t) => Err(Error::shape(
                layer,
                format!(
                    "expects vectors, got feature maps of shape {:?}; add Flatten or a global pooling layer first",
                    t.dims()
                ),
            )),
        }
    }
}

/// Where a forward pass runs and whether it trains.
///
/// In training mode with gradient tracking, every trainable variable of a trainable layer becomes
/// an autodiff leaf (once per pass, so shared layers share the leaf); frozen variables stay plain
/// tensors, so a frozen prefix runs without any autodiff bookkeeping.
pub struct Context {
    /// Device the tensors live on.
    pub device: Device,
    /// Training mode: dropout active, trainable BatchNorm uses batch statistics.
    pub training: bool,
    /// Precision of the products of convolution and dense layers at inference.
    pub precision: Precision,
    leaves: Option<HashMap<u64, (Variable, Tensor<1>)>>,
    /// The layer that reads the output of the layer running now, where it is the only one
    /// (set by [`run_chain`] and the graph executor): a producer may hand it its map in bf16
    /// when it [`Layer::reads_bf16_maps`].
    consumer: Option<LayerRef>,
}

impl Context {
    /// Inference: no dropout, BatchNorm on moving statistics, no gradients.
    pub fn inference(device: &Device) -> Self {
        Context {
            device: device.clone(),
            training: false,
            precision: Precision::F32,
            leaves: None,
            consumer: None,
        }
    }

    /// This context with the products of convolution and dense layers at `precision` (at
    /// inference; training stays f32).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        if !self.training {
            self.precision = precision;
        }
        self
    }

    /// The sole reader of the output of the layer running now, if known ([`run_chain`]).
    pub fn consumer(&self) -> Option<&LayerRef> {
        self.consumer.as_ref()
    }

    /// Make `consumer` the reader of the next layer's output; returns the one before.
    pub fn set_consumer(&mut self, consumer: Option<LayerRef>) -> Option<LayerRef> {
        std::mem::replace(&mut self.consumer, consumer)
    }

    /// Training mode; with `track_gradients` the trainable variables become autodiff leaves.
    pub fn training(device: &Device, track_gradients: bool) -> Self {
        Context {
            device: device.clone(),
            training: true,
            precision: Precision::F32,
            leaves: track_gradients.then(HashMap::new),
            consumer: None,
        }
    }

    /// The value of `variable` as used by a layer whose `trainable` flag is `layer_trainable`.
    pub fn weight<const D: usize>(
        &mut self,
        variable: &Variable,
        layer_trainable: bool,
    ) -> Tensor<D> {
        let dims: [usize; D] = variable
            .shape()
            .to_vec()
            .try_into()
            .unwrap_or_else(|_| panic!("variable '{}' is not rank {D}", variable.path()));
        let tracked = layer_trainable && variable.is_trainable_kind();
        match self.leaves.as_mut() {
            Some(leaves) if tracked => {
                let device = &self.device;
                let (_, leaf) = leaves.entry(variable.id()).or_insert_with(|| {
                    let leaf = variable.value(device).autodiff().require_grad();
                    (variable.clone(), leaf)
                });
                leaf.clone().reshape(dims)
            }
            _ => variable.value(&self.device).reshape(dims),
        }
    }

    /// The autodiff leaves created during this pass, with their variables.
    pub fn into_leaves(self) -> Vec<(Variable, Tensor<1>)> {
        self.leaves
            .map(|l| l.into_values().collect())
            .unwrap_or_default()
    }
}

/// What every layer has: a unique name, a `trainable` flag and the shapes it was built for.
#[derive(Debug)]
pub struct LayerBase {
    name: String,
    trainable: AtomicBool,
    io: RwLock<Option<(Shape, Shape)>>,
}

impl LayerBase {
    /// A trainable base named `name`, or an automatic Keras-style name from `prefix`.
    pub fn new(name: Option<String>, prefix: &str) -> Self {
        LayerBase {
            name: name.unwrap_or_else(|| unique_name(prefix)),
            trainable: AtomicBool::new(true),
            io: RwLock::new(None),
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The (input, output) shapes of the last build, if any.
    pub fn recorded_io(&self) -> Option<(Shape, Shape)> {
        *self.io.read().expect("layer lock")
    }
}

/// Keras-style automatic names: `dense`, `dense_1`, `dense_2`, ...
pub fn unique_name(prefix: &str) -> String {
    static COUNTS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    let mut counts = COUNTS.lock().expect("name counter");
    let n = counts
        .get_or_insert_with(HashMap::new)
        .entry(prefix.to_string())
        .or_insert(0);
    let name = if *n == 0 {
        prefix.to_string()
    } else {
        format!("{prefix}_{n}")
    };
    *n += 1;
    name
}

/// The layer interface. Implementors provide `base`, `class_name`, `setup`, `forward` and `spec`.
pub trait Layer: Send + Sync {
    /// Name, trainable flag and recorded shapes.
    fn base(&self) -> &LayerBase;

    /// The Keras class name shown in summaries (`Conv2D`, `Dense`, ...).
    fn class_name(&self) -> &'static str;

    /// Check `input`, create the variables it implies (lazily valued) and return the output shape.
    fn setup(&self, input: Shape) -> Result<Shape>;

    /// Run the layer on a batch.
    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch>;

    /// Whether this layer reads maps of `dims` (NCHW) in bf16 when its producer hands them over
    /// so (at inference with bf16 products: half the bytes of a map through memory). Only
    /// convolutions whose CPU kernel takes bf16 input do.
    fn reads_bf16_maps(&self, _dims: [usize; 4], _ctx: &Context) -> bool {
        false
    }

    /// Shape inference over the inputs of a graph node: merge layers take several, every other
    /// layer exactly one.
    fn setup_inputs(&self, inputs: &[Shape]) -> Result<Shape> {
        match inputs {
            [one] => self.setup(*one),
            _ => Err(Error::shape(
                self.name(),
                format!("takes one input, got {}", inputs.len()),
            )),
        }
    }

    /// Run a graph node on its inputs (see [`Layer::setup_inputs`]).
    fn forward_inputs(&self, xs: Vec<Batch>, ctx: &mut Context) -> Result<Batch> {
        match <[Batch; 1]>::try_from(xs) {
            Ok([x]) => self.forward(x, ctx),
            Err(xs) => Err(Error::shape(
                self.name(),
                format!("takes one input, got {}", xs.len()),
            )),
        }
    }

    /// The serializable description this layer can be rebuilt from.
    fn spec(&self) -> LayerSpec;

    /// Own variables, or those of all sublayers for composite layers, in Keras order.
    fn variables(&self) -> Vec<Variable> {
        self.sublayers()
            .iter()
            .flat_map(|l| l.variables())
            .collect()
    }

    /// Layers nested inside this one (a model used as a layer, a block).
    fn sublayers(&self) -> Vec<Arc<dyn Layer>> {
        Vec::new()
    }

    /// Whether the layer computes something different while training, beyond what its trainable
    /// weights change (dropout, a BatchNorm on batch statistics). Such layers cannot be part of a
    /// cached frozen prefix.
    fn training_dependent(&self) -> bool {
        self.sublayers().iter().any(|l| l.training_dependent())
    }

    /// A copy of this composite layer running `layers` instead of its own sublayers (same
    /// wiring, e.g. the residual connection of a block); `None` when it cannot be rebuilt so.
    fn with_sublayers(&self, _layers: Vec<Arc<dyn Layer>>) -> Option<Arc<dyn Layer>> {
        None
    }

    /// Whether the block adds its input to its output (a residual connection).
    fn residual(&self) -> bool {
        false
    }

    /// This layer as a model, when it is one (for expanding nested models).
    fn as_model(&self) -> Option<&crate::model::Sequential> {
        None
    }

    /// The layer's name.
    fn name(&self) -> &str {
        &self.base().name
    }

    /// Whether training may change this layer.
    fn trainable(&self) -> bool {
        self.base().trainable.load(Ordering::Relaxed)
    }

    /// Freeze or unfreeze this layer and, like Keras, every layer nested inside it.
    fn set_trainable(&self, trainable: bool) {
        self.base().trainable.store(trainable, Ordering::Relaxed);
        for layer in self.sublayers() {
            layer.set_trainable(trainable);
        }
    }

    /// Variables an optimizer updates: none when frozen, never statistics.
    fn trainable_variables(&self) -> Vec<Variable> {
        let sublayers = self.sublayers();
        if !sublayers.is_empty() {
            return sublayers
                .iter()
                .flat_map(|l| l.trainable_variables())
                .collect();
        }
        if !self.trainable() {
            return Vec::new();
        }
        self.variables()
            .into_iter()
            .filter(Variable::is_trainable_kind)
            .collect()
    }

    /// Variables an optimizer leaves alone.
    fn non_trainable_variables(&self) -> Vec<Variable> {
        let trainable: Vec<u64> = self
            .trainable_variables()
            .iter()
            .map(Variable::id)
            .collect();
        self.variables()
            .into_iter()
            .filter(|v| !trainable.contains(&v.id()))
            .collect()
    }

    /// Number of scalars in all variables.
    fn param_count(&self) -> usize {
        self.variables().iter().map(Variable::numel).sum()
    }

    /// Keras `layer(x)`: build for the batch's shape if needed, then run.
    fn call(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        self.setup(x.shape())?;
        self.forward(x, ctx)
    }

    /// Build for `input` (setup plus recording the shapes for summaries).
    fn build(&self, input: Shape) -> Result<Shape> {
        self.build_inputs(&[input])
    }

    /// Build a graph node for its inputs; the first input's shape is the one recorded.
    fn build_inputs(&self, inputs: &[Shape]) -> Result<Shape> {
        let output = self.setup_inputs(inputs)?;
        if let Some(&first) = inputs.first() {
            *self.base().io.write().expect("layer lock") = Some((first, output));
        }
        Ok(output)
    }

    /// The input shape this layer was last built for.
    fn input_shape(&self) -> Option<Shape> {
        self.base().recorded_io().map(|(i, _)| i)
    }

    /// The output shape this layer was last built for.
    fn output_shape(&self) -> Option<Shape> {
        self.base().recorded_io().map(|(_, o)| o)
    }
}

/// A shared layer.
pub type LayerRef = Arc<dyn Layer>;

/// Run `layers` one after the other, each told the next one as its output's reader
/// ([`Context::consumer`]), the last one the reader `ctx` had.
pub fn run_chain(layers: &[LayerRef], x: Batch, ctx: &mut Context) -> Result<Batch> {
    let outer = ctx.set_consumer(None);
    let result = layers.iter().enumerate().try_fold(x, |x, (i, layer)| {
        ctx.set_consumer(layers.get(i + 1).or(outer.as_ref()).cloned());
        layer.forward(x, ctx)
    });
    ctx.set_consumer(outer);
    result
}

/// Padding of convolutions and pooling windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding.
    Valid,
    /// Keras / TensorFlow "same": output = ceil(input / stride); when the total padding is odd
    /// the extra row and column go at the bottom and right (TF-SAME, computed per input size).
    Same,
    /// PyTorch-style fixed padding on every side.
    Symmetric(usize),
    /// Fixed `(before, after)` padding along height and width: a ZeroPadding2D folded into the
    /// convolution after it (`model::fold_batch_norms`), whose kernels then pad as they copy
    /// their input instead of reading a padded copy of the whole map.
    Explicit([(usize, usize); 2]),
}

impl Padding {
    /// `(begin, end)` padding along `axis` (0 height, 1 width) of length `input`.
    pub fn amounts(
        self,
        axis: usize,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> (usize, usize) {
        match self {
            Padding::Valid => (0, 0),
            Padding::Symmetric(p) => (p, p),
            Padding::Explicit(padding) => padding[axis],
            Padding::Same => {
                let span = (kernel - 1) * dilation + 1;
                let total = ((input.div_ceil(stride) - 1) * stride + span).saturating_sub(input);
                (total / 2, total - total / 2)
            }
        }
    }
}

/// The serializable description of a layer, from which it can be rebuilt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Unique layer name.
    pub name: String,
    /// The `trainable` flag.
    pub trainable: bool,
    /// Kind and configuration.
    #[serde(flatten)]
    pub kind: LayerKind,
}

/// Layer kinds with their configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum LayerKind {
    Conv2d(Conv2dConfig),
    Dense(DenseConfig),
    BatchNorm(BatchNormConfig),
    MaxPool2d(PoolConfig),
    AvgPool2d(PoolConfig),
    GlobalAveragePooling2d,
    GlobalMaxPooling2d,
    Flatten,
    Dropout {
        rate: f64,
    },
    Activation {
        activation: ActivationKind,
    },
    #[serde(rename = "relu")]
    ReLU {
        max_value: Option<f64>,
    },
    Preprocess {
        mode: PreprocessMode,
    },
    Rescaling {
        scale: f64,
        offset: f64,
    },
    ZeroPadding2d {
        padding: [(usize, usize); 2],
    },
    Add,
    Multiply,
    Concatenate,
    MbConv(crate::zoo::efficientnet_lite::MbConvConfig),
    Model(crate::model::ModelSpec),
}

impl LayerSpec {
    /// Rebuild the layer (variables are created lazily; load weights afterwards).
    pub fn instantiate(&self) -> Result<LayerRef> {
        let name = Some(self.name.clone());
        let layer: LayerRef = match &self.kind {
            LayerKind::Conv2d(c) => Arc::new(Conv2d::from_config(name, c.clone())),
            LayerKind::Dense(c) => Arc::new(Dense::from_config(name, c.clone())),
            LayerKind::BatchNorm(c) => Arc::new(BatchNorm::from_config(name, c.clone())),
            LayerKind::MaxPool2d(c) => Arc::new(MaxPool2d::from_config(name, *c)),
            LayerKind::AvgPool2d(c) => Arc::new(AvgPool2d::from_config(name, *c)),
            LayerKind::GlobalAveragePooling2d => Arc::new(GlobalAveragePooling2d::new(name)),
            LayerKind::GlobalMaxPooling2d => Arc::new(GlobalMaxPooling2d::new(name)),
            LayerKind::Flatten => Arc::new(Flatten::new(name)),
            LayerKind::Dropout { rate } => Arc::new(Dropout::new(name, *rate)),
            LayerKind::Activation { activation } => Arc::new(Activation::new(name, *activation)),
            LayerKind::ReLU { max_value } => Arc::new(Activation::relu(name, *max_value)?),
            LayerKind::Preprocess { mode } => Arc::new(Preprocess::new(name, mode.clone())),
            LayerKind::Rescaling { scale, offset } => {
                Arc::new(Rescaling::new(name, *scale, *offset))
            }
            LayerKind::ZeroPadding2d { padding } => Arc::new(ZeroPadding2d::new(name, *padding)),
            LayerKind::Add => Arc::new(Merge::add(name)),
            LayerKind::Multiply => Arc::new(Merge::multiply(name)),
            LayerKind::Concatenate => Arc::new(Merge::concatenate(name)),
            LayerKind::MbConv(c) => Arc::new(crate::zoo::efficientnet_lite::MbConv::from_config(
                name,
                c.clone(),
            )),
            LayerKind::Model(m) => Arc::new(crate::model::Sequential::from_spec(&self.name, m)?),
        };
        layer.set_trainable(self.trainable);
        Ok(layer)
    }
}

/// Variables a layer creates on its first build, for a given input width (channels/features).
#[derive(Default)]
pub struct LazyVariables(RwLock<Option<(usize, Vec<Variable>)>>);

impl LazyVariables {
    /// Create the variables for `input_width` the first time; afterwards insist on the same width.
    pub fn ensure(
        &self,
        layer: &str,
        input_width: usize,
        create: impl FnOnce() -> Vec<Variable>,
    ) -> Result<()> {
        let mut slot = self.0.write().expect("layer lock");
        match slot.as_ref() {
            Some((built, _)) if *built != input_width => Err(Error::shape(
                layer,
                format!("was built for {built} input channels/features, got {input_width}"),
            )),
            Some(_) => Ok(()),
            None => {
                *slot = Some((input_width, create()));
                Ok(())
            }
        }
    }

    /// The variables (empty before the first build: Keras' lazy `weights == []`).
    pub fn all(&self) -> Vec<Variable> {
        self.0
            .read()
            .expect("layer lock")
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The `i`-th variable, or an error saying the layer was never built.
    pub fn get(&self, layer: &str, i: usize) -> Result<Variable> {
        self.all()
            .get(i)
            .cloned()
            .ok_or_else(|| Error::shape(layer, "used before it was built"))
    }
}
