//! Winograd F(4x4, 3x3) convolution (Lavin & Gray, 2015) for 3x3, stride-1 convolutions on
//! the CPU, at inference and in training: the input gradient is such a convolution too, and the
//! kernel gradient is the same 36 products over blocks ([`Conv3x3::weight_gradient`]).
//!
//! Each 4x4 block of outputs comes from a 6x6 block of input: both the input blocks and the
//! kernels are transformed into a 6x6 "Winograd domain", where the convolution becomes 36
//! independent matrix products (out channels x in channels times in channels x blocks), then one
//! output transform. That is 36 multiplies per 16 outputs instead of 144: 4x fewer than a direct
//! or im2col convolution, and the products run in the `gemm` crate's SIMD kernels. Blocks are
//! processed in chunks sized to stay in cache, chunks and products in parallel (rayon).
//!
//! No crate offered this for Burn's CPU backend; it is written here (about 300 lines) and tested
//! against Burn's `conv2d` (relative error ~1e-6 in f32) and its gradients.

use super::{amx, direct3x3};
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub use super::{Activation, ConvKernel, Precision};

/// The shape of a 3x3, stride-1, dilation-1, single-group convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3 {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Zero padding (before, after) for height and width.
    pub padding: [(usize, usize); 2],
}

impl ConvKernel for Conv3x3 {
    fn output_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.output();
        [self.batch, self.out_channels, oh, ow]
    }

    /// For bf16 on AMX tiles the kernel arranged for the direct product
    /// ([`direct3x3::arrange_kernel`]), else transformed for Winograd ([`transform_kernels`]).
    fn prepare_weights(&self, kernel: &[f32], precision: Precision) -> Vec<f32> {
        match amx::runs(precision) {
            true => direct3x3::arrange_kernel(kernel, self.out_channels, self.in_channels),
            false => transform_kernels(kernel, self.out_channels, self.in_channels),
        }
    }

    /// `input` NCHW, `kernels` from [`ConvKernel::prepare_weights`], `bias` one per output
    /// channel; the result is NCHW with `activation` applied. bf16 products run directly on
    /// AMX tiles where the CPU has them ([`direct3x3`]), else as Winograd on the rounded input.
    fn run_with(
        &self,
        input: &[f32],
        kernels: &[f32],
        _tiles: Option<&amx::PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
    ) -> Vec<f32> {
        if amx::runs(precision) {
            return self.run_on_tiles(input, kernels, bias, activation);
        }
        let input = &precision.rounded(input);
        let (c, k) = (self.in_channels, self.out_channels);
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        assert_eq!(input.len(), self.batch * c * h * w, "input size");
        assert_eq!(kernels.len(), 36 * k * c, "transformed kernel size");
        let grid = [oh.div_ceil(4), ow.div_ceil(4)];
        let blocks = self.batch * grid[0] * grid[1];
        let len = self.batch * k * oh * ow;
        if blocks == 0 || k == 0 {
            return vec![0f32; len];
        }
        // Uninitialized: every element is written once, by the block it belongs to (zeroing
        // the buffers first took a tenth of a VGG16 fine-tune step).
        let mut output: Vec<f32> = Vec::with_capacity(len);
        // Blocks per chunk: the two Winograd-domain buffers of a chunk stay near 4 MiB.
        let per_chunk = ((1 << 20) / (36 * c.max(k))).clamp(16, 1024);
        let out = SharedOutput(output.as_mut_ptr());
        let chunks: Vec<usize> = (0..blocks).step_by(per_chunk).collect();
        chunks.into_par_iter().for_each(|first| {
            let count = per_chunk.min(blocks - first);
            let v = self.transform_inputs(input, first, count, grid);
            let mut m = Box::<[f32]>::new_uninit_slice(36 * k * count);
            m.par_chunks_mut(k * count)
                .zip(v.par_chunks(c * count))
                .zip(kernels.par_chunks(k * c))
                .for_each(|((m, v), u)| multiply(u, v, m, k, c, count));
            // SAFETY: each of the 36 products wrote its whole k x count part of `m`.
            let m = unsafe { m.assume_init() };
            // SAFETY: each 4x4 output block belongs to exactly one chunk, so parallel chunks
            // write disjoint elements of `output`, which outlives the loop.
            unsafe { self.transform_outputs(&m, first, count, grid, bias, activation, &out) };
        });
        // SAFETY: the blocks cover the output, and each wrote its elements inside the map.
        unsafe { output.set_len(len) };
        output
    }
}

impl Conv3x3 {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        let [h, w] = self.input;
        let [(pt, pb), (pl, pr)] = self.padding;
        [
            (h + pt + pb).saturating_sub(2),
            (w + pl + pr).saturating_sub(2),
        ]
    }

    /// Whether [`Conv3x3::input_gradient`] and [`Conv3x3::weight_gradient`] apply: padding of
    /// at most 2 on each side (so the input gradient is a 3x3 convolution again).
    pub fn has_gradients(&self) -> bool {
        let [(pt, pb), (pl, pr)] = self.padding;
        pt.max(pb).max(pl).max(pr) <= 2
    }

    /// The gradient of the input from `output_gradient` (NCHW, the output's shape), by
    /// Winograd too: the 3x3 convolution of it with the kernel turned by 180 degrees and its
    /// in and out channels swapped, padded by 2 minus the forward padding.
    pub fn input_gradient(&self, kernel: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        let (c, k) = (self.in_channels, self.out_channels);
        let [(pt, pb), (pl, pr)] = self.padding;
        let mut turned = vec![0f32; kernel.len()];
        for (o, filters) in kernel.chunks(c * 9).enumerate() {
            for (i, filter) in filters.chunks(9).enumerate() {
                for (tap, &v) in filter.iter().enumerate() {
                    turned[(i * k + o) * 9 + 8 - tap] = v;
                }
            }
        }
        let transposed = Conv3x3 {
            batch: self.batch,
            in_channels: k,
            out_channels: c,
            input: self.output(),
            padding: [(2 - pt, 2 - pb), (2 - pl, 2 - pr)],
        };
        let weights = transposed.prepare_weights(&turned, Precision::F32);
        transposed.run(
            output_gradient,
            &weights,
            None,
            Activation::Linear,
            Precision::F32,
        )
    }

    /// The gradient of the OIHW kernel from the forward `input` and `output_gradient`, by
    /// Winograd too: with V = B^T d B of each 6x6 input block (the forward's input transform)
    /// and U = A g A^T of the 4x4 block of the output gradient it produced, the gradient of the
    /// transformed kernel G w G^T is the sum over blocks of U ⊙ V, so the kernel gradient is
    /// G^T (Σ U ⊙ V) G: 36 products of out channels x blocks times blocks x in channels, 4x
    /// fewer multiplies than the im2col product (which was 65% of a VGG16 block5 step's).
    pub fn weight_gradient(&self, input: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        // Chunks of up to 4096 blocks (VGG16's block5 at batch 8 is one chunk, so the sums
        // are written once).
        let per_chunk =
            ((1 << 22) / (36 * self.in_channels.max(self.out_channels).max(1))).clamp(16, 4096);
        self.weight_gradient_in_chunks(input, output_gradient, per_chunk)
    }

    /// [`Conv3x3::weight_gradient`] summed over chunks of `per_chunk` blocks.
    fn weight_gradient_in_chunks(
        &self,
        input: &[f32],
        output_gradient: &[f32],
        per_chunk: usize,
    ) -> Vec<f32> {
        let (c, k) = (self.in_channels, self.out_channels);
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        assert_eq!(input.len(), self.batch * c * h * w, "input size");
        assert_eq!(
            output_gradient.len(),
            self.batch * k * oh * ow,
            "output gradient size"
        );
        let grid = [oh.div_ceil(4), ow.div_ceil(4)];
        let blocks = self.batch * grid[0] * grid[1];
        let mut gradient = vec![0f32; k * c * 9];
        if blocks == 0 || k == 0 || c == 0 {
            return gradient;
        }
        // Σ U ⊙ V, `[36][out][in]`, summed chunk by chunk.
        let mut sums = vec![0f32; 36 * k * c];
        for first in (0..blocks).step_by(per_chunk) {
            let count = per_chunk.min(blocks - first);
            let (v, u) = rayon::join(
                || self.transform_inputs(input, first, count, grid),
                || self.transform_gradients(output_gradient, first, count, grid),
            );
            sums.par_chunks_mut(k * c)
                .zip(u.par_chunks(k * count))
                .zip(v.par_chunks(c * count))
                .for_each(|((sums, u), v)| {
                    // One product per position and thread: the 36 positions run in parallel.
                    let one_thread = gemm::Parallelism::None;
                    super::add_gradient_product(sums, u, v, k, first > 0, one_thread)
                });
        }
        gradient
            .par_chunks_mut(c * 9)
            .enumerate()
            .for_each(|(ko, filters)| {
                let (mut scratch, mut done) = (vec![0f32; 18 * c], vec![0f32; 9 * c]);
                let at = |r: usize, s: usize| &sums[((r * 6 + s) * k + ko) * c..][..c];
                separable(at, &mut scratch, &mut done, kernel_gradient_transform);
                for (ci, filter) in filters.chunks_exact_mut(9).enumerate() {
                    for (tap, value) in filter.iter_mut().enumerate() {
                        *value = done[tap * c + ci];
                    }
                }
            });
        gradient
    }

    /// B^T d B of the 6x6 input block of each channel and block: `[36][channels][count]`.
    fn transform_inputs(
        &self,
        input: &[f32],
        first: usize,
        count: usize,
        grid: [usize; 2],
    ) -> Box<[f32]> {
        let [(pt, _), (pl, _)] = self.padding;
        let blocks = Blocks {
            first,
            count,
            grid,
            size: 6,
            shift: [pt, pl],
        };
        blocks.transform(input, self.in_channels, self.input, input_transform)
    }

    /// A g A^T of the 4x4 block of each output-gradient channel and block, `[36][out
    /// channels][count]`.
    fn transform_gradients(
        &self,
        output_gradient: &[f32],
        first: usize,
        count: usize,
        grid: [usize; 2],
    ) -> Box<[f32]> {
        let blocks = Blocks {
            first,
            count,
            grid,
            size: 4,
            shift: [0, 0],
        };
        let (k, map) = (self.out_channels, self.output());
        blocks.transform(output_gradient, k, map, gradient_transform)
    }

    /// A^T m A of each output channel and block, plus bias and activation, into `out`.
    ///
    /// # Safety
    /// `out` must point to the whole NCHW output, and no other thread may write the blocks
    /// `first..first + count`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn transform_outputs(
        &self,
        m: &[f32],
        first: usize,
        count: usize,
        grid: [usize; 2],
        bias: Option<&[f32]>,
        activation: Activation,
        out: &SharedOutput,
    ) {
        let k = self.out_channels;
        let [oh, ow] = self.output();
        let mut scratch = vec![0f32; 24 * count];
        let mut done = vec![0f32; 16 * count];
        for ko in 0..k {
            let b = bias.map_or(0.0, |b| b[ko]);
            let at = |r: usize, s: usize| &m[((r * 6 + s) * k + ko) * count..][..count];
            separable(at, &mut scratch, &mut done, output_transform);
            for local in 0..count {
                let (image, ty, tx) = block_position(first + local, grid);
                let plane = (image * k + ko) * oh * ow;
                for r in 0..4.min(oh - ty * 4) {
                    let y = ty * 4 + r;
                    for s in 0..4.min(ow - tx * 4) {
                        let value = activation.apply(done[(r * 4 + s) * count + local] + b);
                        *out.0.add(plane + y * ow + tx * 4 + s) = value;
                    }
                }
            }
        }
    }
}

/// The separable transform T d T^T of a 6x6 block for every lane (block) at once: `at(r, s)`
/// holds element (r, s) of every lane; element (i, j) of the N x N result goes to
/// `out[(i * N + j) * lanes..]`. `scratch` holds 6 x N lanes. Inlined, so that `transform`
/// is a known function whose arithmetic vectorizes across lanes.
#[inline(always)]
fn separable<'a, const N: usize>(
    at: impl Fn(usize, usize) -> &'a [f32],
    scratch: &mut [f32],
    out: &mut [f32],
    transform: fn([f32; 6]) -> [f32; N],
) {
    let lanes = at(0, 0).len();
    // Down each column s (into scratch[s][i]), then along each row i (into out[i][j]).
    for s in 0..6 {
        let line = std::array::from_fn(|r| at(r, s));
        transform_lanes(line, &mut scratch[s * N * lanes..][..N * lanes], transform);
    }
    for i in 0..N {
        let line = std::array::from_fn(|s| &scratch[(s * N + i) * lanes..][..lanes]);
        transform_lanes(line, &mut out[i * N * lanes..][..N * lanes], transform);
    }
}

/// Apply the M-point `transform` to every lane of `line` at once (the blocks of a chunk, the
/// kernels of an output channel):
/// output `o` of lane `l` goes to `out[o * lanes + l]`.
#[inline(always)]
fn transform_lanes<const M: usize, const N: usize>(
    line: [&[f32]; M],
    out: &mut [f32],
    transform: fn([f32; M]) -> [f32; N],
) {
    let lanes = line[0].len();
    let line = line.map(|values| &values[..lanes]);
    let mut chunks = out.chunks_exact_mut(lanes);
    let mut outs: [&mut [f32]; N] = std::array::from_fn(|_| chunks.next().expect("N outputs"));
    for l in 0..lanes {
        let result = transform(std::array::from_fn(|i| line[i][l]));
        for (o, value) in outs.iter_mut().zip(result) {
            o[l] = value;
        }
    }
}

/// G g G^T of every 3x3 kernel of an OIHW `kernel` with `k` outputs and `c` inputs, laid out
/// `[36][out][in]` for [`Conv3x3::run`].
pub fn transform_kernels(kernel: &[f32], k: usize, c: usize) -> Vec<f32> {
    // Uninitialized: the tasks below write every element once.
    let mut u: Vec<f32> = Vec::with_capacity(36 * k * c);
    let shared = SharedOutput(u.as_mut_ptr());
    // Output channels in parallel (training transforms the kernels at every step); each one
    // writes its own row of c values at each of the 36 positions.
    (0..k)
        .into_par_iter()
        .for_each_init(Vec::new, |buffer, ko| {
            let shared = &shared;
            // All c kernels of this output channel at once, as lanes: the taps [9][c], G g along
            // each kernel row [3][6][c], then down each column, [6 (column)][6 (row)][c].
            buffer.resize((9 + 18 + 36) * c, 0f32);
            let (taps, rest) = buffer.split_at_mut(9 * c);
            let (rows, done) = rest.split_at_mut(18 * c);
            for (ci, g) in kernel[ko * c * 9..(ko + 1) * c * 9].chunks(9).enumerate() {
                for (tap, &v) in g.iter().enumerate() {
                    taps[tap * c + ci] = v;
                }
            }
            super::with_avx2(
                #[inline(always)]
                || {
                    for r in 0..3 {
                        let line = std::array::from_fn(|s| &taps[(r * 3 + s) * c..][..c]);
                        transform_lanes(line, &mut rows[r * 6 * c..][..6 * c], kernel_transform);
                    }
                    for j in 0..6 {
                        let line = std::array::from_fn(|r| &rows[(r * 6 + j) * c..][..c]);
                        transform_lanes(line, &mut done[j * 6 * c..][..6 * c], kernel_transform);
                    }
                },
            );
            for i in 0..6 {
                for j in 0..6 {
                    let row = &done[(j * 6 + i) * c..][..c];
                    // SAFETY: the row is inside `u` (position i * 6 + j < 36, ko < k), and only
                    // this output channel's task writes rows with this `ko`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            row.as_ptr(),
                            shared.0.add(((i * 6 + j) * k + ko) * c),
                            c,
                        )
                    };
                }
            }
        });
    // SAFETY: the k tasks wrote their c values at each of the 36 positions: all 36 x k x c.
    unsafe { u.set_len(36 * k * c) };
    u
}

/// An output buffer shared by parallel tasks that write disjoint elements (the blocks of
/// `Conv3x3::run`, the output channels of `transform_kernels`, the pixel ranges of
/// `Conv3x3::run_on_tiles`).
pub(super) struct SharedOutput(pub(super) *mut f32);
// SAFETY: the tasks write disjoint elements (see the three users).
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The element `offset` places into the buffer.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    pub(super) unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// Blocks `first..first + count` of the 4x4 output grid `grid`, each read as a `size` x `size`
/// window of a map from row ty * 4 - shift[0], column tx * 4 - shift[1] (zero outside it).
struct Blocks {
    first: usize,
    count: usize,
    grid: [usize; 2],
    size: usize,
    shift: [usize; 2],
}

impl Blocks {
    /// T d T^T of each block's window (zero-padded to 6x6) of each of the `channels` planes
    /// of `maps` (NCHW, planes `map` = [h, w]), `[36][channels][count]`. Inlined, so that
    /// `transform` is a known function whose arithmetic vectorizes across blocks.
    #[inline(always)]
    fn transform(
        &self,
        maps: &[f32],
        channels: usize,
        [h, w]: [usize; 2],
        transform: fn([f32; 6]) -> [f32; 6],
    ) -> Box<[f32]> {
        let count = self.count;
        let mut v = Box::<[f32]>::new_uninit_slice(36 * channels * count);
        let mut patches = vec![0f32; 36 * count];
        let mut scratch = vec![0f32; 36 * count];
        let mut done = vec![0f32; 36 * count];
        for ci in 0..channels {
            // patches[(r * 6 + s) * count + local]: the block's window, zero outside the map.
            patches.fill(0.0);
            for local in 0..count {
                let (image, ty, tx) = block_position(self.first + local, self.grid);
                let plane = &maps[(image * channels + ci) * h * w..][..h * w];
                let (y0, x0) = (
                    (ty * 4) as isize - self.shift[0] as isize,
                    (tx * 4) as isize - self.shift[1] as isize,
                );
                for r in 0..self.size {
                    let y = y0 + r as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    let line = &plane[y as usize * w..][..w];
                    for s in 0..self.size {
                        let x = x0 + s as isize;
                        if x >= 0 && x < w as isize {
                            patches[(r * 6 + s) * count + local] = line[x as usize];
                        }
                    }
                }
            }
            let at = |r: usize, s: usize| &patches[(r * 6 + s) * count..][..count];
            separable(at, &mut scratch, &mut done, transform);
            for (xi, values) in done.chunks_exact(count).enumerate() {
                let to = &mut v[(xi * channels + ci) * count..][..count];
                for (to, &value) in to.iter_mut().zip(values) {
                    to.write(value);
                }
            }
        }
        // SAFETY: the loops above wrote all 36 x channels x count elements.
        unsafe { v.assume_init() }
    }
}

/// Image, block row and block column of a flat block index.
fn block_position(block: usize, [tiles_h, tiles_w]: [usize; 2]) -> (usize, usize, usize) {
    let per_image = tiles_h * tiles_w;
    let within = block % per_image;
    (block / per_image, within / tiles_w, within % tiles_w)
}

/// B^T d for one line of six inputs.
fn input_transform(d: [f32; 6]) -> [f32; 6] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * d[1] - 4.0 * d[2] + d[3] + d[4],
        4.0 * d[1] - 4.0 * d[2] - d[3] + d[4],
        -2.0 * d[1] - d[2] + 2.0 * d[3] + d[4],
        2.0 * d[1] - d[2] - 2.0 * d[3] + d[4],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// G g for one line of three kernel taps.
fn kernel_transform(g: [f32; 3]) -> [f32; 6] {
    const SIXTH: f32 = 1.0 / 6.0;
    const TWELFTH: f32 = 1.0 / 12.0;
    const TWENTY_FOURTH: f32 = 1.0 / 24.0;
    [
        g[0] * 0.25,
        -(g[0] + g[1] + g[2]) * SIXTH,
        -(g[0] - g[1] + g[2]) * SIXTH,
        g[0] * TWENTY_FOURTH + g[1] * TWELFTH + g[2] * SIXTH,
        g[0] * TWENTY_FOURTH - g[1] * TWELFTH + g[2] * SIXTH,
        g[2],
    ]
}

/// A g for one line of four output gradients (the first four of `g`; the rest are the zero
/// padding of the 4x4 block): the transpose of [`output_transform`].
fn gradient_transform(g: [f32; 6]) -> [f32; 6] {
    [
        g[0],
        g[0] + g[1] + g[2] + g[3],
        g[0] - g[1] + g[2] - g[3],
        g[0] + 2.0 * g[1] + 4.0 * g[2] + 8.0 * g[3],
        g[0] - 2.0 * g[1] + 4.0 * g[2] - 8.0 * g[3],
        g[3],
    ]
}

/// G^T m for one line of six Winograd-domain kernel gradients: the transpose of
/// [`kernel_transform`].
fn kernel_gradient_transform(m: [f32; 6]) -> [f32; 3] {
    const SIXTH: f32 = 1.0 / 6.0;
    const TWELFTH: f32 = 1.0 / 12.0;
    const TWENTY_FOURTH: f32 = 1.0 / 24.0;
    [
        m[0] * 0.25 - (m[1] + m[2]) * SIXTH + (m[3] + m[4]) * TWENTY_FOURTH,
        (m[2] - m[1]) * SIXTH + (m[3] - m[4]) * TWELFTH,
        (m[3] + m[4] - m[1] - m[2]) * SIXTH + m[5],
    ]
}

/// A^T m for one line of six Winograd-domain values.
fn output_transform(m: [f32; 6]) -> [f32; 4] {
    [
        m[0] + m[1] + m[2] + m[3] + m[4],
        m[1] - m[2] + 2.0 * (m[3] - m[4]),
        m[1] + m[2] + 4.0 * (m[3] + m[4]),
        m[1] - m[2] + 8.0 * (m[3] - m[4]) + m[5],
    ]
}

/// `m[k][count] = u[k][c] * v[c][count]` for one of the 36 Winograd positions.
fn multiply(u: &[f32], v: &[f32], m: &mut [MaybeUninit<f32>], k: usize, c: usize, count: usize) {
    // SAFETY: the three slices hold exactly k*c, c*count and k*count row-major elements; `m`
    // is written, never read (read_dst false).
    unsafe {
        gemm::gemm(
            k,
            count,
            c,
            m.as_mut_ptr().cast::<f32>(),
            1,
            count as isize,
            false,
            u.as_ptr(),
            1,
            c as isize,
            v.as_ptr(),
            1,
            count as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{host, max_difference, pattern};
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution, Tensor};

    /// Winograd against Burn's conv2d (bias, ReLU) on random data; returns the largest
    /// difference relative to the largest output.
    fn relative_error(conv: Conv3x3) -> f32 {
        let device = Device::flex();
        let [h, w] = conv.input;
        let (c, k) = (conv.in_channels, conv.out_channels);
        let dist = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([conv.batch, c, h, w], dist, &device);
        let kernel = Tensor::<4>::random([k, c, 3, 3], dist, &device);
        let bias = Tensor::<1>::random([k], dist, &device);
        let options = ConvOptions::new_with_padding([1, 1], conv.padding, [1, 1], 1);
        let expected = host(burn::tensor::activation::relu(conv2d(
            x.clone(),
            kernel.clone(),
            Some(bias.clone()),
            options,
        )));
        let got = conv.run(
            &host(x),
            &transform_kernels(&host(kernel), k, c),
            Some(&host(bias)),
            Activation::Relu,
            Precision::F32,
        );
        assert_eq!(got.len(), expected.len(), "{conv:?}: output size");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_difference(&got, &expected);
        assert!(scale > 1.0, "{conv:?}: degenerate output");
        diff / scale
    }

    #[test]
    fn matches_burn_conv2d_on_odd_sizes_paddings_and_chunk_edges() {
        let cases = [
            // VGG-like: same padding, sizes a multiple of 4 and not.
            (2, 16, 24, [14, 14], [(1, 1), (1, 1)]),
            (1, 8, 5, [13, 7], [(1, 1), (1, 1)]),
            // Valid padding, output smaller than one block along a side.
            (3, 9, 4, [5, 10], [(0, 0), (0, 0)]),
            // Asymmetric (TF-SAME style) and wide padding.
            (1, 12, 6, [9, 11], [(0, 1), (2, 0)]),
            // Many blocks: several parallel chunks, the last one partial.
            (2, 64, 32, [66, 50], [(1, 1), (1, 1)]),
        ];
        for (batch, in_channels, out_channels, input, padding) in cases {
            let conv = Conv3x3 {
                batch,
                in_channels,
                out_channels,
                input,
                padding,
            };
            let error = relative_error(conv);
            assert!(error < 1e-5, "{conv:?}: relative error {error:e}");
        }
    }

    #[test]
    fn kernel_gradient_sums_the_same_over_any_chunks() {
        let conv = Conv3x3 {
            batch: 3,
            in_channels: 5,
            out_channels: 7,
            input: [10, 9],
            padding: [(1, 1), (0, 2)],
        };
        let [oh, ow] = conv.output();
        let x: Vec<f32> = (0..3 * 5 * 90).map(|i| pattern(i, 2.0)).collect();
        let grad: Vec<f32> = (0..3 * 7 * oh * ow).map(|i| pattern(i + 3, 1.0)).collect();
        // 3 images of 3x3 blocks: one chunk of 27, chunks of 5 (the last of 2), of 1.
        let whole = conv.weight_gradient_in_chunks(&x, &grad, 64);
        for per_chunk in [5, 1] {
            let chunked = conv.weight_gradient_in_chunks(&x, &grad, per_chunk);
            let worst = max_difference(&whole, &chunked);
            assert!(
                worst < 1e-4,
                "chunks of {per_chunk}: max difference {worst}"
            );
        }
        assert_eq!(conv.weight_gradient(&x, &grad), whole);
        assert!(whole.iter().any(|&v| v.abs() > 1.0));
    }

    #[test]
    fn output_size_follows_padding() {
        let conv = Conv3x3 {
            batch: 1,
            in_channels: 1,
            out_channels: 1,
            input: [7, 9],
            padding: [(0, 0), (1, 2)],
        };
        assert_eq!(conv.output(), [5, 10]);
    }
}
