//! Intermediate outputs: any named layer of a model as an output, like Keras'
//! `Model(vgg.input, [vgg.get_layer("block4_pool").output, ...])`, torchvision's
//! `create_feature_extractor` or timm's `features_only`.

use super::Sequential;
use crate::error::{Error, Result};
use crate::layers::{Batch, Context, Layer, LayerRef};
use crate::shape::Shape;
use crate::train::features::execution_layers;

/// Runs a model up to its last requested layer and returns each requested layer's output.
pub struct FeatureExtractor {
    layers: Vec<LayerRef>,
    taps: Vec<usize>,
}

impl Sequential {
    /// A feature extractor returning the outputs of the layers named `outputs`, in that order.
    /// Layers of nested models count by their own names; layers inside blocks do not.
    pub fn feature_extractor(&self, outputs: &[&str]) -> Result<FeatureExtractor> {
        let layers = execution_layers(self);
        let taps = outputs
            .iter()
            .map(|name| {
                layers
                    .iter()
                    .position(|l| l.name() == *name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = layers.iter().map(|l| l.name()).collect();
                        Error::Invalid(format!(
                            "model '{}' has no layer '{name}' to output; its layers are: {}",
                            self.name(),
                            known.join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if taps.is_empty() {
            return Err(Error::Invalid("name at least one layer to output".into()));
        }
        let last = taps.iter().max().copied().unwrap_or(0);
        Ok(FeatureExtractor {
            layers: layers[..=last].to_vec(),
            taps,
        })
    }
}

impl FeatureExtractor {
    /// The symbolic output shapes, as the model was built (`None` for unknown sizes).
    pub fn output_shapes(&self) -> Vec<Option<Shape>> {
        self.taps
            .iter()
            .map(|&i| self.layers[i].output_shape())
            .collect()
    }

    /// The requested outputs for a batch of images.
    pub fn run(&self, x: Batch, ctx: &mut Context) -> Result<Vec<Batch>> {
        let mut outputs: Vec<Option<Batch>> = vec![None; self.taps.len()];
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, ctx)?;
            for (slot, _) in self.taps.iter().enumerate().filter(|(_, &t)| t == i) {
                outputs[slot] = Some(x.clone());
            }
        }
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every tap is reached"))
            .collect())
    }
}
