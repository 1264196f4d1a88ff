//! Depthwise convolution (one filter per channel, any kernel size and stride) with its bias and
//! activation, at inference on the CPU.
//!
//! Each channel plane is convolved on its own (planes in parallel): the plane is copied once,
//! zero-padded, into a per-thread scratch buffer with its columns split by stride phase, so
//! every kernel tap reads contiguous columns whatever the stride and padding (TF "SAME" pads
//! asymmetrically); eight output columns accumulate all taps in registers, and the bias and
//! activation are applied while the plane is in cache. On AVX-512, column stride 1 reads the
//! plane in place instead, the padding left out by masked loads. Burn's depthwise path pads
//! into a new tensor for asymmetric padding and runs the activation as a separate pass.
//!
//! Planes narrower than [`LANES`] (the 7x7 maps at the end of EfficientNet, where most columns
//! of a plane-wide register would be wasted) go across channels instead: eight channels' planes
//! are interleaved into one padded buffer, pixel by pixel, so one register holds one pixel of
//! eight channels and every lane does useful work, whatever the plane's width.

use super::{MapOutput, MapValues};
use burn::tensor::bf16;
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub use super::{Activation, ConvKernel, Precision};

/// Output columns computed together by [`Depthwise::plane`], the loop for kernel widths
/// without row loops: two AVX registers, so two independent chains of sums.
const LANES: usize = 16;

/// Output columns computed together by the row loops on wide planes ([`convolve_plane`]):
/// four AVX registers of sums, four independent chains through every tap.
const PLANE_BLOCK: usize = 32;

/// Values after a padded plane's last row, read (not stored) by the last column block.
const PLANE_SLACK: usize = PLANE_BLOCK + 8;

/// Output columns summed together in [`Depthwise::weight_gradient`]: one AVX register.
const WEIGHT_LANES: usize = 8;

/// Channels computed together on narrow planes: one AVX register.
const CHANNEL_LANES: usize = 8;

/// Output pixels of a row computed together on narrow planes (eight registers of sums).
const ROW_BLOCK: usize = 8;

/// One pixel of [`CHANNEL_LANES`] channels.
type Pixel = [f32; CHANNEL_LANES];

/// A thread's buffers, reused from plane to plane (a 7x7 plane costs less than allocating them).
#[derive(Default)]
struct Scratch {
    /// The zero-padded plane, columns split by stride phase.
    plane: Vec<f32>,
    /// Each tap's row, offset into the padded row, and weight.
    taps: Vec<(usize, usize, f32)>,
}

/// The shape of a depthwise convolution with one filter per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depthwise {
    /// Batch size.
    pub batch: usize,
    /// Channels (in and out).
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding (before, after) for height and width.
    pub padding: [(usize, usize); 2],
}

impl ConvKernel for Depthwise {
    fn output_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.output();
        [self.batch, self.channels, oh, ow]
    }

    /// Always f32: a depthwise convolution sums a few taps per output value, with no sum
    /// over channels for bf16 products to speed up, and rounding its input would be one more
    /// pass over the plane (3-4% of a MobileNetV2 forward at bf16).
    fn products_precision(&self, _requested: Precision) -> Precision {
        Precision::F32
    }

    /// `input` NCHW, `kernel` C x kh x kw (the (C, 1, kh, kw) kernel), `bias` one per channel;
    /// the result is NCHW with `activation` applied. The products are f32 at any `precision`
    /// ([`ConvKernel::products_precision`]).
    fn run_with(
        &self,
        input: &[f32],
        kernel: &[f32],
        _tiles: Option<&super::amx::PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        _precision: Precision,
    ) -> Vec<f32> {
        self.convolve(MapValues::F32(input), kernel, bias, activation)
    }

    /// At bf16, plane by plane on AVX-512: at column stride 1 read in place, each load
    /// widened; at stride 2 each row widened as it is split into its two column phases, a
    /// copy the f32 input takes as well.
    fn reads_bf16(&self, precision: Precision) -> bool {
        let in_place = row_kernel(self.kernel[1], self.stride[1]).and_then(|k| k.direct_bf16);
        precision == Precision::Bf16
            && (self.stride[1] == 2 || in_place.is_some())
            && !self.across_channels()
            && super::amx::available()
    }

    fn run_maps(
        &self,
        input: MapValues<'_>,
        kernel: &[f32],
        _tiles: Option<&super::amx::PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        _precision: Precision,
        bf16_output: bool,
    ) -> MapOutput {
        assert!(!bf16_output, "depthwise convolutions write f32 maps");
        if let MapValues::Bf16(_) = input {
            assert!(self.reads_bf16(Precision::Bf16), "bf16 input on this path");
        }
        MapOutput::F32(self.convolve(input, kernel, bias, activation))
    }
}

impl Depthwise {
    /// `input` NCHW (f32, or bf16 where [`ConvKernel::reads_bf16`]) convolved with `kernel`
    /// (C x kh x kw), plus `bias`, through `activation`: across channels on narrow planes, else
    /// plane by plane.
    fn convolve(
        &self,
        input: MapValues<'_>,
        kernel: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
    ) -> Vec<f32> {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let input_len = match input {
            MapValues::F32(x) => x.len(),
            MapValues::Bf16(x) => x.len(),
        };
        assert_eq!(input_len, self.batch * self.channels * h * w, "input size");
        let taps = self.kernel[0] * self.kernel[1];
        assert_eq!(kernel.len(), self.channels * taps, "kernel size");
        let len = self.batch * self.channels * oh * ow;
        // Not zeroed first (that pass cost 3% of a Lite0 forward): every path writes every
        // output value once.
        let mut output: Vec<f32> = Vec::with_capacity(len);
        let out = &mut output.spare_capacity_mut()[..len];
        match (len, self.across_channels(), input) {
            (0, _, _) => {}
            (_, true, MapValues::F32(x)) => {
                self.run_across_channels(x, kernel, bias, activation, out)
            }
            (_, true, MapValues::Bf16(_)) => unreachable!("bf16 maps are read plane by plane"),
            (_, false, input) => self.run_planes(input, kernel, bias, activation, out),
        }
        // SAFETY: the paths above wrote all `len` values (each plane, row and column block).
        unsafe { output.set_len(len) };
        output
    }

    /// The convolution plane by plane (channels of wide maps), each task one plane of `input`
    /// into its plane of `out` (bf16 planes widened as they are loaded or split).
    fn run_planes(
        &self,
        input: MapValues<'_>,
        kernel: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        out: &mut [MaybeUninit<f32>],
    ) {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let taps = self.kernel[0] * self.kernel[1];
        let kernels = row_kernel(self.kernel[1], self.stride[1]);
        let (rows, direct) = (kernels.map(|k| k.plane), kernels.and_then(|k| k.direct));
        let direct_bf16 = kernels.and_then(|k| k.direct_bf16);
        out.par_chunks_mut(oh * ow).enumerate().for_each_init(
            Scratch::default,
            |scratch, (plane, out)| {
                let plane_values = |len: usize| plane * len..(plane + 1) * len;
                let x = match input {
                    MapValues::F32(x) => MapValues::F32(&x[plane_values(h * w)]),
                    MapValues::Bf16(x) => MapValues::Bf16(&x[plane_values(h * w)]),
                };
                let channel = plane % self.channels;
                let filter = &kernel[channel * taps..(channel + 1) * taps];
                let b = bias.map_or(0.0, |b| b[channel]);
                match (x, direct, direct_bf16) {
                    (MapValues::F32(x), Some(convolve), _) => {
                        return convolve(self, x, filter, b, activation, out)
                    }
                    (MapValues::Bf16(x), _, Some(convolve)) => {
                        return convolve(self, x, filter, b, activation, out)
                    }
                    _ => {}
                }
                super::with_avx2(
                    #[inline(always)]
                    || self.pad_plane(x, &mut scratch.plane),
                );
                match rows {
                    Some(convolve) => convolve(self, &scratch.plane, filter, b, activation, out),
                    None => super::with_avx2(
                        #[inline(always)]
                        || self.plane(filter, b, activation, out, scratch),
                    ),
                }
            },
        );
    }

    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        super::output_size(self.input, self.padding, self.kernel, self.stride)
    }

    /// Whether [`Depthwise::input_gradient`] and [`Depthwise::weight_gradient`] apply: stride 1,
    /// padding no wider than the kernel's reach (so the input gradient is a convolution again).
    pub fn has_gradients(&self) -> bool {
        let [(pt, pb), (pl, pr)] = self.padding;
        let [kh, kw] = self.kernel;
        self.stride == [1, 1] && pt.max(pb) < kh && pl.max(pr) < kw
    }

    /// The gradient of the input from `output_gradient` (NCHW, the output's shape): the
    /// depthwise convolution of it with each filter turned by 180 degrees, padded by the kernel
    /// reach minus the forward padding. Stride 1 only ([`Depthwise::has_gradients`]).
    pub fn input_gradient(&self, kernel: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        let [kh, kw] = self.kernel;
        let [(pt, pb), (pl, pr)] = self.padding;
        let turned: Vec<f32> = kernel
            .chunks(kh * kw)
            .flat_map(|filter| filter.iter().rev().copied())
            .collect();
        let transposed = Depthwise {
            input: self.output(),
            padding: [(kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)],
            ..*self
        };
        transposed.run(
            output_gradient,
            &turned,
            None,
            Activation::Linear,
            Precision::F32,
        )
    }

    /// The gradient of the kernel (C x kh x kw) from the forward `input` and `output_gradient`:
    /// for each channel and tap, the sum over images and output pixels of the gradient times
    /// the input pixel that tap read. Stride 1 only ([`Depthwise::has_gradients`]).
    pub fn weight_gradient(&self, input: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        if self.across_channels() {
            return self.weight_gradient_across_channels(input, output_gradient);
        }
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let [kh, kw] = self.kernel;
        let [(pt, _), (pl, _)] = self.padding;
        // Rows of the gradient padded with zeros to whole groups of WEIGHT_LANES columns, rows
        // of the input padded (and with slack) so every group reads WEIGHT_LANES columns: one
        // WEIGHT_LANES-wide sum per tap, reduced at the end, so the loop vectorizes.
        let groups = ow.div_ceil(WEIGHT_LANES);
        let grad_w = groups * WEIGHT_LANES;
        let padded_w = grad_w + kw - 1;
        let padded_h = oh + kh - 1;
        let channels = self.channels;
        let mut gradient = vec![0f32; channels * kh * kw];
        gradient.par_chunks_mut(kh * kw).enumerate().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(padded, grad, sums), (channel, taps)| {
                super::with_avx2(
                    #[inline(always)]
                    || {
                        sums.clear();
                        sums.resize(kh * kw, [0f32; WEIGHT_LANES]);
                        for image in 0..self.batch {
                            let plane = (image * channels + channel) * h * w;
                            padded.clear();
                            padded.resize(padded_h * padded_w, 0f32);
                            for (y, row) in input[plane..plane + h * w].chunks(w).enumerate() {
                                // Input row y sits at padded row y + pt, column x + pl; what
                                // lies beyond the rows and columns any tap reads is left out.
                                if y + pt >= padded_h {
                                    break;
                                }
                                let columns = w.min(padded_w - pl);
                                let start = (y + pt) * padded_w + pl;
                                padded[start..start + columns].copy_from_slice(&row[..columns]);
                            }
                            let plane = (image * channels + channel) * oh * ow;
                            grad.clear();
                            grad.resize(oh * grad_w, 0f32);
                            for (y, row) in output_gradient[plane..plane + oh * ow]
                                .chunks(ow)
                                .enumerate()
                            {
                                grad[y * grad_w..y * grad_w + ow].copy_from_slice(row);
                            }
                            for (tap, sum) in sums.iter_mut().enumerate() {
                                let (dy, dx) = (tap / kw, tap % kw);
                                let x = &padded[dy * padded_w + dx..];
                                *sum = tap_sums(*sum, grad, grad_w, x, padded_w);
                            }
                        }
                        for (tap, sum) in taps.iter_mut().zip(sums.iter()) {
                            *tap = sum.iter().sum();
                        }
                    },
                )
            },
        );
        gradient
    }

    /// Whether to compute across channels (see the module doc): planes narrower than [`LANES`],
    /// with a kernel width and stride the row loops are written for.
    fn across_channels(&self) -> bool {
        self.output()[1] < LANES && row_kernel(self.kernel[1], self.stride[1]).is_some()
    }

    /// One image's channel group (`x`, up to [`CHANNEL_LANES`] planes) into `padded`:
    /// pixel-major, each pixel holding the group's channels, zero-padded as the convolution
    /// reads it, with slack after the last row for the row blocks' extra columns. The borders
    /// stay zero from call to call; lanes past the group's channels keep whatever they held and
    /// are never stored.
    #[inline(always)]
    fn interleave(&self, x: &[f32], padded: &mut Vec<Pixel>) {
        let [h, w] = self.input;
        let [(pt, pb), (pl, pr)] = self.padding;
        let padded_w = w + pl + pr;
        let len = (h + pt + pb) * padded_w + ROW_BLOCK * self.stride[1] + self.kernel[1];
        if padded.len() != len {
            padded.clear();
            padded.resize(len, [0.0; CHANNEL_LANES]);
        }
        for (lane, plane) in x.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                let start = (y + pt) * padded_w + pl;
                for (pixel, &v) in padded[start..start + w].iter_mut().zip(row) {
                    pixel[lane] = v;
                }
            }
        }
    }

    /// [`ConvKernel::run`] across channels: each task convolves eight channels of one image.
    fn run_across_channels(
        &self,
        input: &[f32],
        kernel: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        output: &mut [MaybeUninit<f32>],
    ) {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let taps = self.kernel[0] * self.kernel[1];
        let convolve = row_kernel(self.kernel[1], self.stride[1])
            .expect("a row kernel")
            .across;
        let channels = self.channels;
        output
            .par_chunks_mut(channels * oh * ow)
            .zip(input.par_chunks(channels * h * w))
            .for_each(|(output, input)| {
                output
                    .par_chunks_mut(CHANNEL_LANES * oh * ow)
                    .zip(input.par_chunks(CHANNEL_LANES * h * w))
                    .enumerate()
                    .for_each_init(
                        || (Vec::new(), Vec::new()),
                        |(padded, weights), (group, (out, x))| {
                            let first = group * CHANNEL_LANES;
                            let lanes = out.len() / (oh * ow);
                            let mut shift = [0f32; CHANNEL_LANES];
                            weights.clear();
                            weights.resize(taps, [0f32; CHANNEL_LANES]);
                            for lane in 0..lanes {
                                let filter = &kernel[(first + lane) * taps..][..taps];
                                for (tap, &k) in weights.iter_mut().zip(filter) {
                                    tap[lane] = k;
                                }
                                shift[lane] = bias.map_or(0.0, |b| b[first + lane]);
                            }
                            self.interleave(x, padded);
                            let group = ChannelGroup {
                                padded,
                                weights,
                                shift,
                                lanes,
                            };
                            convolve(self, &group, activation, out);
                        },
                    );
            });
    }

    /// [`Depthwise::weight_gradient`] across channels: each task sums the products of eight
    /// channels over every image.
    fn weight_gradient_across_channels(&self, input: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let taps = self.kernel[0] * self.kernel[1];
        let accumulate = row_kernel(self.kernel[1], 1)
            .expect("a row kernel")
            .gradient;
        let channels = self.channels;
        let mut gradient = vec![0f32; channels * taps];
        gradient
            .par_chunks_mut(CHANNEL_LANES * taps)
            .enumerate()
            .for_each_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(padded, grad, sums), (group, out)| {
                    let first = group * CHANNEL_LANES;
                    let lanes = out.len() / taps;
                    sums.clear();
                    sums.resize(taps, [0f32; CHANNEL_LANES]);
                    grad.clear();
                    grad.resize(oh * ow, [0f32; CHANNEL_LANES]);
                    for image in 0..self.batch {
                        let planes = image * channels + first;
                        self.interleave(&input[planes * h * w..][..lanes * h * w], padded);
                        let dy = &output_gradient[planes * oh * ow..][..lanes * oh * ow];
                        for (lane, plane) in dy.chunks_exact(oh * ow).enumerate() {
                            for (pixel, &v) in grad.iter_mut().zip(plane) {
                                pixel[lane] = v;
                            }
                        }
                        accumulate(self, padded, grad, sums);
                    }
                    for lane in 0..lanes {
                        for (tap, sum) in sums.iter().enumerate() {
                            out[lane * taps + tap] = sum[lane];
                        }
                    }
                },
            );
        gradient
    }

    /// Width of one padded row in [`Depthwise::pad_plane`]'s layout: the padded columns split
    /// by stride phase, each phase `padded_w / sw` (rounded up) long.
    fn padded_row(&self) -> (usize, usize) {
        let padded_w = self.input[1] + self.padding[1].0 + self.padding[1].1;
        let phase_w = padded_w.div_ceil(self.stride[1]);
        (phase_w, phase_w * self.stride[1])
    }

    /// One channel plane `x` (h x w), zero-padded, into `padded` with its columns split by
    /// stride phase (column `c` at phase `c % sw`, index `c / sw`), so every tap reads
    /// contiguous columns for any stride; with [`PLANE_SLACK`] values after the last row for
    /// the column blocks' extra lanes. The padding stays zero from plane to plane (the same
    /// places are written each time), so the buffer is only cleared when its size changes.
    #[inline(always)]
    fn pad_plane(&self, x: MapValues<'_>, padded: &mut Vec<f32>) {
        let [h, w] = self.input;
        let sw = self.stride[1];
        let [(pt, pb), (pl, _)] = self.padding;
        let (phase_w, row_len) = self.padded_row();
        let len = (h + pt + pb) * row_len + PLANE_SLACK;
        if padded.len() != len {
            padded.clear();
            padded.resize(len, 0.0);
        }
        let x = match x {
            MapValues::F32(x) => x,
            MapValues::Bf16(x) => {
                // Widened as the rows are split (column stride 2 on AVX-512 only: `reads_bf16`).
                for (y, row) in x.chunks_exact(w).enumerate() {
                    let padded = &mut padded[(y + pt) * row_len..(y + pt + 1) * row_len];
                    let split = split_pairs(row, padded.split_at_mut(phase_w), pl);
                    assert!(split, "bf16 planes are split on AVX-512");
                }
                return;
            }
        };
        for (y, row) in x.chunks_exact(w).enumerate() {
            let padded = &mut padded[(y + pt) * row_len..(y + pt + 1) * row_len];
            if sw == 1 {
                padded[pl..pl + w].copy_from_slice(row);
                continue;
            }
            if sw == 2 && split_pairs(row, padded.split_at_mut(phase_w), pl) {
                continue;
            }
            for (phase, columns) in padded.chunks_mut(phase_w).enumerate() {
                // Padded column j * sw + phase is input column j * sw + phase - pl.
                let skip = pl.saturating_sub(phase).div_ceil(sw);
                let first_input = skip * sw + phase - pl;
                let (slots, source) = (&mut columns[skip..], &row[first_input.min(w)..]);
                if sw == 2 {
                    // Whole pairs as one loop that vectorizes (a strided iterator does not),
                    // then the odd one out.
                    let pairs = source.chunks_exact(2);
                    let (whole, last) = (pairs.len(), pairs.remainder().first().copied());
                    for (slot, pair) in slots.iter_mut().zip(pairs) {
                        *slot = pair[0];
                    }
                    if let (Some(v), Some(slot)) = (last, slots.get_mut(whole)) {
                        *slot = v;
                    }
                } else {
                    for (slot, &v) in slots.iter_mut().zip(source.iter().step_by(sw)) {
                        *slot = v;
                    }
                }
            }
        }
    }

    /// One channel for any kernel width: `out` (oh x ow) = the plane [`Depthwise::pad_plane`]
    /// left in `scratch` convolved with `filter` (kh x kw), tap by tap over [`LANES`] columns.
    #[inline(always)]
    fn plane(
        &self,
        filter: &[f32],
        bias: f32,
        activation: Activation,
        out: &mut [MaybeUninit<f32>],
        scratch: &mut Scratch,
    ) {
        let Scratch {
            plane: scratch,
            taps,
        } = scratch;
        let [_, ow] = self.output();
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let (phase_w, row_len) = self.padded_row();
        // Where tap (dy, dx) reads for output column ox: row oy*sh + dy, phase dx % sw, index
        // ox + dx / sw.
        taps.clear();
        taps.extend(
            (0..kh)
                .flat_map(|dy| (0..kw).map(move |dx| (dy, dx)))
                .map(|(dy, dx)| (dy, (dx % sw) * phase_w + dx / sw, filter[dy * kw + dx])),
        );
        for (oy, out_row) in out.chunks_mut(ow).enumerate() {
            let rows = &scratch[oy * sh * row_len..];
            // Whole groups of LANES columns; the last group's extra lanes read the slack at the
            // end of `scratch` or the next row and are not stored.
            for first in (0..ow).step_by(LANES) {
                let mut acc = [0f32; LANES];
                for &(dy, offset, weight) in taps.iter() {
                    let start = dy * row_len + offset + first;
                    let src: &[f32; LANES] = rows[start..start + LANES].try_into().expect("lanes");
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += weight * v;
                    }
                }
                let stored = LANES.min(ow - first);
                activation.write_with_bias(&mut out_row[first..first + stored], &acc, bias);
            }
        }
    }
}

/// One image's channel group, ready for a row kernel.
struct ChannelGroup<'a> {
    /// The group's planes, interleaved ([`Depthwise::interleave`]).
    padded: &'a [Pixel],
    /// Each tap's weights, one lane per channel.
    weights: &'a [Pixel],
    /// Each channel's bias.
    shift: Pixel,
    /// Channels in the group (the last group of a layer may have fewer than eight).
    lanes: usize,
}

/// Convolves one [`ChannelGroup`] into its output planes, with the activation.
type Convolve = fn(&Depthwise, &ChannelGroup, Activation, &mut [MaybeUninit<f32>]);

/// Adds one image's kernel gradient products (interleaved input, interleaved output gradient)
/// to the group's sums, one per tap.
type Accumulate = fn(&Depthwise, &[Pixel], &[Pixel], &mut [Pixel]);

/// Convolves one padded plane ([`Depthwise::pad_plane`]) with its filter and bias into its
/// output plane, with the activation.
type ConvolvePlane = fn(&Depthwise, &[f32], &[f32], f32, Activation, &mut [MaybeUninit<f32>]);

/// [`ConvolvePlane`] from a bf16 plane (a map handed over in bf16), read in place.
type ConvolveBf16Plane = fn(&Depthwise, &[bf16], &[f32], f32, Activation, &mut [MaybeUninit<f32>]);

/// The loops compiled for one kernel width and stride.
#[derive(Clone, Copy)]
struct RowKernels {
    /// Forward across channels (narrow planes).
    across: Convolve,
    /// The kernel gradient across channels (stride 1).
    gradient: Accumulate,
    /// Forward plane by plane (wide planes), from the padded plane.
    plane: ConvolvePlane,
    /// Forward plane by plane straight from the input plane, where there is such a loop
    /// (column stride 1 on AVX-512): no padded copy.
    direct: Option<ConvolvePlane>,
    /// [`RowKernels::direct`] for bf16 planes, widened as they are loaded.
    direct_bf16: Option<ConvolveBf16Plane>,
}

/// The row loops for a kernel `width` and `stride`, compiled for those numbers (the tap loops
/// unrolled, no bounds checks).
fn row_kernel(width: usize, stride: usize) -> Option<RowKernels> {
    fn kernels<const KW: usize, const SW: usize>() -> RowKernels {
        RowKernels {
            across: convolve_group::<KW, SW>,
            gradient: accumulate_group::<KW>,
            plane: if super::avx512::available() {
                convolve_plane_avx512::<KW, SW>
            } else {
                convolve_plane::<KW, SW>
            },
            direct: (SW == 1 && super::avx512::available())
                .then_some(convolve_direct_avx512::<KW, f32> as ConvolvePlane),
            direct_bf16: (SW == 1 && super::avx512::available())
                .then_some(convolve_direct_avx512::<KW, bf16> as ConvolveBf16Plane),
        }
    }
    Some(match (width, stride) {
        (3, 1) => kernels::<3, 1>(),
        (3, 2) => kernels::<3, 2>(),
        (5, 1) => kernels::<5, 1>(),
        (5, 2) => kernels::<5, 2>(),
        (7, 1) => kernels::<7, 1>(),
        (7, 2) => kernels::<7, 2>(),
        _ => return None,
    })
}

/// [`convolve_plane`] on AVX-512: up to 64 output columns of two to eight output rows at a
/// time ([`Taps::sums`]), loads and stores masked at the row's end, bias and activation
/// applied in registers. Twice the lanes of the AVX2 loop, and its sums never leave the
/// registers (LLVM kept spilling the arrays of the portable loop to the stack after every
/// FMA). Chosen only where [`super::avx512::available`].
fn convolve_plane_avx512<const KW: usize, const SW: usize>(
    conv: &Depthwise,
    padded: &[f32],
    filter: &[f32],
    bias: f32,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let [oh, ow] = conv.output();
    let (kh, sh) = (conv.kernel[0], conv.stride[0]);
    let (phase_w, row_len) = conv.padded_row();
    assert!(
        filter.len() >= kh * KW && out.len() >= oh * ow,
        "filter and output sizes"
    );
    // Every column a tap reads for an output column of the plane lies inside the padded plane.
    assert!(
        oh == 0
            || padded.len()
                >= ((oh - 1) * sh + kh - 1) * row_len + (SW - 1) * phase_w + ow + (KW - 1) / SW,
        "padded plane size"
    );
    // Where tap column kx reads for output column ox: phase kx % SW, index ox + kx / SW.
    let offsets: [usize; KW] = std::array::from_fn(|kx| (kx % SW) * phase_w + kx / SW);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: chosen only where the CPU has AVX-512F; the loads and stores are masked to the
    // output columns of each row, which read inside `padded` and write inside `out` (both
    // sizes checked above).
    unsafe {
        let source = Source {
            start: padded.as_ptr(),
            row_len,
            offsets,
            left: 0,
            width: usize::MAX,
            top: 0,
            height: usize::MAX,
        };
        planes_avx512::<KW, f32>(conv, source, filter, bias, activation, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "AVX-512 is x86-64 only ({:?})",
        (padded, filter, bias, activation, out, offsets)
    );
}

/// [`convolve_plane_avx512`] for column stride 1 straight from the input plane `x` (h x w),
/// without the padded copy: the padding's taps are left out, rows by skipping them, columns
/// by the load masks (a masked-off lane is never read, whatever its address). The copy was a
/// pass over every plane's values through the cache before the taps read them again.
fn convolve_direct_avx512<const KW: usize, T: RowValue>(
    conv: &Depthwise,
    x: &[T],
    filter: &[f32],
    bias: f32,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let [oh, ow] = conv.output();
    let [h, w] = conv.input;
    assert!(
        conv.stride[1] == 1
            && x.len() >= h * w
            && filter.len() >= conv.kernel[0] * KW
            && out.len() >= oh * ow,
        "stride, plane, filter and output sizes"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: chosen only where the CPU has AVX-512F; every load is masked to the lanes whose
    // row and column lie inside the h x w plane `x`, and every store to the output columns of
    // rows inside `out` (sizes checked above).
    unsafe {
        let source = Source {
            start: x.as_ptr(),
            row_len: w,
            offsets: std::array::from_fn(|kx| kx),
            left: conv.padding[1].0,
            width: w,
            top: conv.padding[0].0,
            height: h,
        };
        planes_avx512::<KW, T>(conv, source, filter, bias, activation, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "AVX-512 is x86-64 only ({:?})",
        (x.len(), filter, bias, activation, out)
    );
}

/// Where [`planes_avx512`] reads a plane: padded (every read inside it) or not (reads outside
/// its rows skipped, outside its columns masked off).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Source<const KW: usize, T = f32> {
    /// Row 0, column 0.
    start: *const T,
    /// Values from one row to the next.
    row_len: usize,
    /// Where tap column kx reads for output column ox: `offsets[kx] + ox - left`.
    offsets: [usize; KW],
    /// Padding columns before column 0 (0 for a padded plane).
    left: usize,
    /// Columns of a row (`usize::MAX` for a padded plane: none outside).
    width: usize,
    /// Padding rows before row 0 (0 for a padded plane).
    top: usize,
    /// Rows (`usize::MAX` for a padded plane: none outside).
    height: usize,
}

/// The loops of [`convolve_plane_avx512`] and [`convolve_direct_avx512`].
///
/// # Safety
/// Needs AVX-512F; `source` must describe a plane whose rows and columns inside it are
/// readable, `filter` must hold the kernel and `out` the output plane (as the callers check).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn planes_avx512<const KW: usize, T: RowValue>(
    conv: &Depthwise,
    source: Source<KW, T>,
    filter: &[f32],
    bias: f32,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let [oh, ow] = conv.output();
    let (kh, sh) = (conv.kernel[0], conv.stride[0]);
    let out = out.as_mut_ptr().cast::<f32>();
    for first in (0..ow).step_by(16 * PLANE_VECTORS) {
        let left = ow - first;
        // Output column c of tap column kx reads column c + offsets[kx] - source.left: inside
        // the row for c in lo..hi.
        let masks = std::array::from_fn(|kx| {
            let offset = source.offsets[kx];
            let lo = source.left.saturating_sub(offset);
            let hi = ow.min(
                source
                    .width
                    .saturating_add(source.left)
                    .saturating_sub(offset),
            );
            std::array::from_fn(|v| lanes_between(first + 16 * v, lo, hi))
        });
        let taps = Taps {
            source,
            first,
            rows: kh,
            stride: sh,
            filter,
            masks,
            stored: std::array::from_fn(|v| lanes_between(first + 16 * v, 0, ow)),
        };
        let rows = OutputRows {
            out: out.add(first),
            width: ow,
            height: oh,
            bias,
            activation,
        };
        // Enough rows of registers for eight or more independent chains of sums.
        match left.div_ceil(16) {
            1 => rows.compute::<KW, T, 1, 8>(&taps),
            2 => rows.compute::<KW, T, 2, 4>(&taps),
            3 => rows.compute::<KW, T, 3, 3>(&taps),
            _ => rows.compute::<KW, T, PLANE_VECTORS, 2>(&taps),
        }
    }
}

/// Registers of output columns in one block of [`planes_avx512`].
#[cfg(target_arch = "x86_64")]
const PLANE_VECTORS: usize = 4;

/// The mask of the lanes of a 16-lane register from column `base` whose column lies in
/// `lo..hi`.
#[cfg(target_arch = "x86_64")]
fn lanes_between(base: usize, lo: usize, hi: usize) -> u16 {
    use super::avx512::lane_mask;
    let (from, to) = (lo.saturating_sub(base), hi.saturating_sub(base));
    lane_mask(to) & !lane_mask(from)
}

/// The operands of one block of output columns in [`planes_avx512`].
#[cfg(target_arch = "x86_64")]
struct Taps<'a, const KW: usize, T = f32> {
    /// The plane the taps read.
    source: Source<KW, T>,
    /// The block's first output column.
    first: usize,
    /// Kernel rows.
    rows: usize,
    /// Rows from one output row to the next.
    stride: usize,
    /// The channel's kh x KW filter.
    filter: &'a [f32],
    /// For each tap column, the lanes of each register that read inside the row.
    masks: [[u16; PLANE_VECTORS]; KW],
    /// The output columns of each register.
    stored: [u16; PLANE_VECTORS],
}

#[cfg(target_arch = "x86_64")]
impl<const KW: usize, T: RowValue> Taps<'_, KW, T> {
    /// The sums over all taps of `R` output rows from `top`, `V` registers each.
    ///
    /// Each source row is loaded once for all the output rows that read it, and the `R x V`
    /// sums are independent chains of multiply-adds: one output row of one or two registers
    /// waited on the latency of each multiply-add (the 18x18 and 36x36 planes of
    /// EfficientNet-Lite0 at 288x288).
    ///
    /// # Safety
    /// Needs AVX-512F; the masked columns of every source row the `R` output rows read lie
    /// inside the source plane.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn sums<const V: usize, const R: usize>(
        &self,
        top: usize,
    ) -> [[std::arch::x86_64::__m512; V]; R] {
        use std::arch::x86_64::*;
        let source = &self.source;
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        for i in 0..(R - 1) * self.stride + self.rows {
            // Source row y: rows outside the plane are padding, whose taps add nothing.
            let y = (top * self.stride + i).wrapping_sub(source.top);
            if y >= source.height {
                continue;
            }
            // Wrapping arithmetic: before the plane's start where the block's first lanes
            // read the left padding, which their masks keep from being read.
            let row = source
                .start
                .wrapping_add(y * source.row_len + self.first)
                .wrapping_sub(source.left);
            for (kx, &offset) in source.offsets.iter().enumerate() {
                let x: [__m512; V] = std::array::from_fn(|v| {
                    T::load_masked(row.wrapping_add(offset + 16 * v), self.masks[kx][v])
                });
                for (r, sums) in sums.iter_mut().enumerate() {
                    // Padded row `i` is kernel row `ky` of output row `r`.
                    let ky = i.wrapping_sub(r * self.stride);
                    if ky < self.rows {
                        let weight = _mm512_set1_ps(*self.filter.get_unchecked(ky * KW + kx));
                        for (sum, &x) in sums.iter_mut().zip(&x) {
                            *sum = _mm512_fmadd_ps(x, weight, *sum);
                        }
                    }
                }
            }
        }
        sums
    }
}

/// Where [`planes_avx512`] stores one block of output columns, and how.
#[cfg(target_arch = "x86_64")]
struct OutputRows {
    /// The block's first column in the first output row.
    out: *mut f32,
    /// Output columns (the row length).
    width: usize,
    /// Output rows.
    height: usize,
    bias: f32,
    activation: Activation,
}

#[cfg(target_arch = "x86_64")]
impl OutputRows {
    /// Every output row of the block, `R` at a time (the last `R` rows may overlap the rows
    /// before them, which are then computed and stored twice, with the same values).
    ///
    /// # Safety
    /// Needs AVX-512F; `taps` reads inside the padded plane for every output row, and the
    /// masked columns of every row lie inside the output.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compute<const KW: usize, T: RowValue, const V: usize, const R: usize>(
        &self,
        taps: &Taps<KW, T>,
    ) {
        if self.height < R {
            for oy in 0..self.height {
                self.store(oy, taps.sums::<V, 1>(oy), taps);
            }
            return;
        }
        let mut oy = 0;
        while oy < self.height {
            let top = oy.min(self.height - R);
            self.store(top, taps.sums::<V, R>(top), taps);
            oy = top + R;
        }
    }

    /// `sums` with the bias and activation, as the output rows from `top`.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn store<const KW: usize, T, const V: usize, const R: usize>(
        &self,
        top: usize,
        sums: [[std::arch::x86_64::__m512; V]; R],
        taps: &Taps<KW, T>,
    ) {
        use super::avx512::bias_activation;
        use std::arch::x86_64::*;
        let bias = _mm512_set1_ps(self.bias);
        for (r, sums) in sums.into_iter().enumerate() {
            let row = self.out.add((top + r) * self.width);
            for (v, sum) in sums.into_iter().enumerate() {
                let value = bias_activation(sum, bias, self.activation);
                _mm512_mask_storeu_ps(row.add(16 * v), taps.stored[v], value);
            }
        }
    }
}

/// [`ConvolvePlane`] for kernel width `KW` and column stride `SW`: [`PLANE_BLOCK`] output
/// columns at a time, their sums (from the bias) in registers through every tap, the
/// activation applied as they are stored.
fn convolve_plane<const KW: usize, const SW: usize>(
    conv: &Depthwise,
    padded: &[f32],
    filter: &[f32],
    bias: f32,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let [oh, ow] = conv.output();
    let kh = conv.kernel[0];
    let sh = conv.stride[0];
    let (phase_w, row_len) = conv.padded_row();
    // Where tap column kx reads for output column ox: phase kx % SW, index ox + kx / SW.
    let offsets: [usize; KW] = std::array::from_fn(|kx| (kx % SW) * phase_w + kx / SW);
    super::with_avx2(
        #[inline(always)]
        || {
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
                for first in (0..ow).step_by(PLANE_BLOCK) {
                    let mut sums = [[0f32; 8]; PLANE_BLOCK / 8];
                    for ky in 0..kh {
                        let row = &padded[(oy * sh + ky) * row_len + first..];
                        let weights: &[f32; KW] =
                            filter[ky * KW..][..KW].try_into().expect("a kernel row");
                        for (&offset, &weight) in offsets.iter().zip(weights) {
                            let src = &row[offset..][..PLANE_BLOCK];
                            for (sum, v) in sums.iter_mut().zip(src.chunks_exact(8)) {
                                let v: Pixel = v.try_into().expect("eight columns");
                                *sum = fma(v, [weight; 8], *sum);
                            }
                        }
                    }
                    let stored = PLANE_BLOCK.min(ow - first);
                    let out = &mut out_row[first..first + stored];
                    activation.write_with_bias(out, sums.as_flattened(), bias);
                }
            }
        },
    )
}

/// `a * b + c`, lane by lane (fused multiply-adds with AVX2 + FMA).
#[inline(always)]
fn fma(a: Pixel, b: Pixel, mut c: Pixel) -> Pixel {
    for lane in 0..CHANNEL_LANES {
        c[lane] = a[lane].mul_add(b[lane], c[lane]);
    }
    c
}

/// [`Convolve`] for kernel width `KW` and column stride `SW`: [`ROW_BLOCK`] output pixels at a
/// time, their sums in registers through every tap.
fn convolve_group<const KW: usize, const SW: usize>(
    conv: &Depthwise,
    group: &ChannelGroup,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if group.lanes == CHANNEL_LANES
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA are there; the group is full (eight lanes per pixel stored).
        unsafe { convolve_group_avx2::<KW, SW>(conv, group, activation, out) };
        return;
    }
    let [oh, ow] = conv.output();
    let kh = conv.kernel[0];
    let sh = conv.stride[0];
    let padded_w = conv.input[1] + conv.padding[1].0 + conv.padding[1].1;
    let plane = oh * ow;
    super::with_avx2(
        #[inline(always)]
        || {
            for oy in 0..oh {
                for first_x in (0..ow).step_by(ROW_BLOCK) {
                    let mut sums = [group.shift; ROW_BLOCK];
                    for ky in 0..kh {
                        let start = (oy * sh + ky) * padded_w + first_x * SW;
                        let row = &group.padded[start..start + (ROW_BLOCK - 1) * SW + KW];
                        let weights = &group.weights[ky * KW..][..KW];
                        for (kx, &k) in weights.iter().enumerate() {
                            for (j, sum) in sums.iter_mut().enumerate() {
                                *sum = fma(row[j * SW + kx], k, *sum);
                            }
                        }
                    }
                    let stored = ROW_BLOCK.min(ow - first_x);
                    let at = oy * ow + first_x;
                    if group.lanes == CHANNEL_LANES
                        && store_transposed(&sums, stored, activation, &mut out[at..], plane)
                    {
                        continue;
                    }
                    for (j, sum) in sums[..stored].iter().enumerate() {
                        for (lane, &v) in sum[..group.lanes].iter().enumerate() {
                            out[lane * plane + at + j].write(activation.apply(v));
                        }
                    }
                }
            }
        },
    )
}

/// [`convolve_group`] for a full group on AVX2 + FMA: the [`ROW_BLOCK`] sums held in eight
/// registers through every tap, and stored through [`transpose_avx2`]. The portable loop
/// kept spilling its array of sums to the stack between multiply-adds (the 7x7 maps of
/// EfficientNet-Lite0's last blocks: 8% of a bf16 forward).
///
/// # Safety
/// AVX2 and FMA must be there, `group.lanes` must be [`CHANNEL_LANES`], and `out` must hold
/// the group's eight output planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn convolve_group_avx2<const KW: usize, const SW: usize>(
    conv: &Depthwise,
    group: &ChannelGroup,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let [oh, ow] = conv.output();
    let (kh, sh) = (conv.kernel[0], conv.stride[0]);
    let padded_w = conv.input[1] + conv.padding[1].0 + conv.padding[1].1;
    let plane = oh * ow;
    assert!(
        out.len() >= CHANNEL_LANES * plane && group.weights.len() >= kh * KW,
        "output planes and weights"
    );
    // Every pixel a row block reads lies inside the padded group ([`Depthwise::interleave`]
    // leaves slack after the last row for the block's columns past the row's end).
    assert!(
        oh == 0
            || group.padded.len()
                >= ((oh - 1) * sh + kh - 1) * padded_w
                    + (ow.div_ceil(ROW_BLOCK) * ROW_BLOCK - 1) * SW
                    + KW,
        "padded group size"
    );
    let (padded, weights) = (group.padded.as_ptr(), group.weights.as_ptr());
    // SAFETY: a pixel is eight f32 values.
    let shift = unsafe { _mm256_loadu_ps(group.shift.as_ptr()) };
    for oy in 0..oh {
        for first_x in (0..ow).step_by(ROW_BLOCK) {
            let mut sums = [shift; ROW_BLOCK];
            for ky in 0..kh {
                // SAFETY: the pixels read lie inside the padded group (checked above) and the
                // taps inside the weights.
                unsafe {
                    let row = padded.add((oy * sh + ky) * padded_w + first_x * SW);
                    for kx in 0..KW {
                        let k = _mm256_loadu_ps((*weights.add(ky * KW + kx)).as_ptr());
                        for (j, sum) in sums.iter_mut().enumerate() {
                            let x = _mm256_loadu_ps((*row.add(j * SW + kx)).as_ptr());
                            *sum = _mm256_fmadd_ps(x, k, *sum);
                        }
                    }
                }
            }
            let sums = sums.map(|sum| {
                let mut pixel = [0f32; CHANNEL_LANES];
                // SAFETY: a pixel is eight f32 values.
                unsafe { _mm256_storeu_ps(pixel.as_mut_ptr(), sum) };
                pixel
            });
            let stored = ROW_BLOCK.min(ow - first_x);
            // SAFETY: the eight planes hold `stored` pixels from oy * ow + first_x on.
            unsafe {
                transpose_avx2(
                    &sums,
                    stored,
                    activation,
                    out.as_mut_ptr().add(oy * ow + first_x).cast(),
                    plane,
                )
            };
        }
    }
}

/// The sums of the first `stored` of [`ROW_BLOCK`] pixels of eight channels (`sums[j][lane]`),
/// activated and stored as consecutive pixels of each channel's plane: `out[lane * plane + j]`.
/// An 8 x 8 transpose in AVX registers and eight (masked) vector stores, in place of up to 64
/// scalar ones (which took as long as the taps' multiply-adds on 3x3 kernels: 14x14 maps
/// 15-20% faster). False, with nothing stored, off AVX2.
#[inline(always)]
fn store_transposed(
    sums: &[Pixel; ROW_BLOCK],
    stored: usize,
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
    plane: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        assert!(stored <= ROW_BLOCK && out.len() >= (CHANNEL_LANES - 1) * plane + stored);
        // SAFETY: AVX2 is there; the eight rows of `stored` values lie inside `out` (checked).
        unsafe { transpose_avx2(sums, stored, activation, out.as_mut_ptr().cast(), plane) };
        return true;
    }
    let _ = (sums, stored, activation, out, plane);
    false
}

/// [`store_transposed`] on AVX2.
///
/// # Safety
/// AVX2 must be there, and `out + lane * plane` must have `stored` writable values for each
/// lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(
    sums: &[Pixel; ROW_BLOCK],
    stored: usize,
    activation: Activation,
    out: *mut f32,
    plane: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: each pixel is eight f32 values.
    let r: [__m256; 8] = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(sums[j].as_ptr()) });
    // Pairs of pixels interleaved, then quadruples: s[i] holds channel i of pixels 0-3 in its
    // low half and channel i + 4 of them in its high half, pixels 4-7 likewise in s[i + 4].
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xee>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xee>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xee>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xee>(t[5], t[7]),
    ];
    let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
    // Lane j stored where j < stored (the sign bit set).
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(stored as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    for lane in 0..CHANNEL_LANES {
        let (i, halves) = (lane % 4, lane / 4);
        let row = match halves {
            0 => _mm256_permute2f128_ps::<0x20>(s[i], s[i + 4]),
            _ => _mm256_permute2f128_ps::<0x31>(s[i], s[i + 4]),
        };
        let row = match activation {
            Activation::Linear => row,
            Activation::Relu => _mm256_max_ps(row, zero),
            Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(row, zero), six),
        };
        // SAFETY: caller: `stored` values at lane * plane; the masked store leaves the others
        // untouched.
        unsafe {
            let at = out.add(lane * plane);
            match stored {
                ROW_BLOCK => _mm256_storeu_ps(at, row),
                _ => _mm256_maskstore_ps(at, mask, row),
            }
        }
    }
}

/// A stride-2 row (`row`, `pl` zero columns before it) split into its two column phases:
/// padded column `2j + p` (input column `2j + p - pl`) at index `j` of `phases.p`. Input
/// columns past the phases' ends are left out, as [`Depthwise::pad_plane`]'s loops do. Both
/// phases in one pass of 32-column loads and two permutes (the loops, which take one phase at
/// a time and compile to scalar moves, were half of a stride-2 layer's time). False, with
/// nothing written, off AVX-512.
#[inline(always)]
fn split_pairs<T: RowValue>(row: &[T], phases: (&mut [f32], &mut [f32]), pl: usize) -> bool {
    if !super::avx512::available() {
        return false;
    }
    // Even input columns land in phase pl % 2 from index pl / 2, odd ones in the other phase
    // from index (pl + 1) / 2 (input column 1 is padded column pl + 1).
    let (evens, odds) = match pl % 2 {
        0 => (&mut phases.0[pl / 2..], &mut phases.1[pl / 2..]),
        _ => (&mut phases.1[pl / 2..], &mut phases.0[pl.div_ceil(2)..]),
    };
    let n_evens = row.len().div_ceil(2).min(evens.len());
    let n_odds = (row.len() / 2).min(odds.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and BW were checked (`available`); the lengths are within `evens` and
    // `odds`.
    unsafe {
        split_pairs_avx512(row, &mut evens[..n_evens], &mut odds[..n_odds])
    };
    let _ = (n_evens, n_odds);
    true
}

/// [`split_pairs`] on AVX-512: `evens[i] = row[2i]`, `odds[i] = row[2i + 1]` for the lengths
/// of `evens` and `odds` (at most half of `row`, rounded up and down).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn split_pairs_avx512<T: RowValue>(row: &[T], evens: &mut [f32], odds: &mut [f32]) {
    use super::avx512::lane_mask;
    use std::arch::x86_64::*;
    assert!(2 * evens.len() <= row.len() + 1 && 2 * odds.len() <= row.len());
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for start in (0..evens.len()).step_by(16) {
        let load = |from: usize| {
            let n = row.len().saturating_sub(from).min(16);
            // SAFETY: the n values of `row` from `from`; AVX-512F and BW are enabled here.
            unsafe { T::load(row, from.min(row.len()), n) }
        };
        let (low, high) = (load(2 * start), load(2 * start + 16));
        let store = |to: &mut [f32], lanes: __m512i| {
            let n = to.len().saturating_sub(start).min(16);
            let values = _mm512_permutex2var_ps(low, lanes, high);
            // SAFETY: the n values of `to` from `start`.
            unsafe {
                _mm512_mask_storeu_ps(
                    to.as_mut_ptr().add(start.min(to.len())),
                    lane_mask(n),
                    values,
                )
            }
        };
        store(evens, even_lanes);
        store(odds, odd_lanes);
    }
}

/// The values of a map row as [`split_pairs`] reads them: f32, or bf16 widened to f32.
trait RowValue: Copy {
    /// The `n` (at most 16) values of `row` from `from` as f32 lanes, zeros past them.
    ///
    /// # Safety
    /// `from + n <= row.len()`; the CPU must have AVX-512F and BW.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load(row: &[Self], from: usize, n: usize) -> std::arch::x86_64::__m512 {
        // SAFETY: caller.
        unsafe { Self::load_masked(row.as_ptr().add(from), super::avx512::lane_mask(n)) }
    }

    /// The lanes of `mask` from `at` as f32, zeros elsewhere.
    ///
    /// # Safety
    /// The masked lanes from `at` must be readable; the CPU must have AVX-512F and BW.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load_masked(at: *const Self, mask: u16) -> std::arch::x86_64::__m512;
}

impl RowValue for f32 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_masked(at: *const f32, mask: u16) -> std::arch::x86_64::__m512 {
        // SAFETY: caller.
        unsafe { std::arch::x86_64::_mm512_maskz_loadu_ps(mask, at) }
    }
}

impl RowValue for bf16 {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_masked(at: *const bf16, mask: u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // bf16 is the upper half of an f32: each 16-bit value zero-extended, shifted up.
        // SAFETY: caller.
        unsafe {
            let words = _mm512_maskz_loadu_epi16(mask as u32, at.cast());
            let wide = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(words));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }
}

/// [`Accumulate`] for kernel width `KW` (stride 1): per output row and kernel row, the `KW`
/// sums of that kernel row stay in registers across the output row.
fn accumulate_group<const KW: usize>(
    conv: &Depthwise,
    padded: &[Pixel],
    grad: &[Pixel],
    sums: &mut [Pixel],
) {
    let [_, ow] = conv.output();
    let padded_w = conv.input[1] + conv.padding[1].0 + conv.padding[1].1;
    super::with_avx2(
        #[inline(always)]
        || {
            for (oy, grad_row) in grad.chunks_exact(ow).enumerate() {
                for (ky, kernel_row) in sums.chunks_exact_mut(KW).enumerate() {
                    let row = &padded[(oy + ky) * padded_w..][..ow - 1 + KW];
                    let mut acc: [Pixel; KW] = kernel_row.try_into().expect("a kernel row");
                    for (ox, &g) in grad_row.iter().enumerate() {
                        for (kx, a) in acc.iter_mut().enumerate() {
                            *a = fma(row[ox + kx], g, *a);
                        }
                    }
                    kernel_row.copy_from_slice(&acc);
                }
            }
        },
    )
}

/// `sums` plus, lane by lane, the products of the rows of `grad` (each `width` long, a
/// multiple of [`WEIGHT_LANES`]) with the rows of `x` (each `stride` apart) under them.
#[inline(always)]
fn tap_sums(
    mut sums: [f32; WEIGHT_LANES],
    grad: &[f32],
    width: usize,
    x: &[f32],
    stride: usize,
) -> [f32; WEIGHT_LANES] {
    for (y, g) in grad.chunks_exact(width).enumerate() {
        let x = &x[y * stride..][..width];
        for (g, x) in g
            .chunks_exact(WEIGHT_LANES)
            .zip(x.chunks_exact(WEIGHT_LANES))
        {
            let g: &[f32; WEIGHT_LANES] = g.try_into().expect("lanes");
            let x: &[f32; WEIGHT_LANES] = x.try_into().expect("lanes");
            for lane in 0..WEIGHT_LANES {
                sums[lane] += g[lane] * x[lane];
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_difference, pattern};
    use super::*;

    /// The convolution written out as loops over every output and tap.
    fn reference(conv: Depthwise, x: &[f32], k: &[f32], bias: &[f32]) -> Vec<f32> {
        let [h, w] = conv.input;
        let [oh, ow] = conv.output();
        let [kh, kw] = conv.kernel;
        let [(pt, _), (pl, _)] = conv.padding;
        let mut out = Vec::new();
        for n in 0..conv.batch {
            for c in 0..conv.channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = bias[c];
                        for dy in 0..kh {
                            for dx in 0..kw {
                                let iy = (oy * conv.stride[0] + dy) as isize - pt as isize;
                                let ix = (ox * conv.stride[1] + dx) as isize - pl as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let xi = ((n * conv.channels + c) * h + iy as usize) * w
                                        + ix as usize;
                                    sum += k[(c * kh + dy) * kw + dx] * x[xi];
                                }
                            }
                        }
                        out.push(sum);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_loops_for_every_padding_and_stride() {
        let (mut paths, mut bf16_inputs) = ([false; 2], 0);
        for (kernel, stride, padding, input) in [
            (3, 1, [(1, 1), (1, 1)], [9, 11]),
            (3, 2, [(0, 1), (0, 1)], [10, 13]), // TF SAME, stride 2: pad after only
            (5, 2, [(1, 2), (1, 2)], [11, 12]),
            (5, 1, [(2, 2), (2, 2)], [7, 5]),
            (3, 1, [(0, 0), (0, 0)], [3, 8]),
            (5, 1, [(2, 2), (2, 2)], [1, 1]), // every tap but the centre outside
            (4, 1, [(1, 2), (1, 2)], [6, 7]), // no row loops for this width: plane by plane
            (3, 1, [(1, 1), (1, 1)], [5, 19]), // wide planes: plane by plane
            (3, 2, [(0, 1), (0, 1)], [6, 35]),
            (5, 2, [(1, 2), (1, 2)], [5, 69]), // stride 2 on wide planes, odd left padding
            (3, 2, [(2, 1), (2, 1)], [4, 40]),
            (5, 2, [(1, 2), (1, 2)], [7, 37]), // wide, stride 2, an odd phase first
            (3, 1, [(1, 1), (1, 1)], [4, 70]), // two full column blocks and a partial one
            (7, 2, [(3, 3), (3, 3)], [9, 9]),
        ] {
            // 11 channels: a group of eight and a partial one across channels.
            let channels = 11;
            let conv = Depthwise {
                batch: 2,
                channels,
                input,
                kernel: [kernel; 2],
                stride: [stride; 2],
                padding,
            };
            let x: Vec<f32> = (0..2 * channels * input[0] * input[1])
                .map(|i| pattern(i, 3.0))
                .collect();
            let k: Vec<f32> = (0..channels * kernel * kernel)
                .map(|i| pattern(i + 7, 1.0))
                .collect();
            let bias: Vec<f32> = (0..channels).map(|i| pattern(i + 3, 0.5)).collect();
            paths[usize::from(conv.across_channels())] = true;
            let got = conv.run(&x, &k, Some(&bias), Activation::Linear, Precision::F32);
            let want = reference(conv, &x, &k, &bias);
            assert_eq!(got.len(), want.len(), "{conv:?}");
            let worst = max_difference(&got, &want);
            assert!(worst < 1e-5, "{conv:?}: max difference {worst}");
            let clamped = conv.run(&x, &k, Some(&bias), Activation::Relu6, Precision::F32);
            for (c, v) in clamped.iter().zip(&got) {
                assert_eq!(*c, v.clamp(0.0, 6.0));
            }
            // The products stay f32 when bf16 is asked for.
            assert_eq!(conv.products_precision(Precision::Bf16), Precision::F32);
            let bf16 = conv.run(&x, &k, Some(&bias), Activation::Linear, Precision::Bf16);
            assert_eq!(bf16, got, "{conv:?}");
            // A bf16 map, where the kernel reads one, gives what its values as f32 give.
            if conv.reads_bf16(Precision::Bf16) {
                let rounded: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let widened: Vec<f32> = rounded.iter().map(|v| v.to_f32()).collect();
                let want = conv.run(&widened, &k, Some(&bias), Activation::Relu6, Precision::F32);
                let input = MapValues::Bf16(&rounded);
                let got = conv.run_maps(
                    input,
                    &k,
                    None,
                    Some(&bias),
                    Activation::Relu6,
                    Precision::Bf16,
                    false,
                );
                assert!(
                    matches!(got, MapOutput::F32(got) if got == want),
                    "{conv:?} from bf16"
                );
                bf16_inputs += 1;
            }
        }
        assert_eq!(
            paths, [true; 2],
            "both paths (plane by plane, across channels) tested"
        );
        if super::super::amx::available() {
            // Wide planes at stride 2 (four) and at stride 1 with a loop that reads in place
            // (two).
            assert_eq!(bf16_inputs, 6, "the wide planes read bf16");
        }
    }

    #[test]
    fn portable_plane_loops_match_the_avx512_ones() {
        // `run` takes the AVX-512 loops where the CPU has them; the portable ones (other CPUs)
        // are compared with them here on the same padded planes, and at stride 1 the loops
        // that read the unpadded plane with them too.
        if !super::super::avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512 (the portable loops ran above)");
            return;
        }
        for (kernel, stride, padding, input) in [
            (3, 1, [(1, 1), (1, 1)], [9, 70]),
            (3, 2, [(0, 1), (0, 1)], [10, 35]),
            (5, 1, [(2, 2), (2, 2)], [6, 19]),
            (5, 2, [(1, 2), (1, 2)], [7, 37]),
            (7, 1, [(3, 3), (3, 3)], [8, 130]),
            // Uneven padding (all before or all after), and none.
            (3, 1, [(0, 2), (2, 0)], [11, 37]),
            (5, 1, [(0, 0), (0, 0)], [9, 40]),
            // Planes fewer rows high than the kernel: most taps read padding rows.
            (5, 1, [(2, 2), (2, 2)], [1, 40]),
            (7, 1, [(3, 3), (3, 3)], [2, 20]),
        ] {
            let conv = Depthwise {
                batch: 1,
                channels: 1,
                input,
                kernel: [kernel; 2],
                stride: [stride; 2],
                padding,
            };
            let x: Vec<f32> = (0..input[0] * input[1]).map(|i| pattern(i, 3.0)).collect();
            let filter: Vec<f32> = (0..kernel * kernel).map(|i| pattern(i + 7, 1.0)).collect();
            let mut padded = Vec::new();
            conv.pad_plane(MapValues::F32(&x), &mut padded);
            let [oh, ow] = conv.output();
            let run_on = |source: &[f32], plane: ConvolvePlane| {
                let mut out = vec![MaybeUninit::new(f32::NAN); oh * ow];
                plane(&conv, source, &filter, 0.25, Activation::Relu6, &mut out);
                // SAFETY: initialized above (and overwritten by the loops).
                out.into_iter()
                    .map(|v| unsafe { v.assume_init() })
                    .collect::<Vec<f32>>()
            };
            let run = |plane: ConvolvePlane| run_on(&padded, plane);
            let (portable, avx512, direct) = match (kernel, stride) {
                (3, 1) => (
                    run(convolve_plane::<3, 1>),
                    run(convolve_plane_avx512::<3, 1>),
                    Some(run_on(&x, convolve_direct_avx512::<3, f32>)),
                ),
                (3, 2) => (
                    run(convolve_plane::<3, 2>),
                    run(convolve_plane_avx512::<3, 2>),
                    None,
                ),
                (5, 1) => (
                    run(convolve_plane::<5, 1>),
                    run(convolve_plane_avx512::<5, 1>),
                    Some(run_on(&x, convolve_direct_avx512::<5, f32>)),
                ),
                (5, 2) => (
                    run(convolve_plane::<5, 2>),
                    run(convolve_plane_avx512::<5, 2>),
                    None,
                ),
                _ => (
                    run(convolve_plane::<7, 1>),
                    run(convolve_plane_avx512::<7, 1>),
                    Some(run_on(&x, convolve_direct_avx512::<7, f32>)),
                ),
            };
            assert!(
                portable.iter().all(|v| v.is_finite()),
                "{conv:?}: every output written"
            );
            if let Some(direct) = direct {
                let worst = max_difference(&portable, &direct);
                assert!(
                    worst < 1e-5,
                    "{conv:?}: unpadded plane, max difference {worst}"
                );
            }
            let worst = max_difference(&portable, &avx512);
            assert!(worst < 1e-5, "{conv:?}: max difference {worst}");
        }
    }
}
