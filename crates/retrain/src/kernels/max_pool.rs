//! Max pooling at inference on the CPU.
//!
//! burn-flex's `max_pool2d` works out each output value with index arithmetic per window
//! element: VGG16's five 2x2 pools took 30% of its bf16 forward pass that way (2.7 ns per input
//! value). Here each output row is the maximum of its window's input rows, taken a whole row at
//! a time (a loop that vectorizes), then of the window's columns in that row.

use super::{flex_tensor, values};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;

/// The shape of a max pooling of NCHW maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool {
    /// Batch size.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Window height and width.
    pub window: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding (before, after) along height and width: never part of a maximum.
    pub padding: [(usize, usize); 2],
}

impl MaxPool {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        super::output_size(self.input, self.padding, self.window, self.stride)
    }

    /// The pooled maps of `input` (NCHW).
    pub fn run(&self, input: &[f32]) -> Vec<f32> {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let [(top, _), (left, _)] = self.padding;
        let planes = self.batch * self.channels;
        assert_eq!(input.len(), planes * h * w, "input size");
        let mut output = vec![0f32; planes * oh * ow];
        if output.is_empty() {
            return output;
        }
        output
            .par_chunks_mut(oh * ow)
            .zip(input.par_chunks(h * w))
            .for_each_init(Vec::new, |rows, (out, plane)| {
                super::with_avx2(
                    #[inline(always)]
                    || {
                        for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                            // The maximum over the window's rows inside the map, per column.
                            rows.clear();
                            rows.resize(w, f32::NEG_INFINITY);
                            let first = (oy * self.stride[0]).saturating_sub(top);
                            let last = (oy * self.stride[0] + self.window[0]).saturating_sub(top);
                            for line in plane.chunks_exact(w).take(last.min(h)).skip(first) {
                                for (m, &v) in rows.iter_mut().zip(line) {
                                    *m = m.max(v);
                                }
                            }
                            for (ox, value) in out.iter_mut().enumerate() {
                                let first = (ox * self.stride[1]).saturating_sub(left);
                                let last = (ox * self.stride[1] + self.window[1])
                                    .saturating_sub(left)
                                    .min(w);
                                *value = rows[first.min(last)..last]
                                    .iter()
                                    .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                            }
                        }
                    },
                )
            });
        output
    }
}

/// `pool` of `x`, a CPU tensor (`Device::flex()`, no autodiff, f32) whose values it reads in
/// place.
pub fn max_pool(x: Tensor<4>, pool: MaxPool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuMaxPool>::cpu_max_pool(
        x.into_dispatch(),
        pool,
    ))
}

/// The backend extension behind [`max_pool`].
#[backend_extension(Flex)]
pub trait CpuMaxPool: burn::backend::Backend {
    /// `pool` of `x`.
    fn cpu_max_pool(x: FloatTensor<Self>, pool: MaxPool) -> FloatTensor<Self>;
}

impl CpuMaxPool for Flex {
    fn cpu_max_pool(x: FlexTensor, pool: MaxPool) -> FlexTensor {
        let [oh, ow] = pool.output();
        flex_tensor(pool.run(&values(&x)), [pool.batch, pool.channels, oh, ow])
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{host, max_difference};
    use super::*;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn matches_burns_max_pool_for_windows_strides_and_padding() {
        let device = Device::flex();
        // VGG's 2x2 pools (an odd map drops its last row and column), Inception's 3x3 stride
        // 2, TF-"same" 3x3 stride 1 (padding on both sides), and a padded window at the edge.
        for (input, window, stride, padding) in [
            ([8, 10], [2, 2], [2, 2], [(0, 0), (0, 0)]),
            ([7, 9], [2, 2], [2, 2], [(0, 0), (0, 0)]),
            ([9, 11], [3, 3], [2, 2], [(0, 0), (0, 0)]),
            ([6, 7], [3, 3], [1, 1], [(1, 1), (1, 1)]),
            ([5, 6], [3, 2], [2, 2], [(0, 1), (1, 0)]),
        ] {
            let pool = MaxPool {
                batch: 2,
                channels: 3,
                input,
                window,
                stride,
                padding,
            };
            let x = Tensor::<4>::random(
                [2, 3, input[0], input[1]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let want = host(max_pool2d(
                x.clone(),
                MaxPoolOptions::new(window)
                    .with_stride(stride)
                    .with_padding_pairs(padding),
            ));
            let got = max_pool(x, pool);
            let [oh, ow] = pool.output();
            assert_eq!(got.dims(), [2, 3, oh, ow], "{pool:?}");
            assert_eq!(max_difference(&host(got), &want), 0.0, "{pool:?}");
        }
    }
}
