//! The trainable layers of a model prepared for training: each BatchNorm followed by a ReLU or
//! ReLU6 layer becomes one BatchNorm with that activation, sharing the original's variables.
//!
//! On the CPU the fused layer trains as one operation ([`crate::kernels::batch_norm`]): the
//! activation is applied as the normalized values are written and its gradient taken as the
//! output gradient is read, instead of a pass of its own over the map each way (EfficientNet-Lite0,
//! last two blocks: four BatchNorm + ReLU6 pairs). Anywhere else it runs the two functions one
//! after the other, with the same result.

use super::fold::fusable_activation;
use crate::layers::{BatchNorm, LayerRef};
use std::sync::Arc;

/// `layers` with every `BatchNorm -> ReLU / ReLU6` pair fused, recursing into blocks that can be
/// rebuilt from new sublayers (EfficientNet's MBConv). Graph parts (residual blocks wired as a
/// graph, as in MobileNetV2 and ResNet) and every other layer are shared unchanged.
pub fn fuse_activations(layers: &[LayerRef]) -> Vec<LayerRef> {
    let mut out: Vec<LayerRef> = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let fused = layers.get(i + 1).and_then(|next| {
            let activation = fusable_activation(next)?;
            BatchNorm::with_activation(&layers[i], activation)
        });
        if let Some(fused) = fused {
            out.push(Arc::new(fused));
            i += 2;
            continue;
        }
        out.push(fuse_inside(&layers[i]));
        i += 1;
    }
    out
}

/// A block rebuilt from its fused sublayers; other layers shared unchanged.
fn fuse_inside(layer: &LayerRef) -> LayerRef {
    let subs = layer.sublayers();
    if subs.is_empty() || layer.as_model().is_some() {
        return layer.clone();
    }
    let fused = fuse_activations(&subs);
    if fused.len() == subs.len() {
        return layer.clone();
    }
    layer.with_sublayers(fused).unwrap_or_else(|| layer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::host;
    use crate::layers::{ActivationKind, Batch, Context, LayerKind};
    use crate::train::features::{execution_layers, run_layers};
    use crate::zoo::{self, Pooling, ZooOptions};
    use burn::tensor::{Device, Distribution, Tensor};
    use std::collections::BTreeMap;

    /// Every layer of `layers`, blocks opened.
    fn flattened(layers: &[LayerRef]) -> Vec<LayerRef> {
        layers
            .iter()
            .flat_map(|l| std::iter::once(l.clone()).chain(flattened(&l.sublayers())))
            .collect()
    }

    /// The output and every variable's gradient for a loss weighting each output differently.
    fn output_and_gradients(
        layers: &[LayerRef],
        x: &Batch,
        weights: &Tensor<2>,
        device: &Device,
    ) -> (Vec<f32>, BTreeMap<String, Vec<f32>>) {
        let mut ctx = Context::training(device, true);
        let out = run_layers(layers, x.clone(), &mut ctx)
            .unwrap()
            .into_vectors("output")
            .unwrap();
        let grads = (out.clone() * weights.clone()).sum().backward();
        let gradients = ctx
            .into_leaves()
            .into_iter()
            .map(|(variable, leaf)| {
                (
                    variable.path().to_string(),
                    host(leaf.grad(&grads).unwrap()),
                )
            })
            .collect();
        (host(out), gradients)
    }

    #[test]
    fn fused_batch_norms_train_like_the_layers_they_replace() {
        let device = Device::flex();
        let entry = zoo::entry("efficientnet_lite0").unwrap();
        let model = (entry.build)(&ZooOptions {
            include_top: false,
            input: Some([64, 64]),
            pooling: Pooling::Avg,
            ..ZooOptions::default()
        })
        .unwrap();
        model.initialize(0, &device);
        let layers = execution_layers(&model);
        let split = layers.iter().position(|l| l.name() == "block6d").unwrap();
        let image = Tensor::random([2, 3, 64, 64], Distribution::Uniform(-1.0, 1.0), &device);
        let x = run_layers(
            &layers[..split],
            Batch::Maps(image),
            &mut Context::inference(&device),
        )
        .unwrap();
        let suffix = &layers[split..];
        suffix.iter().for_each(|l| l.set_trainable(true));

        let fused = fuse_activations(suffix);
        let count = |layers: &[LayerRef], wanted: fn(LayerKind) -> bool| {
            flattened(layers)
                .iter()
                .filter(|l| wanted(l.spec().kind))
                .count()
        };
        let activation_layer = |k: LayerKind| matches!(k, LayerKind::Activation { .. });
        let with_relu6 = |k: LayerKind| matches!(k, LayerKind::BatchNorm(c) if c.activation == ActivationKind::Relu6);
        // block6d and block7a: two BatchNorm + ReLU6 pairs each; then top_bn + top_activation.
        assert_eq!(count(suffix, activation_layer), 5);
        assert_eq!(count(&fused, activation_layer), 0);
        assert_eq!(count(&fused, with_relu6), 5);

        let weights = Tensor::random([2, 1280], Distribution::Uniform(-1.0, 1.0), &device);
        let (out, grads) = output_and_gradients(suffix, &x, &weights, &device);
        let (fused_out, fused_grads) = output_and_gradients(&fused, &x, &weights, &device);
        assert_eq!(out, fused_out, "outputs differ");
        assert_eq!(grads.len(), fused_grads.len());
        assert!(grads.len() > 20, "{} variables trained", grads.len());
        for (path, want) in &grads {
            let got = &fused_grads[path];
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let worst = want
                .iter()
                .zip(got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst / scale < 1e-4,
                "{path}: relative difference {}",
                worst / scale
            );
        }
    }
}
