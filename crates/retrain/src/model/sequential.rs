//! Models: a stack of layers with Keras-style surgery (add, pop, get a layer, reuse another
//! model's layers), or a functional graph of them (see [`super::functional`]).

use crate::error::{Error, Result};
use crate::layers::{Batch, Context, Layer, LayerBase, LayerKind, LayerRef, LayerSpec};
use crate::shape::Shape;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shared layers run one after the other, or as a graph when the model was built functionally
/// (Keras `Model(inputs, outputs)`, with merges and skip connections).
///
/// A `Sequential` is a [`Layer`] too, so a whole pretrained base can sit in another model as one
/// row (`vgg16 (Functional)`), and freezing it freezes everything inside.
pub struct Sequential {
    base: LayerBase,
    layers: Vec<LayerRef>,
    input: Option<Shape>,
    functional: bool,
    /// For a graph: each layer's inbound tensors, 0 being the model input and k the output of
    /// layer k - 1 (layers are in topological order). `None`: each takes the previous output.
    wiring: Option<Vec<Vec<usize>>>,
}

/// One step of [`Sequential::chain_segments`].
pub enum Segment {
    /// A layer of the model, taking the previous step's output.
    Layer(LayerRef),
    /// A part of a graph, as a model of its own sharing the graph's layers.
    Graph(LayerRef),
}

/// The name the model input goes by in graph wiring and summaries (Keras `input_layer`).
pub const INPUT_NAME: &str = "input_layer";

/// The serializable description of a [`Sequential`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Declared input shape, if any.
    pub input: Option<Shape>,
    /// Shown as a Keras functional model (an `InputLayer` row, class `Functional`).
    pub functional: bool,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
    /// For a graph: the names of each layer's inbound layers ([`INPUT_NAME`] for the input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Vec<Vec<String>>>,
}

impl Sequential {
    /// An empty model; `name` defaults to `sequential`, `sequential_1`, ...
    pub fn new(name: Option<&str>) -> Self {
        Sequential {
            base: LayerBase::new(name.map(str::to_string), "sequential"),
            layers: Vec::new(),
            input: None,
            functional: false,
            wiring: None,
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
        let Some(inbound) = &spec.inbound else {
            for layer in &spec.layers {
                model.add(layer.instantiate()?)?;
            }
            return Ok(model);
        };
        let layers = spec
            .layers
            .iter()
            .map(LayerSpec::instantiate)
            .collect::<Result<Vec<_>>>()?;
        let mut names: Vec<&str> = vec![INPUT_NAME];
        let mut wiring = Vec::new();
        if inbound.len() != layers.len() {
            return Err(Error::Invalid(format!(
                "model '{name}': {} layers but {} inbound lists",
                layers.len(),
                inbound.len()
            )));
        }
        for (layer, sources) in layers.iter().zip(inbound) {
            let indexes = sources
                .iter()
                .map(|source| {
                    names.iter().position(|n| n == source).ok_or_else(|| {
                        Error::Invalid(format!(
                            "model '{name}': layer '{}' takes '{source}', which is not an earlier layer",
                            layer.name()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if indexes.is_empty() {
                return Err(Error::Invalid(format!(
                    "model '{name}': layer '{}' has no inputs",
                    layer.name()
                )));
            }
            wiring.push(indexes);
            names.push(layer.name());
        }
        model.set_graph(layers, wiring)?;
        Ok(model)
    }

    /// The model's description.
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            input: self.input,
            functional: self.functional,
            layers: self.layers.iter().map(|l| l.spec()).collect(),
            inbound: self.wiring.as_ref().map(|wiring| {
                wiring
                    .iter()
                    .map(|sources| sources.iter().map(|&j| self.tensor_name(j)).collect())
                    .collect()
            }),
        }
    }

    /// Make this model the graph of `layers` wired by `wiring` (see the field), and build it
    /// when the input is known. Chains become plain stacks.
    pub(crate) fn set_graph(
        &mut self,
        layers: Vec<LayerRef>,
        wiring: Vec<Vec<usize>>,
    ) -> Result<()> {
        for (i, layer) in layers.iter().enumerate() {
            if layers[..i].iter().any(|l| l.name() == layer.name()) || layer.name() == INPUT_NAME {
                return Err(Error::Invalid(format!(
                    "model '{}' has two layers named '{}'",
                    self.name(),
                    layer.name()
                )));
            }
        }
        let chain = wiring.iter().enumerate().all(|(i, w)| w[..] == [i]);
        self.layers = layers;
        self.wiring = (!chain).then_some(wiring);
        if let Some(input) = self.declared_input() {
            self.build(input)?;
        }
        Ok(())
    }

    /// The model as a chain of steps for layer-by-layer execution (frozen prefixes, caching,
    /// intermediate outputs): stacked layers stay themselves; the parts of a graph between
    /// points where a single tensor carries everything become sub-graphs.
    pub fn chain_segments(&self) -> Vec<Segment> {
        let Some(wiring) = &self.wiring else {
            return self.layers.iter().cloned().map(Segment::Layer).collect();
        };
        // Tensor b is a cut when no layer from b on reads a tensor older than b.
        let n = self.layers.len();
        let mut earliest_read = vec![usize::MAX; n + 1];
        for i in (0..n).rev() {
            let min = wiring[i].iter().copied().min().unwrap_or(i);
            earliest_read[i] = earliest_read[i + 1].min(min);
        }
        let mut cuts: Vec<usize> = (0..n).filter(|&b| earliest_read[b] >= b).collect();
        cuts.push(n);
        cuts.windows(2)
            .map(|w| {
                let (from, to) = (w[0], w[1]);
                if to == from + 1 && wiring[from][..] == [from] {
                    return Segment::Layer(self.layers[from].clone());
                }
                let part = Sequential::graph(
                    &format!(
                        "{}..{}",
                        self.layers[from].name(),
                        self.layers[to - 1].name()
                    ),
                    self.layers[from..to].to_vec(),
                    wiring[from..to]
                        .iter()
                        .map(|sources| sources.iter().map(|&j| j - from).collect())
                        .collect(),
                );
                Segment::Graph(Arc::new(part))
            })
            .collect()
    }

    /// A graph model over `layers` (topological order) with `wiring` as in [`Sequential`]; the
    /// output is the last layer's.
    pub(crate) fn graph(name: &str, layers: Vec<LayerRef>, wiring: Vec<Vec<usize>>) -> Sequential {
        let mut model = Sequential::new(Some(name));
        model.functional = true;
        model.layers = layers;
        model.wiring = Some(wiring);
        model
    }

    /// Whether the layers form a graph (merges, skips) rather than a stack.
    pub fn is_graph(&self) -> bool {
        self.wiring.is_some()
    }

    /// The tensors feeding layer `i`: 0 for the model input, k for the output of layer k - 1.
    pub fn inbound(&self, i: usize) -> Vec<usize> {
        match &self.wiring {
            Some(wiring) => wiring[i].clone(),
            None => vec![i],
        }
    }

    /// The names of the tensors feeding layer `i`: [`INPUT_NAME`] or earlier layers' names.
    pub fn inbound_names(&self, i: usize) -> Vec<String> {
        self.inbound(i)
            .into_iter()
            .map(|j| self.tensor_name(j))
            .collect()
    }

    fn tensor_name(&self, j: usize) -> String {
        match j {
            0 => INPUT_NAME.to_string(),
            k => self.layers[k - 1].name().to_string(),
        }
    }

    /// Append a layer. When the input shape is known the new layer is built at once, so a
    /// shape mistake (Flatten after an unknown size, Dense on feature maps) is an error here and
    /// the model is left unchanged.
    pub fn add(&mut self, layer: LayerRef) -> Result<()> {
        if self.is_graph() {
            return Err(Error::Invalid(format!(
                "model '{}' is a functional graph; build a new one with the functional API instead of add",
                self.name()
            )));
        }
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

    /// Remove and return the last layer (Keras `model.pop()`); graphs have no last layer to pop.
    pub fn pop(&mut self) -> Option<LayerRef> {
        if self.is_graph() {
            return None;
        }
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
        run_wired(
            &self.layers,
            self.wiring.as_deref(),
            x.shape(),
            |_, layer, shapes| layer.setup_inputs(&shapes),
        )
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
        run_wired(
            &self.layers,
            self.wiring.as_deref(),
            input,
            |_, layer, shapes| layer.build_inputs(&shapes),
        )
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        self.check_batch(&x)?;
        let readers = sole_readers(self.wiring.as_deref(), self.layers.len());
        let outer = ctx.set_consumer(None);
        let result = run_wired(&self.layers, self.wiring.as_deref(), x, |i, layer, xs| {
            ctx.set_consumer(match i + 1 == self.layers.len() {
                true => outer.clone(),
                false => readers[i].map(|reader| self.layers[reader].clone()),
            });
            layer.forward_inputs(xs, ctx)
        });
        ctx.set_consumer(outer);
        result
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

/// For each of `layers` layers, the one layer that reads its output, where exactly one does
/// (once): the next one in a chain, the only inbound edge in a graph (`wiring`, see
/// [`Sequential`]).
fn sole_readers(wiring: Option<&[Vec<usize>]>, layers: usize) -> Vec<Option<usize>> {
    let Some(wiring) = wiring else {
        return (0..layers)
            .map(|i| Some(i + 1).filter(|&r| r < layers))
            .collect();
    };
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (reader, sources) in wiring.iter().enumerate() {
        for &value in sources {
            // Value 0 is the graph input, value i + 1 the output of layer i.
            if let Some(producer) = value.checked_sub(1) {
                readers[producer].push(reader);
            }
        }
    }
    readers
        .into_iter()
        .map(|r| match r[..] {
            [only] => Some(only),
            _ => None,
        })
        .collect()
}

/// Evaluate `layers` on `input` in order, each on its inbound values (`wiring`, see
/// [`Sequential`]; `None` for a chain): shapes for shape inference, batches for a forward pass.
/// Values are dropped after their last use. Returns the last layer's value.
pub(crate) fn run_wired<T: Clone>(
    layers: &[LayerRef],
    wiring: Option<&[Vec<usize>]>,
    input: T,
    mut step: impl FnMut(usize, &LayerRef, Vec<T>) -> Result<T>,
) -> Result<T> {
    let Some(wiring) = wiring else {
        return layers
            .iter()
            .enumerate()
            .try_fold(input, |x, (i, layer)| step(i, layer, vec![x]));
    };
    let mut last_use = vec![0; layers.len() + 1];
    for (i, sources) in wiring.iter().enumerate() {
        for &j in sources {
            last_use[j] = i;
        }
    }
    let mut values: Vec<Option<T>> = vec![None; layers.len() + 1];
    values[0] = Some(input);
    for (i, layer) in layers.iter().enumerate() {
        let xs = wiring[i]
            .iter()
            .map(|&j| values[j].clone().expect("wiring is topological"))
            .collect();
        for &j in &wiring[i] {
            if last_use[j] == i {
                values[j] = None;
            }
        }
        values[i + 1] = Some(step(i, layer, xs)?);
    }
    Ok(values.pop().flatten().expect("a graph has layers"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::amx;
    use crate::kernels::test_support::host;
    use crate::layers::{ActivationKind, Context, Conv2d, Conv2dConfig, Padding, Precision};
    use burn::tensor::{DType, Device, Distribution, Tensor};

    #[test]
    fn each_output_has_a_sole_reader_where_one_layer_reads_it_once() {
        assert_eq!(sole_readers(None, 3), [Some(1), Some(2), None]);
        // A residual block: a, b, add(input, b); and a value read twice: c(a, b).
        let residual = [vec![0], vec![1], vec![0, 2]];
        assert_eq!(sole_readers(Some(&residual), 3), [Some(1), Some(2), None]);
        let fan_out = [vec![0], vec![1], vec![1, 2]];
        assert_eq!(sole_readers(Some(&fan_out), 3), [None, Some(2), None]);
    }

    /// At bf16 inference on a CPU with AMX tiles, a 1x1 convolution whose one reader is a
    /// depthwise convolution (stride 1, read in place, or 2, split into column phases) hands
    /// its map over in bf16: the model's result is the depthwise convolution of the
    /// expansion's output rounded to bf16, to the bit.
    #[test]
    fn expansions_hand_bf16_maps_to_depthwise_convolutions() {
        if !amx::available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        for stride in [1, 2] {
            expansion_hands_bf16_maps_at(stride);
        }
    }

    fn expansion_hands_bf16_maps_at(stride: usize) {
        let device = Device::flex();
        let mut model =
            Sequential::new(Some("handoff")).with_input(Shape::image(Some(40), Some(40), 8));
        let expand = Conv2dConfig::new(48, 1).activation(ActivationKind::Relu6);
        let depthwise = Conv2dConfig::depthwise(3)
            .strides(stride)
            .padding(Padding::Same);
        for (name, config) in [("expand", expand), ("depthwise", depthwise)] {
            let layer = Conv2d::from_config(Some(name.into()), config);
            model.add(Arc::new(layer)).unwrap();
        }
        model.initialize(0, &device);
        let [expand, depthwise]: [LayerRef; 2] = model.sublayers().try_into().ok().unwrap();
        let x = Tensor::<4>::random([2, 8, 40, 40], Distribution::Uniform(-1.0, 1.0), &device);
        let mut ctx = Context::inference(&device).with_precision(Precision::Bf16);
        let maps = |batch: Batch| batch.into_maps("test").unwrap();
        let chained = maps(model.forward(Batch::Maps(x.clone()), &mut ctx).unwrap());
        let expanded = maps(expand.forward(Batch::Maps(x.clone()), &mut ctx).unwrap());
        assert_eq!(expanded.dtype(), DType::F32, "no reader named: f32");
        let rounded = Batch::Maps(Precision::Bf16.round_tensor(expanded));
        let want = maps(depthwise.forward(rounded, &mut ctx).unwrap());
        assert_eq!(host(chained), host(want), "stride {stride}");
        ctx.set_consumer(Some(depthwise.clone()));
        let handed = maps(expand.forward(Batch::Maps(x.clone()), &mut ctx).unwrap());
        assert_eq!(handed.dtype(), DType::BF16, "stride {stride}");
        // At f32 nothing is rounded on the way.
        let mut ctx = Context::inference(&device);
        ctx.set_consumer(Some(depthwise));
        let kept = maps(expand.forward(Batch::Maps(x), &mut ctx).unwrap());
        assert_eq!(kept.dtype(), DType::F32);
    }
}
