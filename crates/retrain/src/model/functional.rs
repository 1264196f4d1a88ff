//! The Keras functional API: an [`input`], layers applied to symbolic tensors, merges, and
//! [`Sequential::functional`] (Keras `Model(inputs, outputs)`) turning the graph into a model.
//!
//! ```no_run
//! # use retrain::layers::{Dense, LayerRef, Merge};
//! # use retrain::model::{input, Apply, Sequential};
//! # use retrain::Shape;
//! # use std::sync::Arc;
//! # fn main() -> retrain::error::Result<()> {
//! let x = input(Shape::Vector(8));
//! let dense: LayerRef = Arc::new(Dense::new(8));
//! let y = dense.apply(&x)?;
//! let add: LayerRef = Arc::new(Merge::add(None));
//! let skip = add.apply_to(&[&x, &y])?;
//! let model = Sequential::functional(Some("residual"), &x, &skip)?;
//! # Ok(()) }
//! ```

use super::sequential::{Sequential, INPUT_NAME};
use crate::error::{Error, Result};
use crate::layers::LayerRef;
use crate::shape::Shape;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A tensor of a graph under construction: which node makes it and its per-sample shape.
#[derive(Clone)]
pub struct SymbolicTensor {
    node: Arc<Node>,
}

struct Node {
    /// Creation order, which is a topological order.
    id: u64,
    /// `None` for the graph input.
    layer: Option<LayerRef>,
    inputs: Vec<SymbolicTensor>,
    shape: Shape,
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Keras `Input(shape=...)`: the symbolic input of a graph (height and width may be unknown).
pub fn input(shape: Shape) -> SymbolicTensor {
    SymbolicTensor {
        node: Arc::new(Node {
            id: next_id(),
            layer: None,
            inputs: Vec::new(),
            shape,
        }),
    }
}

impl std::fmt::Debug for SymbolicTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SymbolicTensor({} from '{}')",
            self.shape(),
            self.source()
        )
    }
}

impl SymbolicTensor {
    /// The per-sample shape (channels last, batch left out).
    pub fn shape(&self) -> Shape {
        self.node.shape
    }

    /// The name of what makes this tensor: a layer's name, or `input_layer`.
    pub fn source(&self) -> &str {
        self.node.layer.as_ref().map_or(INPUT_NAME, |l| l.name())
    }
}

/// Calling a layer (or a whole model) on symbolic tensors, like `layer(x)` in Keras.
pub trait Apply {
    /// Apply a one-input layer. The layer is built for the input's shape; a layer taken from a
    /// pretrained model keeps its weights and `trainable` flag (shared, not copied).
    fn apply(&self, x: &SymbolicTensor) -> Result<SymbolicTensor> {
        self.apply_to(&[x])
    }

    /// Apply a layer to several inputs (merge layers).
    fn apply_to(&self, inputs: &[&SymbolicTensor]) -> Result<SymbolicTensor>;
}

impl Apply for LayerRef {
    fn apply_to(&self, inputs: &[&SymbolicTensor]) -> Result<SymbolicTensor> {
        let shapes: Vec<Shape> = inputs.iter().map(|x| x.shape()).collect();
        let shape = self.build_inputs(&shapes).map_err(|e| {
            let sources: Vec<String> = inputs
                .iter()
                .map(|x| format!("'{}' {}", x.source(), x.shape()))
                .collect();
            Error::shape(
                self.name(),
                format!("cannot take the output of {}: {e}", sources.join(" and ")),
            )
        })?;
        Ok(SymbolicTensor {
            node: Arc::new(Node {
                id: next_id(),
                layer: Some(self.clone()),
                inputs: inputs.iter().map(|&x| x.clone()).collect(),
                shape,
            }),
        })
    }
}

impl Sequential {
    /// Keras `Model(inputs, outputs)`: the model computing `output` from `input`, with every
    /// layer in between (shared, not copied). Runs, trains, saves, loads and summarizes like a
    /// stacked model; a chain of layers becomes a plain stack.
    pub fn functional(
        name: Option<&str>,
        input: &SymbolicTensor,
        output: &SymbolicTensor,
    ) -> Result<Sequential> {
        let mut nodes: BTreeMap<u64, Arc<Node>> = BTreeMap::new();
        let mut stack = vec![output.node.clone()];
        while let Some(node) = stack.pop() {
            if nodes.contains_key(&node.id) {
                continue;
            }
            if node.layer.is_none() && node.id != input.node.id {
                return Err(Error::Invalid(
                    "the output depends on an input other than the model's; graphs take one input"
                        .into(),
                ));
            }
            stack.extend(node.inputs.iter().map(|x| x.node.clone()));
            nodes.insert(node.id, node);
        }
        if !nodes.contains_key(&input.node.id) {
            return Err(Error::Invalid(format!(
                "the output (from '{}') does not depend on the model input",
                output.source()
            )));
        }
        // Keras' order: by depth (longest path to the output) decreasing, then creation order.
        let mut depth: BTreeMap<u64, usize> = BTreeMap::from([(output.node.id, 0)]);
        for (id, node) in nodes.iter().rev() {
            let d = depth.get(id).copied().unwrap_or(0);
            for x in &node.inputs {
                let entry = depth.entry(x.node.id).or_insert(0);
                *entry = (*entry).max(d + 1);
            }
        }
        let mut order: Vec<(&u64, &Arc<Node>)> = nodes.iter().collect();
        order.sort_by_key(|(id, _)| (std::cmp::Reverse(depth[id]), **id));
        let mut index = BTreeMap::new();
        let mut layers: Vec<LayerRef> = Vec::new();
        let mut wiring = Vec::new();
        for (id, node) in order {
            let Some(layer) = &node.layer else {
                index.insert(*id, 0);
                continue;
            };
            if let Some(earlier) = layers.iter().find(|l| Arc::ptr_eq(l, layer)) {
                return Err(Error::Invalid(format!(
                    "layer '{}' is called more than once in this graph; a layer can appear once per model",
                    earlier.name()
                )));
            }
            wiring.push(node.inputs.iter().map(|x| index[&x.node.id]).collect());
            layers.push(layer.clone());
            index.insert(*id, layers.len());
        }
        let mut model = Sequential::new(name)
            .with_input(input.shape())
            .as_functional();
        model.set_graph(layers, wiring)?;
        Ok(model)
    }
}
