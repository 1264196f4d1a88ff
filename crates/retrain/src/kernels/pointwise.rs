//! 1x1 convolution (stride 1, one group) with its bias and activation, at inference on the CPU.
//!
//! Per image the convolution is one matrix product, out channels x in channels times in
//! channels x pixels. At f32 on AVX-512, on maps of 128 pixels or more, it runs as
//! [`super::direct1x1`]'s register-blocked product straight from the planes; elsewhere in
//! blocks of pixels through the `gemm` crate, each block getting its bias and activation while
//! it is still in cache, or on the AMX tiles for bf16, each 32 x 32 panel getting them on its
//! way from the tiles to the output; instead of Burn's conv2d followed by a separate pass over
//! the whole map for the activation (ReLU6 in MobileNet / EfficientNet-Lite).

use super::amx::{self, PackedLhs, SumsValue};
use super::direct1x1;
use super::{MapOutput, MapValues};
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub use super::{Activation, ConvKernel, Precision};

/// Output bytes of one block of pixels: small enough to stay in L2 between the product and the
/// activation.
const BLOCK_BYTES: usize = 128 * 1024;

/// Output channels up to which [`Pointwise::products_precision`] keeps f32 products on large
/// maps: one AMX tile of rows.
const MAX_DIRECT_ROWS: usize = 16;

/// A product's per-thread buffers: the gathered right-hand side and the tiles' scratch.
type Scratch = (Vec<f32>, amx::TileScratch);

std::thread_local! {
    /// Each thread's [`Scratch`], kept from product to product: fresh buffers were filled with
    /// zeros as they grew to a block's size, once per image and layer (4-5% of a bf16
    /// EfficientNet-Lite0 forward in memset).
    static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
}

/// Run `f` with this thread's [`Scratch`] (fresh buffers if it is in use further up the stack).
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut kept) => f(&mut kept),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// The shape of a 1x1, stride-1, single-group convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointwise {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input (and output) height and width.
    pub input: [usize; 2],
}

impl ConvKernel for Pointwise {
    fn output_shape(&self) -> [usize; 4] {
        let [h, w] = self.input;
        [self.batch, self.out_channels, h, w]
    }

    /// The kernel is the left-hand side of the products: out channels x its other axes.
    fn tiles_shape(&self) -> Option<[usize; 2]> {
        Some([self.out_channels, self.in_channels])
    }

    /// f32 for 16 output channels or fewer on maps the direct AVX-512 product takes
    /// ([`direct1x1::MIN_PIXELS`] or more): the tiles would compute a 32-row panel of which
    /// half is padding, after packing the whole input to bf16, and the direct f32 product,
    /// which reads the input once, was faster (32 -> 16 channels at 112x112 in MobileNetV2 and
    /// EfficientNet-Lite0: 1.74 / 1.80 ms on the tiles, 1.39 / 1.58 ms direct, per 8 images).
    /// The same on every CPU, so a bf16 run gives the same features everywhere.
    fn products_precision(&self, requested: Precision) -> Precision {
        let pixels = self.input[0] * self.input[1];
        match self.out_channels <= MAX_DIRECT_ROWS && pixels >= direct1x1::MIN_PIXELS {
            true => Precision::F32,
            false => requested,
        }
    }

    /// `kernel`: OI (the OIHW kernel with H = W = 1).
    fn run_with(
        &self,
        input: &[f32],
        kernel: &[f32],
        tiles: Option<&PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
    ) -> Vec<f32> {
        let pixels = self.input[0] * self.input[1];
        if direct1x1::suits(pixels) && !amx::runs(precision) {
            return direct1x1::product(
                &precision.rounded(input),
                self.batch,
                self.in_channels,
                pixels,
                kernel,
                self.out_channels,
                bias,
                activation,
            );
        }
        self.product().run(
            input,
            kernel,
            tiles,
            bias,
            activation,
            precision,
            |image, first, _, _| (&image[first..], pixels),
        )
    }

    /// On the AMX tiles (products at bf16 where the CPU has them).
    fn writes_bf16(&self, precision: Precision) -> bool {
        amx::runs(precision)
    }

    fn run_maps(
        &self,
        input: MapValues<'_>,
        kernel: &[f32],
        tiles: Option<&PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
        bf16_output: bool,
    ) -> MapOutput {
        let MapValues::F32(input) = input else {
            unreachable!("pointwise convolutions read f32 maps")
        };
        if !bf16_output {
            return MapOutput::F32(
                self.run_with(input, kernel, tiles, bias, activation, precision),
            );
        }
        assert!(self.writes_bf16(precision), "bf16 output off the tiles");
        let pixels = self.input[0] * self.input[1];
        MapOutput::Bf16(self.product().on_tiles(
            input,
            kernel,
            tiles,
            bias,
            activation,
            |image, first, _, _| (&image[first..], pixels),
        ))
    }
}

impl Pointwise {
    /// The convolution as a [`BlockedProduct`]: per image, the kernel times the input as it
    /// is (in channels x pixels).
    fn product(&self) -> BlockedProduct {
        let pixels = self.input[0] * self.input[1];
        BlockedProduct {
            batch: self.batch,
            out_channels: self.out_channels,
            depth: self.in_channels,
            pixels,
            input_per_image: self.in_channels * pixels,
        }
    }

    /// The gradient of the input from `output_gradient` (NCHW, the output's shape): per image
    /// the kernel transposed (in x out channels) times the output gradient, the same product
    /// with the channel counts swapped.
    pub fn input_gradient(&self, kernel: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        let (c, k) = (self.in_channels, self.out_channels);
        let mut transposed = vec![0f32; kernel.len()];
        for (o, row) in kernel.chunks_exact(c).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                transposed[i * k + o] = v;
            }
        }
        let backward = Pointwise {
            in_channels: k,
            out_channels: c,
            ..*self
        };
        backward.run(
            output_gradient,
            &transposed,
            None,
            Activation::Linear,
            Precision::F32,
        )
    }

    /// The gradient of the kernel (out x in channels) from the forward `input` and
    /// `output_gradient`: the sum over images of the output gradient (out channels x pixels)
    /// times the input read transposed (pixels x in channels), each image's product added to
    /// the last by the `gemm` crate.
    pub fn weight_gradient(&self, input: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        let (c, k) = (self.in_channels, self.out_channels);
        let pixels = self.input[0] * self.input[1];
        assert_eq!(input.len(), self.batch * c * pixels, "input size");
        assert_eq!(
            output_gradient.len(),
            self.batch * k * pixels,
            "output gradient size"
        );
        let mut gradient = vec![0f32; k * c];
        for (image, (x, grad)) in input
            .chunks_exact(c * pixels)
            .zip(output_gradient.chunks_exact(k * pixels))
            .enumerate()
        {
            let all_threads = gemm::Parallelism::Rayon(0);
            super::add_gradient_product(&mut gradient, grad, x, k, image > 0, all_threads);
        }
        gradient
    }
}

/// Per image, out channels x pixels = kernel (out channels x depth) times columns (depth x
/// pixels), computed in blocks of pixels, each block getting its bias and activation while it
/// is still in cache. The images run in parallel, one product at a time per thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockedProduct {
    /// Images.
    pub batch: usize,
    /// Rows of the kernel and of each image's output.
    pub out_channels: usize,
    /// Columns of the kernel, rows of the right-hand side.
    pub depth: usize,
    /// Output pixels per image.
    pub pixels: usize,
    /// Input values per image.
    pub input_per_image: usize,
}

impl BlockedProduct {
    /// The product over `input` (`batch` images of `input_per_image` values) at `precision`
    /// (`kernel` already rounded to it; on the tiles, `tiles` is the kernel packed for them,
    /// else it is packed here). `columns(image, first, count, scratch)` gives the depth
    /// x `count` right-hand side of the pixels from `first` on, as values and a row stride:
    /// read in place from `image`, or gathered into `scratch` (one buffer per task, kept across
    /// blocks). bf16 products run on the AMX tiles where the CPU has them, else as f32 products
    /// of the rounded input.
    #[allow(clippy::too_many_arguments)]
    pub fn run<F>(
        &self,
        input: &[f32],
        kernel: &[f32],
        tiles: Option<&PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
        columns: F,
    ) -> Vec<f32>
    where
        F: for<'s> Fn(&'s [f32], usize, usize, &'s mut Vec<f32>) -> (&'s [f32], usize) + Sync,
    {
        let (k, depth) = (self.out_channels, self.depth);
        if amx::runs(precision) {
            return self.on_tiles(input, kernel, tiles, bias, activation, columns);
        }
        assert_eq!(input.len(), self.batch * self.input_per_image, "input size");
        assert_eq!(kernel.len(), k * depth, "kernel size");
        let input = precision.rounded(input);
        let block = (BLOCK_BYTES / (4 * k.max(1))).clamp(64, self.pixels.max(64));
        self.blocks(
            &input,
            block,
            |(gathered, _), image, out: *mut f32, first, count| {
                let (rhs, rhs_stride) = columns(image, first, count, gathered);
                assert!(
                    depth == 0 || rhs.len() >= (depth - 1) * rhs_stride + count,
                    "right-hand side too short"
                );
                // SAFETY: `out` points at this image's k x pixels output (row-major); the product
                // writes (read_dst false) the k x count block starting at column `first`, reading
                // the depth x count block of `rhs` (its length was just checked), all inside the
                // buffers.
                unsafe {
                    gemm::gemm(
                        k,
                        count,
                        depth,
                        out.add(first),
                        1,
                        self.pixels as isize,
                        false,
                        kernel.as_ptr(),
                        1,
                        depth as isize,
                        rhs.as_ptr(),
                        1,
                        rhs_stride as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
                // SAFETY: the product wrote these columns of every row.
                unsafe { self.finish_block(out, first, count, bias, activation) };
            },
        )
    }

    /// The product on the AMX tiles (bf16 products, which must run there), written as `T`
    /// (f32, or bf16 for a reader that takes it): blocks of columns packed per block, each
    /// 32 x 32 panel of sums getting its bias and activation on its way to the output.
    /// `columns` as for [`BlockedProduct::run`].
    pub fn on_tiles<T: SumsValue, F>(
        &self,
        input: &[f32],
        kernel: &[f32],
        tiles: Option<&PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        columns: F,
    ) -> Vec<T>
    where
        F: for<'s> Fn(&'s [f32], usize, usize, &'s mut Vec<f32>) -> (&'s [f32], usize) + Sync,
    {
        let (k, depth) = (self.out_channels, self.depth);
        assert_eq!(input.len(), self.batch * self.input_per_image, "input size");
        assert_eq!(kernel.len(), k * depth, "kernel size");
        let packed_here;
        let lhs = match tiles {
            Some(tiles) => tiles,
            None => {
                packed_here = PackedLhs::new(kernel, k, depth);
                &packed_here
            }
        };
        let block = amx::block_columns(k, depth);
        self.blocks(
            input,
            block,
            |(gathered, tiles), image, out: *mut T, first, count| {
                let (rhs, stride) = columns(image, first, count, gathered);
                // SAFETY: from column `first` of row 0 to column first + count of row k - 1 of
                // this image's k x pixels output.
                let block = unsafe {
                    std::slice::from_raw_parts_mut(
                        out.add(first).cast::<MaybeUninit<T>>(),
                        (k - 1) * self.pixels + count,
                    )
                };
                let sums = amx::Sums {
                    out: T::sums_out(block),
                    stride: self.pixels,
                    bias,
                    activation,
                };
                lhs.multiply(rhs, stride, count, tiles, sums);
            },
        )
    }

    /// The output, images in parallel, each in blocks of `block` pixels: `product(scratch,
    /// image, out, first, count)` must write columns first..first + count of every row of the
    /// image's out channels x pixels output `out`.
    fn blocks<T: Send, P>(&self, input: &[f32], block: usize, product: P) -> Vec<T>
    where
        P: Fn(&mut Scratch, &[f32], *mut T, usize, usize) + Sync,
    {
        let (k, p) = (self.out_channels, self.pixels);
        let len = self.batch * k * p;
        if len == 0 {
            return Vec::new();
        }
        // Not zeroed first (that pass cost 4% of a Lite0 forward): the products write every
        // element.
        let mut output: Vec<T> = Vec::with_capacity(len);
        output.spare_capacity_mut()[..len]
            .par_chunks_mut(k * p)
            .zip(input.par_chunks(self.input_per_image.max(1)))
            .for_each(|(out, image)| {
                let out = out.as_mut_ptr().cast::<T>();
                with_scratch(|scratch| {
                    for first in (0..p).step_by(block) {
                        product(scratch, image, out, first, block.min(p - first));
                    }
                })
            });
        // SAFETY: the column blocks cover all p columns of every image's k rows, so every
        // element below the capacity has been written.
        unsafe { output.set_len(len) };
        output
    }

    /// Bias and activation on columns first..first + count of each row of `out`.
    ///
    /// # Safety
    /// `out` must point to one image's out channels x pixels output, those columns written.
    unsafe fn finish_block(
        &self,
        out: *mut f32,
        first: usize,
        count: usize,
        bias: Option<&[f32]>,
        activation: Activation,
    ) {
        super::with_avx2(
            #[inline(always)]
            || {
                for channel in 0..self.out_channels {
                    // SAFETY: caller: these `count` values of the row are written.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.add(channel * self.pixels + first),
                            count,
                        )
                    };
                    activation.apply_with_bias(row, bias.map_or(0.0, |b| b[channel]));
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_difference, pattern};
    use super::*;
    use burn::tensor::bf16;

    /// The product written out as loops.
    fn reference(conv: Pointwise, x: &[f32], w: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
        let (c, k, p) = (
            conv.in_channels,
            conv.out_channels,
            conv.input[0] * conv.input[1],
        );
        let mut out = vec![0f32; conv.batch * k * p];
        for n in 0..conv.batch {
            for o in 0..k {
                for i in 0..p {
                    let sum: f32 = (0..c).map(|j| w[o * c + j] * x[(n * c + j) * p + i]).sum();
                    out[(n * k + o) * p + i] = act.apply(sum + bias[o]);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_loops_across_block_edges() {
        // 1100 pixels with 40 out channels: on AVX-512 the direct product, elsewhere blocks of
        // 819 for `gemm`, so a full block and a partial one; 7x9 pixels: `gemm` everywhere.
        for input in [[20, 55], [7, 9]] {
            matches_the_loops_on(Pointwise {
                batch: 2,
                in_channels: 24,
                out_channels: 40,
                input,
            });
        }
    }

    fn matches_the_loops_on(conv: Pointwise) {
        let pixels = conv.input[0] * conv.input[1];
        let x: Vec<f32> = (0..2 * 24 * pixels).map(|i| pattern(i, 3.0)).collect();
        let w: Vec<f32> = (0..40 * 24).map(|i| pattern(i + 13, 0.5)).collect();
        let bias: Vec<f32> = (0..40).map(|i| pattern(i + 5, 1.0)).collect();
        for act in [Activation::Linear, Activation::Relu6] {
            let got = conv.run(&x, &w, Some(&bias), act, Precision::F32);
            let want = reference(conv, &x, &w, &bias, act);
            let worst = max_difference(&got, &want);
            assert!(worst < 1e-4, "{act:?}: max difference {worst}");
            if act == Activation::Relu6 {
                assert!(got.iter().all(|v| (0.0..=6.0).contains(v)));
                assert!(got.contains(&6.0) && got.contains(&0.0));
            }
        }
    }

    #[test]
    fn bf16_products_are_those_of_the_rounded_values() {
        // On AMX tiles where the CPU has them (the sums in another order than the loops'),
        // else as f32 products of the rounded input: the same numbers to f32 rounding. 21
        // output channels end inside a 32-row panel, 99 and 50 pixels end 3 and 18 columns into
        // a 32-column one (the masked stores of the panels' bias and activation).
        for (input, activation) in [([9, 11], Activation::Relu6), ([5, 10], Activation::Linear)] {
            bf16_matches_the_rounded_loops(input, activation);
        }
    }

    fn bf16_matches_the_rounded_loops(input: [usize; 2], activation: Activation) {
        let conv = Pointwise {
            batch: 3,
            in_channels: 37,
            out_channels: 21,
            input,
        };
        let pixels = input[0] * input[1];
        let round = |v: Vec<f32>| v.into_iter().map(super::super::bf16::to_bf16).collect();
        let x: Vec<f32> = (0..3 * 37 * pixels).map(|i| pattern(i, 3.0)).collect();
        let w: Vec<f32> = round((0..21 * 37).map(|i| pattern(i + 13, 0.5)).collect());
        let bias: Vec<f32> = (0..21).map(|i| pattern(i + 5, 1.0)).collect();
        let got = conv.run(&x, &w, Some(&bias), activation, Precision::Bf16);
        // Weights packed for the tiles once (as a layer keeps them): the same numbers.
        let prepared = super::super::PreparedWeights::new(&conv, &w, Precision::Bf16);
        match &prepared.tiles {
            Some(tiles) => assert_eq!(
                conv.run_with(
                    &x,
                    &prepared.values,
                    Some(tiles),
                    Some(&bias),
                    activation,
                    Precision::Bf16
                ),
                got
            ),
            None => assert!(!amx::runs(Precision::Bf16), "packed where the tiles run"),
        }
        let want = reference(conv, &round(x.clone()), &w, &bias, activation);
        let worst = max_difference(&got, &want);
        assert!(
            worst < 1e-5,
            "{input:?} {activation:?}: max difference {worst}"
        );
        let unrounded = reference(conv, &x, &w, &bias, activation);
        assert!(
            max_difference(&got, &unrounded) > 1e-3,
            "bf16 rounding changes the results"
        );
    }

    #[test]
    fn bf16_outputs_are_the_f32_outputs_rounded() {
        // Handed over in bf16 (rounded to nearest even), for a reader that takes bf16: the
        // same sums, rounded once. 40 channels and 99 pixels end inside their last panels.
        let conv = Pointwise {
            batch: 2,
            in_channels: 24,
            out_channels: 40,
            input: [9, 11],
        };
        if !conv.writes_bf16(Precision::Bf16) {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        let x: Vec<f32> = (0..2 * 24 * 99).map(|i| pattern(i, 3.0)).collect();
        let w: Vec<f32> = (0..40 * 24).map(|i| pattern(i + 13, 0.5)).collect();
        let bias: Vec<f32> = (0..40).map(|i| pattern(i + 5, 1.0)).collect();
        let run = |bf16_output| {
            let input = MapValues::F32(&x);
            let act = Activation::Relu6;
            conv.run_maps(
                input,
                &w,
                None,
                Some(&bias),
                act,
                Precision::Bf16,
                bf16_output,
            )
        };
        let (MapOutput::F32(f32s), MapOutput::Bf16(bf16s)) = (run(false), run(true)) else {
            panic!("f32 and bf16 outputs asked for");
        };
        let rounded: Vec<bf16> = f32s.iter().map(|&v| bf16::from_f32(v)).collect();
        assert_eq!(bf16s, rounded);
        assert!(f32s.iter().any(|&v| v != bf16::from_f32(v).to_f32()));
    }

    #[test]
    fn few_output_channels_on_large_maps_keep_f32_products() {
        let conv = |out_channels, side| Pointwise {
            batch: 1,
            in_channels: 32,
            out_channels,
            input: [side, side],
        };
        let kept = |c: Pointwise| c.products_precision(Precision::Bf16) == Precision::F32;
        assert!(kept(conv(16, 112)), "16 channels at 112x112");
        assert!(!kept(conv(17, 112)), "17 channels fill two row tiles");
        assert!(
            !kept(conv(16, 7)),
            "7x7 maps: the direct product does not take them"
        );
        assert_eq!(
            conv(64, 112).products_precision(Precision::F32),
            Precision::F32
        );
    }
}
