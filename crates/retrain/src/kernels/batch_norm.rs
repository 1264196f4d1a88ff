//! Batch normalization in training mode (batch statistics) on the CPU, as one Burn operation
//! with a handwritten backward pass (a backend extension for Flex and Autodiff over it).
//!
//! Burn's default `batch_norm_train` and its backward go through swapped axes, reshapes and a
//! dozen whole-map element-wise passes, each a copy; here the statistics, the normalization and
//! the gradients are per-channel loops over the NCHW map: two passes forward, two backward.

use super::{flex_tensor, values};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, AutodiffBackend, Dispatch, ExtensionType, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;

/// What [`batch_norm_train`] returns: the normalized map and the batch statistics (mean and
/// biased variance per channel, for the moving averages; not tracked).
#[derive(ExtensionType)]
pub struct BatchNormTrain<B: burn::backend::Backend> {
    /// The normalized, scaled and shifted map.
    pub output: FloatTensor<B>,
    /// Mean per channel.
    pub mean: FloatTensor<B>,
    /// Biased variance per channel.
    pub variance: FloatTensor<B>,
}

/// Batch normalization of `x` (NCHW, on the CPU backend, f32) with the statistics of the batch,
/// `gamma` and `beta` per channel; gradients for all three when tracked. Returns the output, the
/// mean and the biased variance.
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let result = <Dispatch as CpuBatchNorm>::cpu_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    (
        Tensor::from_dispatch(result.output),
        Tensor::from_dispatch(result.mean),
        Tensor::from_dispatch(result.variance),
    )
}

/// The backend extension behind [`batch_norm_train`].
#[backend_extension(Flex, Autodiff)]
pub trait CpuBatchNorm: burn::backend::Backend {
    /// Batch normalization with batch statistics.
    fn cpu_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchNormTrain<Self>;
}

/// Batch, channels and pixels per plane of an NCHW tensor.
fn layout(x: &FlexTensor) -> [usize; 3] {
    let dims = x.layout().shape();
    [dims[0], dims[1], dims[2..].iter().product()]
}

/// Mean and biased variance of every channel of `x` ([batch][channels][pixels]).
fn statistics(x: &[f32], [batch, channels, pixels]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let count = (batch * pixels).max(1) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let planes = || (0..batch).map(move |n| &x[(n * channels + c) * pixels..][..pixels]);
            let sum: f64 = planes().map(|p| p.iter().sum::<f32>() as f64).sum();
            let mean = (sum / count) as f32;
            let squares: f64 = planes()
                .map(|p| p.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() as f64)
                .sum();
            (mean, (squares / count) as f32)
        })
        .unzip()
}

/// `x * scale[c] + shift[c]` for every plane (channel `c`) of `x`.
fn affine(x: &[f32], channels: usize, pixels: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(pixels.max(1))
        .zip(x.par_chunks(pixels.max(1)))
        .enumerate()
        .for_each(|(plane, (out, x))| {
            let (a, b) = (scale[plane % channels], shift[plane % channels]);
            out.iter_mut().zip(x).for_each(|(o, v)| *o = v * a + b);
        });
    out
}

fn inverse_std(variance: &[f32], epsilon: f64) -> Vec<f32> {
    variance
        .iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect()
}

impl CpuBatchNorm for Flex {
    fn cpu_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> BatchNormTrain<Self> {
        let shape = layout(&x);
        let [_, channels, pixels] = shape;
        let x_values = values(&x);
        let (mean, variance) = statistics(&x_values, shape);
        let inv_std = inverse_std(&variance, epsilon);
        let (gamma, beta) = (values(&gamma), values(&beta));
        let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
        let shift: Vec<f32> = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        let output = affine(&x_values, channels, pixels, &scale, &shift);
        let dims = x.layout().shape().clone();
        BatchNormTrain {
            output: FlexTensor::from_data(burn::tensor::TensorData::new(output, dims)),
            mean: flex_tensor(mean, [channels]),
            variance: flex_tensor(variance, [channels]),
        }
    }
}

/// The backward step of [`batch_norm_train`].
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    /// Input and gamma nodes, and the batch mean and 1 / std per channel.
    type State = (NodeId, NodeId, Vec<f32>, Vec<f32>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let output_gradient = grads.consume::<Flex>(&ops.node);
        let (x_state, gamma_state, mean, inv_std) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let gamma: FlexTensor = checkpointer.retrieve_node_output(gamma_state);
        let [batch, channels, pixels] = layout(&x);
        let (x_values, dy, gamma) = (values(&x), values(&output_gradient), values(&gamma));
        // Per channel: sum of dy (beta's gradient) and of dy * x̂ (gamma's).
        let (beta_gradient, gamma_gradient): (Vec<f32>, Vec<f32>) = (0..channels)
            .into_par_iter()
            .map(|c| {
                let (mut sum, mut weighted) = (0f64, 0f64);
                for n in 0..batch {
                    let at = (n * channels + c) * pixels;
                    let (x, g) = (&x_values[at..at + pixels], &dy[at..at + pixels]);
                    sum += g.iter().sum::<f32>() as f64;
                    weighted += x.iter().zip(g).map(|(x, g)| (x - mean[c]) * g).sum::<f32>() as f64;
                }
                (sum as f32, weighted as f32 * inv_std[c])
            })
            .unzip();
        if let Some(node) = x_node {
            // dx = gamma / std * (dy - mean(dy) - x̂ mean(dy x̂)), as an affine map of dy and x
            // per channel: dx = a dy + b x + d.
            let count = (batch * pixels).max(1) as f32;
            let a: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
            let slope: Vec<f32> = (0..channels)
                .map(|c| a[c] * gamma_gradient[c] * inv_std[c] / count)
                .collect();
            let d: Vec<f32> = (0..channels)
                .map(|c| a[c] * (-beta_gradient[c] / count) + slope[c] * mean[c])
                .collect();
            let mut dx = vec![0f32; x_values.len()];
            dx.par_chunks_mut(pixels.max(1))
                .zip(dy.par_chunks(pixels.max(1)))
                .zip(x_values.par_chunks(pixels.max(1)))
                .enumerate()
                .for_each(|(plane, ((dx, dy), x))| {
                    let c = plane % channels;
                    for ((o, g), v) in dx.iter_mut().zip(dy).zip(x) {
                        *o = a[c] * g - slope[c] * v + d[c];
                    }
                });
            let dims = x.layout().shape().clone();
            let dx = FlexTensor::from_data(burn::tensor::TensorData::new(dx, dims));
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<Flex>(node.id, flex_tensor(gamma_gradient, [channels]));
        }
        if let Some(node) = beta_node {
            grads.register::<Flex>(node.id, flex_tensor(beta_gradient, [channels]));
        }
    }
}

impl<C: CheckpointStrategy> CpuBatchNorm for Autodiff<Flex, C> {
    fn cpu_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchNormTrain<Self> {
        let prepared = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (output, mean, variance) = match prepared {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let result = Flex::cpu_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let mean = values(&result.mean).into_owned();
                let inv_std = inverse_std(&values(&result.variance), epsilon);
                let output = prep.finish((x_state, gamma_state, mean, inv_std), result.output);
                (output, result.mean, result.variance)
            }
            OpsKind::UnTracked(prep) => {
                let result = Flex::cpu_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (prep.finish(result.output), result.mean, result.variance)
            }
        };
        BatchNormTrain {
            output,
            mean: Self::from_inner(mean),
            variance: Self::from_inner(variance),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{filled, host, max_difference};
    use super::*;

    #[test]
    fn output_statistics_and_gradients_equal_burns() {
        let shape = [3, 4, 5, 6];
        let x = (filled(shape, 0, 2.0) + 0.7).detach().require_grad();
        let gamma = (filled([4], 3, 1.0) + 1.0).detach().require_grad();
        let beta = filled([4], 9, 0.5).require_grad();
        let weights = filled(shape, 5, 1.0);

        let (ours, mean, variance) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-3);
        let ours_values = host(ours.clone());
        let grads = (ours * weights.clone()).sum().backward();
        let our_grads = [
            host(x.grad(&grads).unwrap()),
            host(gamma.grad(&grads).unwrap()),
            host(beta.grad(&grads).unwrap()),
        ];

        let x_ref = x.clone().detach().require_grad();
        let gamma_ref = gamma.clone().detach().require_grad();
        let beta_ref = beta.clone().detach().require_grad();
        let burn = burn::tensor::module::batch_norm_train(
            x_ref.clone(),
            gamma_ref.clone(),
            beta_ref.clone(),
            1e-3,
        );
        let burn_values = host(burn.output.clone());
        let grads = (burn.output * weights).sum().backward();
        let burn_grads = [
            host(x_ref.grad(&grads).unwrap()),
            host(gamma_ref.grad(&grads).unwrap()),
            host(beta_ref.grad(&grads).unwrap()),
        ];

        let [our_dx, our_dgamma, our_dbeta] = our_grads;
        let [burn_dx, burn_dgamma, burn_dbeta] = burn_grads;
        let compared = [
            ("output", ours_values, burn_values),
            ("mean", host(mean), host(burn.mean)),
            ("variance", host(variance), host(burn.variance)),
            ("input gradient", our_dx, burn_dx),
            ("gamma gradient", our_dgamma, burn_dgamma),
            ("beta gradient", our_dbeta, burn_dbeta),
        ];
        for (what, ours, burn) in compared {
            let scale = burn.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = max_difference(&ours, &burn) / scale;
            assert!(worst < 1e-5, "{what}: relative difference {worst}");
        }
    }
}
