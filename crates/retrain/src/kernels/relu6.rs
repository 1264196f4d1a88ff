//! ReLU6 under training on the CPU: one pass forward (the clamp) and one backward (the gradient
//! where the output is strictly inside (0, 6)), as a Burn backend extension for Flex and Autodiff
//! over it. Burn's autodiff clamp is two compare and mask-fill passes each way, and ReLU6 as two
//! ReLUs is four passes forward and five back, each over the whole map.

use super::values;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Dispatch, Flex};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// `min(max(x, 0), 6)` of a CPU (`Device::flex()`, f32) tensor, with its gradient when tracked.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuRelu6>::cpu_relu6(x.into_dispatch()))
}

/// The backend extension behind [`relu6`].
#[backend_extension(Flex, Autodiff)]
pub trait CpuRelu6: burn::backend::Backend {
    /// ReLU6 of `x`.
    fn cpu_relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `f(a, b)` of every pair of values, in parallel chunks, as a tensor shaped like `like`.
fn map_pairs(
    a: &[f32],
    b: &[f32],
    like: &FlexTensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> FlexTensor {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(out, (a, b))| {
            super::with_avx2(
                #[inline(always)]
                || {
                    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                        *o = f(*a, *b);
                    }
                },
            )
        });
    FlexTensor::from_data(TensorData::new(out, like.layout().shape().clone()))
}

impl CpuRelu6 for Flex {
    fn cpu_relu6(x: FlexTensor) -> FlexTensor {
        let v = values(&x);
        map_pairs(&v, &v, &x, |v, _| v.clamp(0.0, 6.0))
    }
}

/// The backward step of [`relu6`]: the output gradient where the output is inside (0, 6).
#[derive(Debug)]
struct Relu6Backward;

impl Backward<Flex, 1> for Relu6Backward {
    /// The forward output.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [Some(node)] = ops.parents else {
            return;
        };
        let gradient = grads.consume::<Flex>(&ops.node);
        let output = ops.state;
        let (g, y) = (values(&gradient), values(&output));
        let inside = |g: f32, y: f32| if y > 0.0 && y < 6.0 { g } else { 0.0 };
        grads.register::<Flex>(node.id, map_pairs(&g, &y, &output, inside));
    }
}

impl<C: CheckpointStrategy> CpuRelu6 for Autodiff<Flex, C> {
    fn cpu_relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match Relu6Backward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = Flex::cpu_relu6(x.into_primitive());
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::cpu_relu6(x.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{filled, host};
    use super::*;

    #[test]
    fn values_and_gradient_are_the_clamps() {
        let x = (filled([2, 3, 5, 7], 0, 8.0) + 2.0).detach().require_grad();
        let weights = filled([2, 3, 5, 7], 3, 1.0);
        let y = relu6(x.clone());
        let grads = (y.clone() * weights.clone()).sum().backward();
        let (xs, ys) = (host(x.clone()), host(y));
        let (dx, w) = (host(x.grad(&grads).unwrap()), host(weights));
        assert!(xs.iter().any(|v| *v < 0.0) && xs.iter().any(|v| *v > 6.0));
        for i in 0..xs.len() {
            assert_eq!(ys[i], xs[i].clamp(0.0, 6.0));
            let want = if xs[i] > 0.0 && xs[i] < 6.0 {
                w[i]
            } else {
                0.0
            };
            assert_eq!(dx[i], want, "gradient at {}", xs[i]);
        }
    }
}
