//! Intermediate outputs: any named layer of a model as an output, like Keras'
//! `Model(vgg.input, [vgg.get_layer("block4_pool").output, ...])`, torchvision's
//! `create_feature_extractor` or timm's `features_only`.
//!
//! A model is seen here as the graph of its leaf layers: nested models and blocks are opened up
//! (a residual block adds a `{block}_add` node, as Keras names it), so every layer inside an
//! EfficientNet block is reachable by name, exactly as the layers of VGG are.

use super::sequential::run_wired;
use super::Sequential;
use crate::error::{Error, Result};
use crate::layers::{Batch, Context, Layer, LayerRef, Merge};
use crate::shape::Shape;
use std::collections::HashMap;
use std::sync::Arc;

/// A model opened up into its leaf layers, wired as a graph.
pub struct LeafGraph {
    /// Leaf layers in topological order (shared with the model; `_add` nodes are new).
    pub layers: Vec<LayerRef>,
    /// Inbound tensors of each layer: 0 for the input, k for the output of layer k - 1.
    pub wiring: Vec<Vec<usize>>,
    /// For every name (leaf, block or nested model), the tensor it outputs.
    outputs: HashMap<String, usize>,
    /// For every name, the first leaf layer it covers.
    starts: HashMap<String, usize>,
}

impl LeafGraph {
    /// Open up `model`.
    pub fn of(model: &Sequential) -> LeafGraph {
        let mut graph = LeafGraph {
            layers: Vec::new(),
            wiring: Vec::new(),
            outputs: HashMap::new(),
            starts: HashMap::new(),
        };
        graph.add_model(model, 0);
        graph
    }

    fn add_model(&mut self, model: &Sequential, input: usize) -> usize {
        let mut tensors = vec![input];
        for (i, layer) in model.layers().iter().enumerate() {
            let sources: Vec<usize> = model.inbound(i).iter().map(|&j| tensors[j]).collect();
            tensors.push(self.add_layer(layer, sources));
        }
        tensors.pop().unwrap_or(input)
    }

    fn add_layer(&mut self, layer: &LayerRef, sources: Vec<usize>) -> usize {
        let start = self.layers.len();
        let subs = layer.sublayers();
        let output = if let Some(model) = layer.as_model() {
            self.add_model(model, sources[0])
        } else if subs.is_empty() {
            self.layers.push(layer.clone());
            self.wiring.push(sources);
            self.layers.len()
        } else {
            let block_input = sources[0];
            let last = subs
                .iter()
                .fold(block_input, |prev, sub| self.add_layer(sub, vec![prev]));
            if layer.residual() {
                let add: LayerRef = Arc::new(Merge::add(Some(format!("{}_add", layer.name()))));
                let shapes = (
                    layer.input_shape(),
                    subs.last().and_then(|l| l.output_shape()),
                );
                if let (Some(input), Some(residual)) = shapes {
                    // Only for the summary of shapes; a mismatch would have failed the block.
                    let _ = add.build_inputs(&[input, residual]);
                }
                self.outputs
                    .insert(add.name().to_string(), self.layers.len() + 1);
                self.starts
                    .insert(add.name().to_string(), self.layers.len());
                self.layers.push(add);
                self.wiring.push(vec![block_input, last]);
                self.layers.len()
            } else {
                last
            }
        };
        self.outputs.insert(layer.name().to_string(), output);
        self.starts.insert(layer.name().to_string(), start);
        output
    }

    /// The tensor the layer, block or nested model `name` outputs.
    pub fn output_of(&self, name: &str) -> Option<usize> {
        self.outputs.get(name).copied()
    }

    /// The index of the first leaf layer that `name` covers.
    pub fn start_of(&self, name: &str) -> Option<usize> {
        self.starts.get(name).copied()
    }

    /// An error for a name that is not in the graph, listing the leaf names.
    pub fn unknown(&self, model: &str, name: &str, purpose: &str) -> Error {
        let known: Vec<&str> = self.layers.iter().map(|l| l.name()).collect();
        Error::Invalid(format!(
            "model '{model}' has no layer '{name}' {purpose}; its layers are: {}",
            known.join(", ")
        ))
    }
}

/// Runs a model up to its last requested layer and returns each requested layer's output.
pub struct FeatureExtractor {
    graph: LeafGraph,
    taps: Vec<usize>,
}

impl Sequential {
    /// A feature extractor returning the outputs of the layers named `outputs`, in that order:
    /// any layer, including those inside nested models and blocks (and a block's `_add`).
    pub fn feature_extractor(&self, outputs: &[&str]) -> Result<FeatureExtractor> {
        let mut graph = LeafGraph::of(self);
        let taps = outputs
            .iter()
            .map(|name| {
                graph
                    .output_of(name)
                    .ok_or_else(|| graph.unknown(self.name(), name, "to output"))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(&last) = taps.iter().max() else {
            return Err(Error::Invalid("name at least one layer to output".into()));
        };
        if taps.contains(&0) {
            return Err(Error::Invalid(
                "the model input is not a layer output".into(),
            ));
        }
        graph.layers.truncate(last);
        graph.wiring.truncate(last);
        Ok(FeatureExtractor { graph, taps })
    }
}

impl FeatureExtractor {
    /// The symbolic output shapes, as the model was built (`None` for unknown sizes).
    pub fn output_shapes(&self) -> Vec<Option<Shape>> {
        self.taps
            .iter()
            .map(|&t| self.graph.layers[t - 1].output_shape())
            .collect()
    }

    /// The requested outputs for a batch of images.
    pub fn run(&self, x: Batch, ctx: &mut Context) -> Result<Vec<Batch>> {
        let mut outputs: Vec<Option<Batch>> = vec![None; self.taps.len()];
        run_wired(
            &self.graph.layers,
            Some(&self.graph.wiring),
            x,
            |i, layer, xs| {
                let y = layer.forward_inputs(xs, ctx)?;
                for (slot, _) in self.taps.iter().enumerate().filter(|(_, &t)| t == i + 1) {
                    outputs[slot] = Some(y.clone());
                }
                Ok(y)
            },
        )?;
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every tap is reached"))
            .collect())
    }
}
