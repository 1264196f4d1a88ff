//! Batch normalization in training mode (batch statistics) on the CPU, as one Burn operation
//! with a handwritten backward pass (a backend extension for Flex and Autodiff over it).
//!
//! Burn's default `batch_norm_train` and its backward go through swapped axes, reshapes and a
//! dozen whole-map element-wise passes, each a copy; here the statistics, the normalization and
//! the gradients are per-channel loops over the NCHW map: two passes forward, two backward.
//! The activation after it (ReLU, ReLU6) can run inside those passes: applied as each value is
//! written, and its gradient (where the activation passes values through) taken as the output
//! gradient is read, so the activation costs no pass over the map of its own.

use super::{flex_tensor, values, Activation};
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
/// `gamma` and `beta` per channel, then `activation`; gradients for all three when tracked.
/// Returns the output, the mean and the biased variance.
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let result = <Dispatch as CpuBatchNorm>::cpu_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        activation,
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
    /// Batch normalization with batch statistics, then `activation`.
    fn cpu_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        activation: Activation,
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

/// The normalization as an affine map per channel, `x * scale[c] + shift[c]` (scale = gamma /
/// std), the activation after it, and 1 / std per channel.
#[derive(Clone, Debug)]
struct Normalization {
    scale: Vec<f32>,
    shift: Vec<f32>,
    inv_std: Vec<f32>,
    activation: Activation,
}

impl Normalization {
    /// `activation(x * scale[c] + shift[c])` for every plane (channel `c`) of `x`.
    fn apply(&self, x: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(pixels.max(1))
            .zip(x.par_chunks(pixels.max(1)))
            .enumerate()
            .for_each(|(plane, (out, x))| {
                let (a, b) = (self.scale[plane % channels], self.shift[plane % channels]);
                super::with_avx2(
                    #[inline(always)]
                    || {
                        out.iter_mut().zip(x).for_each(|(o, v)| *o = v * a + b);
                        self.activation.apply_with_bias(out, 0.0);
                    },
                )
            });
        out
    }

    /// Channel `c`'s normalization and the open interval its activation passes through.
    fn gate(&self, c: usize) -> Gate {
        let (low, high) = match self.activation {
            Activation::Linear => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
        };
        Gate {
            scale: self.scale[c],
            shift: self.shift[c],
            low,
            high,
        }
    }
}

/// One channel's normalization and the open interval `(low, high)` of normalized values its
/// activation passes through (its derivative is 1 there, 0 elsewhere).
#[derive(Clone, Copy)]
struct Gate {
    scale: f32,
    shift: f32,
    low: f32,
    high: f32,
}

impl Gate {
    /// The output gradient `dy` where the activation passed the normalized `x` through, zero
    /// where it cut it off (branch-free, so the loops around it vectorize).
    #[inline(always)]
    fn pass(self, x: f32, dy: f32) -> f32 {
        let z = x * self.scale + self.shift;
        if (z > self.low) & (z < self.high) {
            dy
        } else {
            0.0
        }
    }
}

/// Values summed side by side in the backward pass's reductions: one AVX register.
const SUM_LANES: usize = 8;

/// Sum of the passed gradient and of the passed gradient times `x - mean` over one plane.
#[inline(always)]
fn plane_sums(x: &[f32], dy: &[f32], gate: Gate, mean: f32) -> (f32, f32) {
    let (mut sums, mut weighted) = ([0f32; SUM_LANES], [0f32; SUM_LANES]);
    let (xs, gs) = (x.chunks_exact(SUM_LANES), dy.chunks_exact(SUM_LANES));
    let (x_rest, g_rest) = (xs.remainder(), gs.remainder());
    for (x, g) in xs.zip(gs) {
        for lane in 0..SUM_LANES {
            let g = gate.pass(x[lane], g[lane]);
            sums[lane] += g;
            weighted[lane] += (x[lane] - mean) * g;
        }
    }
    for (&x, &g) in x_rest.iter().zip(g_rest) {
        let g = gate.pass(x, g);
        sums[0] += g;
        weighted[0] += (x - mean) * g;
    }
    (sums.iter().sum(), weighted.iter().sum())
}

fn inverse_std(variance: &[f32], epsilon: f64) -> Vec<f32> {
    variance
        .iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect()
}

/// The statistics of `x` and the normalization they give with `gamma`, `beta`, `epsilon`.
fn normalization(
    x: &[f32],
    shape: [usize; 3],
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    activation: Activation,
) -> (Vec<f32>, Vec<f32>, Normalization) {
    let (mean, variance) = statistics(x, shape);
    let (gamma, beta) = (values(gamma), values(beta));
    let inv_std = inverse_std(&variance, epsilon);
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift = (0..shape[1])
        .map(|c| beta[c] - mean[c] * scale[c])
        .collect();
    let normalization = Normalization {
        scale,
        shift,
        inv_std,
        activation,
    };
    (mean, variance, normalization)
}

/// The forward pass; also returns the normalization, which the backward pass needs.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    activation: Activation,
) -> (BatchNormTrain<Flex>, Normalization) {
    let shape = layout(x);
    let [_, channels, pixels] = shape;
    let x_values = values(x);
    let (mean, variance, normalization) =
        normalization(&x_values, shape, gamma, beta, epsilon, activation);
    let output = normalization.apply(&x_values, channels, pixels);
    let dims = x.layout().shape().clone();
    let result = BatchNormTrain {
        output: FlexTensor::from_data(burn::tensor::TensorData::new(output, dims)),
        mean: flex_tensor(mean, [channels]),
        variance: flex_tensor(variance, [channels]),
    };
    (result, normalization)
}

impl CpuBatchNorm for Flex {
    fn cpu_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        activation: Activation,
    ) -> BatchNormTrain<Self> {
        forward(&x, &gamma, &beta, epsilon, activation).0
    }
}

/// The backward step of [`batch_norm_train`].
#[derive(Debug)]
struct BatchNormBackward;

/// What the backward step keeps from the forward one: the input's node, the batch mean per
/// channel and the normalization.
type BackwardState = (NodeId, Vec<f32>, Normalization);

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BackwardState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let output_gradient = grads.consume::<Flex>(&ops.node);
        let (x_state, mean, normalization) = ops.state;
        let inv_std = &normalization.inv_std;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let [batch, channels, pixels] = layout(&x);
        let (x_values, dy) = (values(&x), values(&output_gradient));
        // Per channel: sum of dy (beta's gradient) and of dy * x̂ (gamma's), dy taken where the
        // activation passed values through.
        let (beta_gradient, gamma_gradient): (Vec<f32>, Vec<f32>) = (0..channels)
            .into_par_iter()
            .map(|c| {
                let gate = normalization.gate(c);
                let (mut sum, mut weighted) = (0f64, 0f64);
                super::with_avx2(
                    #[inline(always)]
                    || {
                        for n in 0..batch {
                            let at = (n * channels + c) * pixels;
                            let (x, g) = (&x_values[at..at + pixels], &dy[at..at + pixels]);
                            let (s, w) = plane_sums(x, g, gate, mean[c]);
                            sum += s as f64;
                            weighted += w as f64;
                        }
                    },
                );
                (sum as f32, weighted as f32 * inv_std[c])
            })
            .unzip();
        if let Some(node) = x_node {
            // dx = gamma / std * (dy - mean(dy) - x̂ mean(dy x̂)), as an affine map of dy and x
            // per channel: dx = a dy + b x + d, with a = gamma / std, the normalization's scale.
            let count = (batch * pixels).max(1) as f32;
            let a = &normalization.scale;
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
                    let (gate, a, slope, d) = (normalization.gate(c), a[c], slope[c], d[c]);
                    super::with_avx2(
                        #[inline(always)]
                        || {
                            for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                                *o = a * gate.pass(v, g) - slope * v + d;
                            }
                        },
                    )
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
        activation: Activation,
    ) -> BatchNormTrain<Self> {
        let prepared = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (output, mean, variance) = match prepared {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let (x, gamma, beta) = (
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                let (result, normalization) = forward(&x, &gamma, &beta, epsilon, activation);
                let mean = values(&result.mean).into_owned();
                let state = (x_state, mean, normalization);
                let output = prep.finish(state, result.output);
                (output, result.mean, result.variance)
            }
            OpsKind::UnTracked(prep) => {
                let result = Flex::cpu_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                    activation,
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

    /// Ours against Burn's `batch_norm_train` followed by the activation, under autodiff.
    fn check(activation: Activation, gamma_offset: f32) {
        let shape = [3, 4, 5, 6];
        let x = (filled(shape, 0, 2.0) + 0.7).detach().require_grad();
        let gamma = (filled([4], 3, 1.0) + gamma_offset).detach().require_grad();
        let beta = filled([4], 9, 0.5).require_grad();
        let weights = filled(shape, 5, 1.0);

        let (ours, mean, variance) =
            batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-3, activation);
        let ours_values = host(ours.clone());
        let ours_values_above_six = ours_values.iter().filter(|v| **v >= 6.0).count();
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
        let activated = match activation {
            Activation::Linear => burn.output,
            Activation::Relu => burn::tensor::activation::relu(burn.output),
            Activation::Relu6 => burn.output.clamp(0.0, 6.0),
        };
        let burn_values = host(activated.clone());
        let cut = burn_values
            .iter()
            .filter(|v| **v <= 0.0 || **v >= 6.0)
            .count();
        let grads = (activated * weights).sum().backward();
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
            assert!(
                worst < 1e-5,
                "{activation:?} {what}: relative difference {worst}"
            );
        }
        if activation != Activation::Linear {
            assert!(cut > 20, "{activation:?} cut off only {cut} of 360 values");
        }
        if activation == Activation::Relu6 {
            let above = ours_values_above_six;
            assert!(above > 5, "only {above} of 360 values above 6");
        }
    }

    #[test]
    fn output_statistics_and_gradients_equal_burns() {
        check(Activation::Linear, 1.0);
    }

    #[test]
    fn activation_inside_equals_burns_activation_after() {
        check(Activation::Relu, 1.0);
        // Gamma around 4: outputs beyond 6 as well as below 0.
        check(Activation::Relu6, 4.0);
    }
}
