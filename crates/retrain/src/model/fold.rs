//! An inference-only copy of frozen layers with each BatchNorm folded into the convolution before
//! it, and the activation after it fused into the convolution.
//!
//! `conv -> BN -> act` becomes one convolution with weights `w * gamma / sqrt(var + eps)` and bias
//! `beta + (b - mean) * gamma / sqrt(var + eps)`: one pass over the feature map instead of five.
//! A ZeroPadding2D before a convolution without padding becomes that convolution's explicit
//! padding. The result is for inference only (BatchNorm on its moving statistics, nothing
//! trainable); the original layers are left untouched.

use crate::error::Result;
use crate::layers::{ActivationKind, Conv2d, Conv2dConfig, Layer, LayerKind, LayerRef, Padding};
use crate::model::Sequential;
use burn::tensor::{Device, Tensor};
use std::sync::Arc;

/// Fold `conv -> frozen BatchNorm (-> activation)` runs in `layers`, and zero paddings into the
/// convolution after them (in layer lists, where the zoo's paddings all sit; not inside graphs),
/// recursing into blocks that can be rebuilt from new sublayers. Layers that do not match are
/// shared unchanged.
pub fn fold_batch_norms(layers: &[LayerRef], device: &Device) -> Result<Vec<LayerRef>> {
    let mut out: Vec<LayerRef> = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let padded = match layers.get(i + 1) {
            Some(next) => fold_padding(&layers[i], next, device)?,
            None => None,
        };
        if let Some(padded) = padded {
            // The padded convolution, and the BatchNorm and activation after it folded in.
            let mut run = vec![padded];
            run.extend(layers[i + 2..].iter().take(2).cloned());
            match fold_at(&run, 0, device)? {
                Some((fused, consumed)) => {
                    out.push(fused);
                    i += 1 + consumed;
                }
                None => {
                    out.push(run.swap_remove(0));
                    i += 2;
                }
            }
            continue;
        }
        if let Some((fused, consumed)) = fold_at(layers, i, device)? {
            out.push(fused);
            i += consumed;
            continue;
        }
        out.push(fold_inside(&layers[i], device)?);
        i += 1;
    }
    Ok(out)
}

/// `layer` with the folds applied inside it: a graph part folded along its wiring, a block
/// rebuilt from folded sublayers; other layers shared unchanged.
fn fold_inside(layer: &LayerRef, device: &Device) -> Result<LayerRef> {
    if let Some(graph) = layer.as_model().filter(|m| m.is_graph()) {
        return Ok(Arc::new(fold_graph(graph, device)?));
    }
    let subs = layer.sublayers();
    if !subs.is_empty() && layer.as_model().is_none() {
        if let Some(rebuilt) = layer.with_sublayers(fold_batch_norms(&subs, device)?) {
            return Ok(rebuilt);
        }
    }
    Ok(layer.clone())
}

/// [`fold_batch_norms`] inside a graph (the residual blocks of ResNet and MobileNetV2): a
/// convolution whose output only a BatchNorm reads, and that BatchNorm's output only an
/// activation, become one layer; the readers of the last folded tensor read the convolution.
fn fold_graph(model: &Sequential, device: &Device) -> Result<Sequential> {
    let layers = model
        .layers()
        .iter()
        .map(|layer| fold_inside(layer, device))
        .collect::<Result<Vec<_>>>()?;
    let n = layers.len();
    let mut wiring: Vec<Vec<usize>> = (0..n).map(|i| model.inbound(i)).collect();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    for (i, sources) in wiring.iter().enumerate() {
        for &t in sources {
            readers[t].push(i);
        }
    }
    // The only reader of layer i's output, if it reads nothing else.
    let sole_reader = |i: usize, wiring: &[Vec<usize>]| match readers[i + 1][..] {
        [j] if wiring[j] == [i + 1] => Some(j),
        _ => None,
    };
    let mut layers: Vec<Option<LayerRef>> = layers.into_iter().map(Some).collect();
    let mut alias: Vec<usize> = (0..=n).collect();
    for i in 0..n {
        let Some(bn) = sole_reader(i, &wiring) else {
            continue;
        };
        let act = sole_reader(bn, &wiring);
        let chain: Vec<LayerRef> = [Some(i), Some(bn), act]
            .into_iter()
            .map_while(|k| k.and_then(|k| layers[k].clone()))
            .collect();
        if chain.len() < 2 {
            continue;
        }
        let Some((fused, consumed)) = fold_at(&chain, 0, device)? else {
            continue;
        };
        let removed = if consumed == 3 {
            vec![bn, act.expect("three folded")]
        } else {
            vec![bn]
        };
        // The graph's output is its last layer's: fold a tail only when nothing runs after it.
        if removed.contains(&(n - 1)) && (i..n).any(|k| k != i && !removed.contains(&k)) {
            continue;
        }
        layers[i] = Some(fused);
        for k in removed {
            layers[k] = None;
            alias[k + 1] = i + 1;
            wiring[k].clear();
        }
    }
    // Renumber the kept layers and their inbound tensors.
    let mut position = vec![0; n + 1];
    let mut kept = Vec::new();
    for (k, layer) in layers.iter().enumerate() {
        if layer.is_some() {
            kept.push(k);
            position[k + 1] = kept.len();
        }
    }
    let new_wiring = kept
        .iter()
        .map(|&k| wiring[k].iter().map(|&t| position[alias[t]]).collect())
        .collect();
    Ok(Sequential::graph(
        model.name(),
        layers.into_iter().flatten().collect(),
        new_wiring,
    ))
}

/// `zeros` (a ZeroPadding2D) and `conv` after it (a convolution without padding) as one
/// convolution with the zeros as its explicit padding, built on the padding's input, the same
/// weights, for inference; `None` for other pairs. Burn pads by writing a padded copy of the
/// whole map (fill, then a slice write: ~10% of a MobileNetV2 forward); the convolution kernels
/// pad as they copy their input anyway.
fn fold_padding(zeros: &LayerRef, conv: &LayerRef, device: &Device) -> Result<Option<LayerRef>> {
    let (LayerKind::ZeroPadding2d { padding }, LayerKind::Conv2d(config)) =
        (zeros.spec().kind, conv.spec().kind)
    else {
        return Ok(None);
    };
    let Some(input) = zeros.input_shape() else {
        return Ok(None);
    };
    if config.padding != Padding::Valid {
        return Ok(None);
    }
    let padded = Conv2d::from_config(
        Some(conv.name().to_string()),
        Conv2dConfig {
            padding: Padding::Explicit(padding),
            ..config
        },
    );
    padded.build(input)?;
    for (to, from) in padded.variables().iter().zip(conv.variables()) {
        to.assign(from.value(device));
    }
    padded.set_trainable(false);
    Ok(Some(Arc::new(padded)))
}

fn fold_at(layers: &[LayerRef], i: usize, device: &Device) -> Result<Option<(LayerRef, usize)>> {
    let (Some(conv), Some(bn)) = (layers.get(i), layers.get(i + 1)) else {
        return Ok(None);
    };
    let (LayerKind::Conv2d(config), LayerKind::BatchNorm(bn_config)) =
        (conv.spec().kind, bn.spec().kind)
    else {
        return Ok(None);
    };
    if config.activation != ActivationKind::Linear {
        return Ok(None);
    }
    let Some(input) = conv.input_shape() else {
        return Ok(None);
    };
    let activation = layers.get(i + 2).and_then(fusable_activation);
    let conv_vars = conv.variables();
    let bn_vars = bn.variables();
    let kernel = conv_vars[0].tensor::<4>(device);
    let out_channels = kernel.dims()[0];
    let first = usize::from(bn_config.scale);
    let [beta, mean, var] = [first, first + 1, first + 2].map(|k| bn_vars[k].value(device));
    let gamma = match bn_config.scale {
        true => bn_vars[0].value(device),
        false => Tensor::ones([beta.dims()[0]], device),
    };
    let scale = gamma / (var + bn_config.epsilon).sqrt();
    let bias = conv_vars
        .get(1)
        .map(|b| b.value(device))
        .unwrap_or_else(|| Tensor::zeros([out_channels], device));
    let folded_bias = beta + (bias - mean) * scale.clone();
    let folded_kernel = kernel * scale.reshape([out_channels, 1, 1, 1]);

    let fused = Conv2d::from_config(
        Some(format!("{}_folded", conv.name())),
        Conv2dConfig {
            use_bias: true,
            activation: activation.unwrap_or(ActivationKind::Linear),
            ..config
        },
    );
    fused.build(input)?;
    let vars = fused.variables();
    vars[0].assign(folded_kernel.reshape([vars[0].numel()]));
    vars[1].assign(folded_bias);
    fused.set_trainable(false);
    Ok(Some((
        Arc::new(fused),
        if activation.is_some() { 3 } else { 2 },
    )))
}

/// The activation `layer` applies, when it is an activation layer whose function the CPU
/// kernels can run fused into the layer before it (not softmax).
pub(super) fn fusable_activation(layer: &LayerRef) -> Option<ActivationKind> {
    match layer.spec().kind {
        LayerKind::Activation { activation } if activation != ActivationKind::Softmax => {
            Some(activation)
        }
        LayerKind::ReLU { max_value: None } => Some(ActivationKind::Relu),
        LayerKind::ReLU { max_value: Some(_) } => Some(ActivationKind::Relu6),
        _ => None,
    }
}
