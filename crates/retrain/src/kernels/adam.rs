//! One Adam / AdamW step on the CPU as a single pass over each variable: the parameter, its
//! gradient and both moments read once, the new parameter and moments written once. Written as
//! tensor operations the step is fourteen passes, each allocating its result (a third of a
//! Dense head's training step on 32 x 25088 features).

use super::{flex_tensor, values};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, ExtensionType, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// The constants of one Adam step, as f32 scalars applied in the order the tensor operations of
/// `train::optimizer` apply them (so both give the same values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Decay of the first moment, and 1 minus it.
    pub beta1: [f32; 2],
    /// Decay of the second moment, and 1 minus it.
    pub beta2: [f32; 2],
    /// Bias corrections 1 - beta1^t and 1 - beta2^t.
    pub correction: [f32; 2],
    /// Added to the root of the corrected second moment.
    pub epsilon: f32,
    /// Learning rate.
    pub lr: f32,
    /// Learning rate times the decoupled weight decay (AdamW); `None` for Adam.
    pub decay: Option<f32>,
}

/// The new parameter and moments.
#[derive(ExtensionType)]
pub struct AdamUpdate<B: burn::backend::Backend> {
    /// The parameter after the step.
    pub param: FloatTensor<B>,
    /// The first moment.
    pub first: FloatTensor<B>,
    /// The second moment.
    pub second: FloatTensor<B>,
}

/// `step` applied to `param` (all four tensors flat, on the CPU backend without autodiff, f32):
/// the new parameter, first and second moments.
pub fn adam(
    param: Tensor<1>,
    grad: Tensor<1>,
    first: Tensor<1>,
    second: Tensor<1>,
    step: AdamStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let update = <Dispatch as CpuAdam>::cpu_adam(
        param.into_dispatch(),
        grad.into_dispatch(),
        first.into_dispatch(),
        second.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(update.param),
        Tensor::from_dispatch(update.first),
        Tensor::from_dispatch(update.second),
    )
}

/// The backend extension behind [`adam`].
#[backend_extension(Flex)]
pub trait CpuAdam: burn::backend::Backend {
    /// One Adam step.
    fn cpu_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        step: AdamStep,
    ) -> AdamUpdate<Self>;
}

impl CpuAdam for Flex {
    fn cpu_adam(
        param: FlexTensor,
        grad: FlexTensor,
        first: FlexTensor,
        second: FlexTensor,
        step: AdamStep,
    ) -> AdamUpdate<Self> {
        let (p, g, m, v) = (
            values(&param),
            values(&grad),
            values(&first),
            values(&second),
        );
        let n = p.len();
        assert!(
            g.len() == n && m.len() == n && v.len() == n,
            "Adam tensors differ in size"
        );
        // Uninitialized: every element of the three is written once (zeroing them first was
        // a tenth of a Dense head step).
        let uninit = || Box::<[f32]>::new_uninit_slice(n);
        let (mut new_p, mut new_m, mut new_v) = (uninit(), uninit(), uninit());
        let s = step;
        new_p
            .par_chunks_mut(CHUNK)
            .zip(new_m.par_chunks_mut(CHUNK))
            .zip(new_v.par_chunks_mut(CHUNK))
            .zip(p.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|((((out_p, out_m), out_v), (p, g)), (m, v))| {
                let chunk = Chunk {
                    param: p,
                    grad: g,
                    first: m,
                    second: v,
                };
                // The decay chosen once per chunk, outside the loop, so the loop vectorizes.
                super::with_avx2(
                    #[inline(always)]
                    || match s.decay {
                        Some(decay) => chunk.step(s, out_p, out_m, out_v, |p| p - p * decay),
                        None => chunk.step(s, out_p, out_m, out_v, |p| p),
                    },
                )
            });
        // SAFETY: the chunks cover all n elements of each output, and `Chunk::step` writes each.
        let (new_p, new_m, new_v) = unsafe {
            (
                new_p.assume_init().into_vec(),
                new_m.assume_init().into_vec(),
                new_v.assume_init().into_vec(),
            )
        };
        AdamUpdate {
            param: flex_tensor(new_p, [n]),
            first: flex_tensor(new_m, [n]),
            second: flex_tensor(new_v, [n]),
        }
    }
}

/// One parallel task's part of the four inputs.
struct Chunk<'a> {
    param: &'a [f32],
    grad: &'a [f32],
    first: &'a [f32],
    second: &'a [f32],
}

impl Chunk<'_> {
    /// The step over this chunk into the three outputs, `decay` applied to the parameter.
    #[inline(always)]
    fn step(
        &self,
        s: AdamStep,
        out_param: &mut [MaybeUninit<f32>],
        out_first: &mut [MaybeUninit<f32>],
        out_second: &mut [MaybeUninit<f32>],
        decay: impl Fn(f32) -> f32,
    ) {
        let n = self.param.len();
        let (grad, first, second) = (&self.grad[..n], &self.first[..n], &self.second[..n]);
        let (out_param, out_first, out_second) = (
            &mut out_param[..n],
            &mut out_first[..n],
            &mut out_second[..n],
        );
        for i in 0..n {
            let m = first[i] * s.beta1[0] + grad[i] * s.beta1[1];
            let v = second[i] * s.beta2[0] + (grad[i] * grad[i]) * s.beta2[1];
            let m_hat = m / s.correction[0];
            let v_hat = v / s.correction[1];
            out_param[i].write(decay(self.param[i]) - m_hat / (v_hat.sqrt() + s.epsilon) * s.lr);
            out_first[i].write(m);
            out_second[i].write(v);
        }
    }
}
