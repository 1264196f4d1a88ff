//! 1x1 convolutions at f32 as register-blocked products read straight from the NCHW planes,
//! on AVX-512.
//!
//! In NCHW each input channel of an image is a contiguous row of pixels, so a block of 64
//! pixels of every input channel can feed the FMAs as it lies: per input channel, four vector
//! loads of pixels and one broadcast weight per output channel, 6 output channels x 64 pixels
//! summed in 24 registers. Nothing is packed, and the bias and activation are applied to the
//! sums in registers before the one store of each output value. The `gemm` crate packs both
//! operands and leaves the activation to a second pass over the block; for the shallow inputs
//! of MobileNet-style blocks (16 to 200 input channels expanded to 6x as many outputs over
//! large maps) packing and that pass cost more than the products.
//!
//! Pixel tails use masked loads and stores, so any width of map is one code path.

#[cfg(target_arch = "x86_64")]
use super::avx512::{bias_activation, lane_mask};
use super::winograd::SharedOutput;
use super::Activation;
use rayon::prelude::*;

/// Pixels per AVX-512 register.
const LANES: usize = 16;

/// Registers of pixels per tile.
const PIXEL_VECTORS: usize = 4;

/// Output channels per tile.
#[cfg(target_arch = "x86_64")]
const CHANNEL_BLOCK: usize = 6;

/// Pixels per parallel task: enough tiles to amortize a task, few enough that a map of one
/// image still spreads over the threads.
const TASK_PIXELS: usize = 16 * LANES * PIXEL_VECTORS;

/// Input bytes of a span of pixels, which all channel groups run over in turn (in L2; 32, 64,
/// 128 and 256 KiB measured, 64 the best overall).
#[cfg(target_arch = "x86_64")]
const SPAN_BYTES: usize = 64 * 1024;

/// Whether this CPU runs [`product`]: with AVX-512.
pub fn available() -> bool {
    super::avx512::available()
}

/// Whether [`product`] is the faster way for maps of `pixels` pixels on this CPU: with
/// AVX-512, on maps of [`MIN_PIXELS`] or more. On smaller maps (EfficientNet's 7x7) the last
/// tile of each row block is mostly masked lanes, and the `gemm` crate was 10-15% faster (on
/// 14x14 maps the two were even; on 56x56 and 112x112 maps with 16 to 24 input channels this
/// product was 35-50% faster).
pub fn suits(pixels: usize) -> bool {
    pixels >= MIN_PIXELS && available()
}

/// The smallest map [`suits`] takes: two tiles of pixels.
pub const MIN_PIXELS: usize = 2 * LANES * PIXEL_VECTORS;

/// One 1x1 convolution of `batch` images: per image, `out_channels` x `pixels` =
/// activation(`kernel` (out channels x depth, row-major) times the image's depth x pixels
/// input plus `bias`). Needs [`available`].
#[allow(clippy::too_many_arguments)]
pub fn product(
    input: &[f32],
    batch: usize,
    depth: usize,
    pixels: usize,
    kernel: &[f32],
    out_channels: usize,
    bias: Option<&[f32]>,
    activation: Activation,
) -> Vec<f32> {
    assert!(available(), "direct 1x1 products need AVX-512");
    assert_eq!(input.len(), batch * depth * pixels, "input size");
    assert_eq!(kernel.len(), out_channels * depth, "kernel size");
    assert!(bias.is_none_or(|b| b.len() == out_channels), "bias size");
    let len = batch * out_channels * pixels;
    let mut output: Vec<f32> = Vec::with_capacity(len);
    let out = SharedOutput(output.as_mut_ptr());
    let chunks = pixels.div_ceil(TASK_PIXELS);
    let out = &out;
    (0..batch * chunks).into_par_iter().for_each(|task| {
        let (image, first) = (task / chunks, task % chunks * TASK_PIXELS);
        let count = TASK_PIXELS.min(pixels - first);
        // SAFETY: the image's input holds depth rows of `pixels` values, columns first..first
        // + count of them exist; the output rows hold `pixels` values each, and each task
        // writes only its own columns of its own image, inside the output's capacity.
        unsafe {
            columns(
                input.as_ptr().add(image * depth * pixels + first),
                out.at(image * out_channels * pixels + first),
                Shape {
                    depth,
                    stride: pixels,
                    count,
                    out_channels,
                },
                kernel,
                bias,
                activation,
            )
        };
    });
    // SAFETY: the tasks cover every pixel of every image, and each wrote all out channels there.
    unsafe { output.set_len(len) };
    output
}

/// What the tiles of one task share (read by the x86-64 loops only).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Shape {
    /// Input channels.
    depth: usize,
    /// Values from one channel's row to the next, in the input and the output.
    stride: usize,
    /// Pixels of the task.
    count: usize,
    /// Output channels.
    out_channels: usize,
}

/// The output columns of one task: tiles of [`CHANNEL_BLOCK`] channels x 64 pixels (fewer at
/// the edges), in spans of [`span_pixels`] pixels: every channel group runs over a span before
/// the next span starts, so the span's input stays in cache for all groups while each output
/// row is written in runs of the span's width. Spans of one tile (64 pixels, four cache lines
/// per row) left the shallow expansions of MobileNet-style blocks bound by writing 96 to 144
/// rows a few lines at a time: 16 -> 96 channels at 144x144, 32 images, 25.5 -> 13.4 ms;
/// 24 -> 144 at 72x72 11.0 -> 5.5 ms; deep inputs, whose spans stay one tile wide, unchanged.
///
/// # Safety
/// `input` and `out` point at the task's first column of depth and out-channel rows of
/// `shape.stride` values, `shape.count` columns of them inside the buffers; needs AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns(
    input: *const f32,
    out: *mut f32,
    shape: Shape,
    kernel: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
) {
    let block = LANES * PIXEL_VECTORS;
    let span = span_pixels(shape.depth);
    for span_first in (0..shape.count).step_by(span) {
        let span_end = (span_first + span).min(shape.count);
        for o in (0..shape.out_channels).step_by(CHANNEL_BLOCK) {
            for first in (span_first..span_end).step_by(block) {
                let left = (span_end - first).min(block);
                let masks: [u16; PIXEL_VECTORS] =
                    std::array::from_fn(|v| lane_mask(left.saturating_sub(v * LANES)));
                let at = Tile {
                    input: input.add(first),
                    out: out.add(o * shape.stride + first),
                    kernel: kernel[o * shape.depth..].as_ptr(),
                    bias: bias.map(|b| &b[o..]),
                    shape,
                    masks,
                };
                match (
                    (shape.out_channels - o).min(CHANNEL_BLOCK),
                    left.div_ceil(LANES),
                ) {
                    (6, 4) => at.run::<6, 4>(activation),
                    (6, 3) => at.run::<6, 3>(activation),
                    (6, 2) => at.run::<6, 2>(activation),
                    (6, _) => at.run::<6, 1>(activation),
                    (5, _) => at.run::<5, 4>(activation),
                    (4, _) => at.run::<4, 4>(activation),
                    (3, _) => at.run::<3, 4>(activation),
                    (2, _) => at.run::<2, 4>(activation),
                    _ => at.run::<1, 4>(activation),
                }
            }
        }
    }
}

/// Pixels of a span for inputs of `depth` channels: [`SPAN_BYTES`] of input, in whole tiles,
/// from one tile to a whole task.
#[cfg(target_arch = "x86_64")]
fn span_pixels(depth: usize) -> usize {
    let block = LANES * PIXEL_VECTORS;
    let fit = SPAN_BYTES / (depth * std::mem::size_of::<f32>()) / block * block;
    fit.clamp(block, TASK_PIXELS)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn columns(
    _: *const f32,
    _: *mut f32,
    _: Shape,
    _: &[f32],
    _: Option<&[f32]>,
    _: Activation,
) {
    unreachable!("direct 1x1 products are x86-64 only (`available` is false elsewhere)")
}

/// One tile's operands.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    /// The tile's first pixel in input channel 0.
    input: *const f32,
    /// The tile's first pixel in its first output channel.
    out: *mut f32,
    /// The kernel row of the tile's first output channel.
    kernel: *const f32,
    /// The biases from the tile's first output channel on.
    bias: Option<&'a [f32]>,
    shape: Shape,
    /// Valid pixels of each register.
    masks: [u16; PIXEL_VECTORS],
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// `O` output channels x `V` registers of pixels: the sums over all input channels, then
    /// bias, activation and a masked store.
    ///
    /// # Safety
    /// As for [`columns`]: the tile's rows and masked columns lie inside the buffers.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const O: usize, const V: usize>(&self, activation: Activation) {
        use std::arch::x86_64::*;
        let mut sums = [[_mm512_setzero_ps(); V]; O];
        for d in 0..self.shape.depth {
            let row = self.input.add(d * self.shape.stride);
            let x: [__m512; V] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(self.masks[v], row.add(v * LANES)));
            for (o, sums) in sums.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*self.kernel.add(o * self.shape.depth + d));
                for (sum, x) in sums.iter_mut().zip(x) {
                    *sum = _mm512_fmadd_ps(w, x, *sum);
                }
            }
        }
        for (o, sums) in sums.into_iter().enumerate() {
            let bias = _mm512_set1_ps(self.bias.map_or(0.0, |b| b[o]));
            for (v, sum) in sums.into_iter().enumerate() {
                let value = bias_activation(sum, bias, activation);
                let at = self.out.add(o * self.shape.stride + v * LANES);
                _mm512_mask_storeu_ps(at, self.masks[v], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_difference, pattern};
    use super::*;

    /// The product written out as loops, in f64.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        [batch, depth, pixels, k]: [usize; 4],
        act: Activation,
    ) -> Vec<f32> {
        let mut out = vec![0f32; batch * k * pixels];
        for n in 0..batch {
            for o in 0..k {
                for p in 0..pixels {
                    let sum: f64 = (0..depth)
                        .map(|d| w[o * depth + d] as f64 * x[(n * depth + d) * pixels + p] as f64)
                        .sum();
                    out[(n * k + o) * pixels + p] = act.apply(sum as f32 + bias[o]);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_loops_at_every_tile_edge() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // Channel counts with every remainder of 6 and pixel counts with full tiles, tiles of
        // 1 to 3 registers, partial registers, more than one task per image, and spans
        // narrower than a task ending in a partial tile (depth 100: spans of 128 pixels).
        for (batch, depth, pixels, k) in [
            (2, 16, 64 * 17 + 5, 96),
            (1, 3, 13, 1),
            (3, 24, 49, 40),
            (1, 37, 196, 23),
            (2, 5, 130, 11),
            (1, 200, 33, 8),
            (1, 100, 1223, 13),
        ] {
            let x: Vec<f32> = (0..batch * depth * pixels)
                .map(|i| pattern(i, 3.0))
                .collect();
            let w: Vec<f32> = (0..k * depth).map(|i| pattern(i + 13, 0.5)).collect();
            let bias: Vec<f32> = (0..k).map(|i| pattern(i + 5, 2.0)).collect();
            for act in [Activation::Linear, Activation::Relu, Activation::Relu6] {
                let got = product(&x, batch, depth, pixels, &w, k, Some(&bias), act);
                let want = reference(&x, &w, &bias, [batch, depth, pixels, k], act);
                let worst = max_difference(&got, &want);
                assert!(
                    worst < 1e-4,
                    "{batch}x{depth}x{pixels} -> {k}, {act:?}: max difference {worst}"
                );
            }
            let got = product(&x, batch, depth, pixels, &w, k, None, Activation::Linear);
            let zero = vec![0.0; k];
            let want = reference(&x, &w, &zero, [batch, depth, pixels, k], Activation::Linear);
            assert!(max_difference(&got, &want) < 1e-4, "without bias");
        }
    }
}
