//! 3x3, stride-1 convolutions as direct bf16 products on AMX tiles (`--precision bf16` where
//! [`amx::available`]), without Winograd and without im2col.
//!
//! Each image is copied once into "pair planes": its channels in pairs, each pair a plane of
//! 32-bit bf16 pairs over the zero-padded map, rows `width` = padded width apart. Output pixel
//! (y, x) sits at q = y * width + x, and tap (dy, dx) of it reads input q + dy * width + dx: one
//! fixed offset per tap for every pixel. So a tile of 16 consecutive q of 16 pairs of channels
//! is a plain strided load from the pair planes, and the convolution is a product of the
//! kernel (out channels x taps · channels) with tiles found at 9 offsets, no gathering. The
//! q past the right edge of a row (x >= output width) are computed and dropped: 2 of every
//! `width` for "same" padding. The tiles hold bf16 values, Winograd-domain values would lose
//! more to that rounding, and at 13x the f32 speed the 4x multiplies of a direct product
//! cost less than Winograd's transforms.

use super::amx::{interleave_bf16, PackedLhs, RhsTiles, Sums};
use super::winograd::{Conv3x3, SharedOutput};
use super::Activation;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Channels per depth tile (16 pairs).
const TILE_CHANNELS: usize = 32;
/// Output values (out channels x q) per task: kept in L2 until the bias and activation.
const BLOCK_BYTES: usize = 1 << 20;

/// The OIHW `kernel` (k x c x 3 x 3) as the left-hand side the tiles take: k rows of 9 taps x
/// the channels padded to whole depth tiles, rounded to bf16 later by [`PackedLhs::new`].
pub(super) fn arrange_kernel(kernel: &[f32], k: usize, c: usize) -> Vec<f32> {
    let padded = c.next_multiple_of(TILE_CHANNELS);
    let mut rows = vec![0f32; k * 9 * padded];
    for (row, filters) in rows
        .chunks_exact_mut(9 * padded)
        .zip(kernel.chunks_exact(c * 9))
    {
        for (channel, taps) in filters.chunks_exact(9).enumerate() {
            for (tap, &v) in taps.iter().enumerate() {
                row[tap * padded + channel] = v;
            }
        }
    }
    rows
}

impl Conv3x3 {
    /// The convolution with bf16 products on AMX tiles: `kernel` from [`arrange_kernel`].
    pub(super) fn run_on_tiles(
        &self,
        input: &[f32],
        kernel: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
    ) -> Vec<f32> {
        let (c, k) = (self.in_channels, self.out_channels);
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let [_, (pl, pr)] = self.padding;
        let padded = c.next_multiple_of(TILE_CHANNELS);
        assert_eq!(input.len(), self.batch * c * h * w, "input size");
        assert_eq!(kernel.len(), k * 9 * padded, "arranged kernel size");
        let len = self.batch * k * oh * ow;
        if len == 0 {
            return vec![0f32; len];
        }
        let width = w + pl + pr;
        let positions = oh * width;
        let block = (BLOCK_BYTES / (4 * k)).clamp(32, positions.next_multiple_of(32)) / 32 * 32;
        // Every tile of the last block reads at most 2 rows and 2 columns past its q.
        let plane = positions.next_multiple_of(block) + 2 * width + 2;
        let pairs = padded / 2;
        let planes = self.pair_planes(input, width, plane, pairs);
        let lhs = PackedLhs::new(kernel, k, 9 * padded);
        let offsets: Vec<usize> = (0..9)
            .flat_map(|tap| {
                let shift = tap / 3 * width + tap % 3;
                (0..padded / TILE_CHANNELS).map(move |t| (t * 16 * plane + shift) * 4)
            })
            .collect();
        let mut output: Vec<f32> = Vec::with_capacity(len);
        let out = SharedOutput(output.as_mut_ptr());
        let tasks: Vec<(usize, usize)> = (0..self.batch)
            .flat_map(|image| (0..positions).step_by(block).map(move |q| (image, q)))
            .collect();
        tasks
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |sums, (image, first)| {
                let rhs = RhsTiles {
                    base: planes[(image * pairs * plane + first)..].as_ptr(),
                    column_tile_bytes: 16 * 4,
                    row_bytes: plane * 4,
                    offsets: &offsets,
                };
                sums.clear();
                sums.reserve(k * block);
                // SAFETY: the tiles of this block read pair planes of this image from q =
                // first up to first + block + 2 * width + 2 <= plane (the plane's length),
                // plus the depth offsets (pair rows inside the image's `pairs` planes).
                unsafe {
                    let out = &mut sums.spare_capacity_mut()[..k * block];
                    lhs.product(rhs, block, Sums::plain(out, block));
                    sums.set_len(k * block);
                }
                let count = block.min(positions - first);
                // SAFETY: each task writes the output pixels of its own q range of one image.
                unsafe {
                    self.finish(
                        sums, block, image, first, count, width, bias, activation, &out,
                    )
                };
            });
        // SAFETY: the tasks cover every q of every image, so every output pixel is written.
        unsafe { output.set_len(len) };
        output
    }

    /// The images as pair planes of `plane` values, rows `width` apart, the map at row `pt`
    /// and column `pl`, zeros around it and in the pairs past the channels.
    fn pair_planes(&self, input: &[f32], width: usize, plane: usize, pairs: usize) -> Vec<u32> {
        let c = self.in_channels;
        let [h, w] = self.input;
        let [(pt, _), (pl, _)] = self.padding;
        let mut planes = vec![0u32; self.batch * pairs * plane];
        planes
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(index, to)| {
                let (image, channel) = (index / pairs, index % pairs * 2);
                if channel >= c {
                    return;
                }
                let map = |channel: usize| &input[(image * c + channel) * h * w..][..h * w];
                let (low, high) = (map(channel), (channel + 1 < c).then(|| map(channel + 1)));
                for y in 0..h {
                    let to = &mut to[(y + pt) * width + pl..][..w];
                    let high = high.map(|high| &high[y * w..][..w]);
                    interleave_bf16(&low[y * w..][..w], high, to);
                }
            });
        planes
    }

    /// Bias and activation of the `count` q from `first` of `image` (`sums`: out channels x
    /// `stride`), written to the output pixels they stand for.
    ///
    /// # Safety
    /// `out` must point to the whole NCHW output, and no other thread may write these pixels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn finish(
        &self,
        sums: &[f32],
        stride: usize,
        image: usize,
        first: usize,
        count: usize,
        width: usize,
        bias: Option<&[f32]>,
        activation: Activation,
        out: &SharedOutput,
    ) {
        let k = self.out_channels;
        let [oh, ow] = self.output();
        super::with_avx2(
            #[inline(always)]
            || {
                for (channel, row) in sums.chunks_exact(stride).enumerate().take(k) {
                    let b = bias.map_or(0.0, |b| b[channel]);
                    let plane = (image * k + channel) * oh * ow;
                    // The output rows this q range touches, each from its first q inside the
                    // range to its last column.
                    let mut q = first;
                    while q < first + count {
                        let (y, x) = (q / width, q % width);
                        let end = (y * width + ow).min(first + count);
                        if x < ow {
                            let from = &row[q - first..end - first];
                            // SAFETY: pixels (y, x..x + from.len()) of this channel's plane,
                            // inside the output (caller: not written by another thread).
                            let to = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.0.add(plane + y * ow + x).cast::<MaybeUninit<f32>>(),
                                    from.len(),
                                )
                            };
                            activation.write_with_bias(to, from, b);
                        }
                        q = (y + 1) * width;
                    }
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::amx;
    use super::super::bf16::to_bf16;
    use super::super::test_support::{max_difference, pattern};
    use super::*;

    /// The convolution written out as loops, on the bf16-rounded input and kernel.
    fn reference(conv: Conv3x3, x: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<f32> {
        let [h, w] = conv.input;
        let [oh, ow] = conv.output();
        let [(pt, _), (pl, _)] = conv.padding;
        let (c, k) = (conv.in_channels, conv.out_channels);
        let mut out = vec![0f32; conv.batch * k * oh * ow];
        for n in 0..conv.batch {
            for o in 0..k {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut sum = 0f64;
                        for i in 0..c {
                            for tap in 0..9 {
                                let iy = (y + tap / 3).wrapping_sub(pt);
                                let ix = (xo + tap % 3).wrapping_sub(pl);
                                if iy < h && ix < w {
                                    let v = to_bf16(x[((n * c + i) * h + iy) * w + ix]);
                                    let g = to_bf16(kernel[(o * c + i) * 9 + tap]);
                                    sum += v as f64 * g as f64;
                                }
                            }
                        }
                        out[((n * k + o) * oh + y) * ow + xo] = (sum as f32 + bias[o]).max(0.0);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_loops_on_rounded_values_for_paddings_and_edges() {
        if !amx::available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // Odd channel counts (a partial depth tile and a lone last pair), out channels off
        // the tile edge, "same", TF-"same" (0, 1) and "valid" padding, maps of one and of
        // several blocks of q.
        for (c, k, input, padding) in [
            (37, 24, [9, 13], [(1, 1), (1, 1)]),
            (8, 40, [6, 7], [(0, 1), (0, 1)]),
            (64, 16, [5, 5], [(0, 0), (0, 0)]),
            (16, 8, [70, 66], [(1, 1), (1, 1)]),
        ] {
            let conv = Conv3x3 {
                batch: 2,
                in_channels: c,
                out_channels: k,
                input,
                padding,
            };
            let [h, w] = input;
            let x: Vec<f32> = (0..2 * c * h * w).map(|i| pattern(i, 2.0)).collect();
            let kernel: Vec<f32> = (0..k * c * 9).map(|i| pattern(i + 11, 0.3)).collect();
            let bias: Vec<f32> = (0..k).map(|i| pattern(i + 3, 1.0)).collect();
            let got = conv.run_on_tiles(
                &x,
                &arrange_kernel(&kernel, k, c),
                Some(&bias),
                Activation::Relu,
            );
            let want = reference(conv, &x, &kernel, &bias);
            let worst = max_difference(&got, &want);
            assert!(worst < 1e-4, "{conv:?}: max difference {worst}");
            assert!(got.iter().any(|&v| v > 1.0), "{conv:?}: degenerate output");
        }
    }
}
