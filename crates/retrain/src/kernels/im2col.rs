//! Dense convolutions that have no kernel of their own (strided ones, any kernel size, few input
//! channels such as a network's stem), at inference on the CPU.
//!
//! Per block of output pixels the input patches are gathered into a small buffer (im2col, one
//! row per input channel and kernel tap) and multiplied by the kernel in the same blocked
//! product as the 1x1 convolutions, bias and activation applied while the block is in cache.
//! Burn's conv2d gathers the whole map first, pads the input into a copy for TF-SAME's uneven
//! padding and applies the activation in passes of its own: EfficientNet-Lite0's stem (3x3,
//! stride 2, 3 channels) took 11% of the whole forward pass that way.

use super::amx::PackedLhs;
use super::pointwise::BlockedProduct;
pub use super::{Activation, ConvKernel, Precision};

/// The shape of a single-group convolution without dilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Im2col {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding (before, after) along height and width.
    pub padding: [(usize, usize); 2],
}

impl Im2col {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        super::output_size(self.input, self.padding, self.kernel, self.stride)
    }

    /// The rows (channel, tap) x `count` columns (output pixels from `first`, row-major) of
    /// `image`'s patches, into `columns`. Every value is written (the buffer is reused from
    /// block to block without clearing): within an output row the input column advances by the
    /// stride, so each run is zeros, a strided copy of one input row, zeros.
    fn gather(&self, image: &[f32], first: usize, count: usize, columns: &mut Vec<f32>) {
        let [h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [(top, _), (left, _)] = self.padding;
        let [_, ow] = self.output();
        columns.resize(self.in_channels * kh * kw * count, 0.0);
        let mut rows = columns.chunks_exact_mut(count);
        for plane in image.chunks_exact(h * w).take(self.in_channels) {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = rows.next().expect("one row per channel and tap");
                    let mut pixel = first;
                    while pixel < first + count {
                        let (oy, ox) = (pixel / ow, pixel % ow);
                        let run = (ow - ox).min(first + count - pixel);
                        let out = &mut row[pixel - first..pixel - first + run];
                        pixel += run;
                        let Some(iy) = (oy * sh + ky).checked_sub(top).filter(|&y| y < h) else {
                            out.fill(0.0); // a padding row
                            continue;
                        };
                        // Output column ox + i reads input column (ox + i) * sw + kx - left:
                        // inside the row for i in before..after.
                        let start = ox * sw + kx;
                        let before = left.saturating_sub(start).div_ceil(sw).min(run);
                        let after = (w + left)
                            .saturating_sub(start)
                            .div_ceil(sw)
                            .clamp(before, run);
                        out[..before].fill(0.0);
                        if before < after {
                            // Column `before` is inside the row, so this does not underflow.
                            let from = start + before * sw - left;
                            let row = &plane[iy * w..(iy + 1) * w];
                            strided_copy(&mut out[before..after], &row[from..], sw);
                        }
                        out[after..].fill(0.0);
                    }
                }
            }
        }
    }
}

/// `out[i] = source[i * stride]`; the copy vectorizes for strides 1 and 2.
fn strided_copy(out: &mut [f32], source: &[f32], stride: usize) {
    match stride {
        1 => out.copy_from_slice(&source[..out.len()]),
        2 => {
            // Whole pairs as one loop (a strided iterator does not vectorize), then the last
            // value, whose pair may end past the row.
            let Some((last, body)) = out.split_last_mut() else {
                return;
            };
            for (o, pair) in body.iter_mut().zip(source.chunks_exact(2)) {
                *o = pair[0];
            }
            *last = source[2 * body.len()];
        }
        _ => {
            for (o, &v) in out.iter_mut().zip(source.iter().step_by(stride)) {
                *o = v;
            }
        }
    }
}

impl ConvKernel for Im2col {
    fn output_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.output();
        [self.batch, self.out_channels, oh, ow]
    }

    /// The kernel is the left-hand side of the products: out channels x its other axes.
    fn tiles_shape(&self) -> Option<[usize; 2]> {
        Some([
            self.out_channels,
            self.in_channels * self.kernel[0] * self.kernel[1],
        ])
    }

    /// `kernel`: OIHW, which is already the out channels x (channel, tap) left-hand side.
    fn run_with(
        &self,
        input: &[f32],
        kernel: &[f32],
        tiles: Option<&PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
    ) -> Vec<f32> {
        let [oh, ow] = self.output();
        let product = BlockedProduct {
            batch: self.batch,
            out_channels: self.out_channels,
            depth: self.in_channels * self.kernel[0] * self.kernel[1],
            pixels: oh * ow,
            input_per_image: self.in_channels * self.input[0] * self.input[1],
        };
        product.run(
            input,
            kernel,
            tiles,
            bias,
            activation,
            precision,
            |image, first, count, scratch| {
                self.gather(image, first, count, scratch);
                (scratch.as_slice(), count)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_difference, pattern};
    use super::*;

    /// The convolution written out as loops.
    fn reference(conv: Im2col, x: &[f32], w: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
        let [h, wd] = conv.input;
        let [kh, kw] = conv.kernel;
        let [oh, ow] = conv.output();
        let (c, k) = (conv.in_channels, conv.out_channels);
        let mut out = vec![0f32; conv.batch * k * oh * ow];
        for n in 0..conv.batch {
            for o in 0..k {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = bias[o];
                        for j in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * conv.stride[0] + ky) as isize
                                        - conv.padding[0].0 as isize;
                                    let ix = (ox * conv.stride[1] + kx) as isize
                                        - conv.padding[1].0 as isize;
                                    if (0..h as isize).contains(&iy)
                                        && (0..wd as isize).contains(&ix)
                                    {
                                        sum += w[((o * c + j) * kh + ky) * kw + kx]
                                            * x[((n * c + j) * h + iy as usize) * wd + ix as usize];
                                    }
                                }
                            }
                        }
                        out[((n * k + o) * oh + oy) * ow + ox] = act.apply(sum);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_loops_for_strides_paddings_and_block_edges() {
        let cases = [
            // EfficientNet's stem: 3x3 stride 2, TF-SAME padding only after; 1152 pixels with
            // 32 out channels is a full block of 1024 and a partial one.
            ([3, 32], [67, 67], [3, 3], [2, 2], [(0, 1), (0, 1)]),
            // ResNet's stem shape: 7x7 stride 2, padding 3 each side.
            ([3, 8], [20, 17], [7, 7], [2, 2], [(3, 3), (3, 3)]),
            // A strided 1x1 (ResNet's shortcut), uneven strides, and a 1x3 one.
            ([5, 6], [9, 11], [1, 1], [2, 2], [(0, 0), (0, 0)]),
            ([4, 5], [10, 9], [3, 3], [1, 2], [(1, 1), (0, 2)]),
            ([2, 3], [6, 8], [1, 3], [1, 1], [(0, 0), (1, 1)]),
            // Stride 3 (the general strided copy), padding on both sides of every row.
            ([2, 4], [11, 10], [3, 3], [3, 3], [(1, 1), (2, 2)]),
            // A kernel wider than the input: whole runs read only padding columns.
            ([2, 3], [3, 2], [7, 7], [1, 1], [(3, 3), (3, 3)]),
        ];
        for ([c, k], input, kernel, stride, padding) in cases {
            let conv = Im2col {
                batch: 2,
                in_channels: c,
                out_channels: k,
                input,
                kernel,
                stride,
                padding,
            };
            let x: Vec<f32> = (0..2 * c * input[0] * input[1])
                .map(|i| pattern(i, 3.0))
                .collect();
            let w: Vec<f32> = (0..k * c * kernel[0] * kernel[1])
                .map(|i| pattern(i + 13, 0.5))
                .collect();
            let bias: Vec<f32> = (0..k).map(|i| pattern(i + 5, 1.0)).collect();
            for act in [Activation::Linear, Activation::Relu6] {
                let got = conv.run(&x, &w, Some(&bias), act, Precision::F32);
                let want = reference(conv, &x, &w, &bias, act);
                let worst = max_difference(&got, &want);
                assert!(worst < 1e-4, "{conv:?} {act:?}: max difference {worst}");
            }
        }
    }
}
