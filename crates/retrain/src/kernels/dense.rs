//! The product of a Dense layer with few outputs (a classifier head: 2 to 16 classes over
//! thousands of features), forward and backward, on AVX-512.
//!
//! Through a general matrix product (`gemm`, under Burn's matmul) a 32 x 25088 by 25088 x 5
//! product packs the whole feature matrix in each direction and runs microkernels six columns
//! wide for five. Here every output is a dot product of a feature row with a kernel column, so
//! the kernel is turned once into rows of features (its transpose, 0.5 MB for 25088 x 5) and
//! four feature rows by six kernel rows sum in 24 registers along the features; the kernel
//! gradient sums, per block of features, every sample's row times its output gradients; the
//! input gradient (a Dense layer before the head) is the output gradients times the kernel
//! rows. Nothing else is copied. Written here: no crate does this shape better.

#[cfg(target_arch = "x86_64")]
use super::avx512::lane_mask;
use super::{flex_tensor, values};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Dispatch, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;

/// The most outputs [`product`] takes: 16 registers of kernel rows in the input gradient.
pub const MAX_OUTPUTS: usize = 16;

/// Features per AVX-512 register.
const LANES: usize = 16;

/// Samples summed together in the forward product.
const ROWS: usize = 4;

/// Kernel rows (outputs) summed together in the forward product.
const OUTPUTS: usize = 6;

/// Features per task of the gradients.
const TASK_FEATURES: usize = 64 * LANES;

/// Whether [`product`] runs `x` [samples, features] times `kernel` [features, outputs]: both
/// f32 on the CPU backend, at most [`MAX_OUTPUTS`] outputs, on a CPU with AVX-512.
pub fn suits(x: &Tensor<2>, kernel: &Tensor<2>) -> bool {
    super::avx512::available()
        && super::on_cpu_f32(x)
        && super::on_cpu_f32(kernel)
        && kernel.dims()[1] <= MAX_OUTPUTS
        && x.dims()[1] == kernel.dims()[0]
}

/// `x` [samples, features] times `kernel` [features, outputs], with gradients for both where
/// they are tracked. Only where [`suits`] says so.
pub fn product(x: Tensor<2>, kernel: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuDenseProduct>::cpu_dense_product(
        x.into_dispatch(),
        kernel.into_dispatch(),
    ))
}

/// The backend extension behind [`product`].
#[backend_extension(Flex, Autodiff)]
pub trait CpuDenseProduct: burn::backend::Backend {
    /// `x` times `kernel`.
    fn cpu_dense_product(x: FloatTensor<Self>, kernel: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The shape of one product: samples x features times features x outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    samples: usize,
    features: usize,
    outputs: usize,
}

impl Shape {
    fn of(x: &FlexTensor, kernel: &FlexTensor) -> Shape {
        let (x, kernel) = (x.layout().shape(), kernel.layout().shape());
        assert!(
            x.num_dims() == 2 && kernel.num_dims() == 2 && x[1] == kernel[0],
            "dense product shapes {x:?} and {kernel:?}"
        );
        Shape {
            samples: x[0],
            features: x[1],
            outputs: kernel[1],
        }
    }
}

impl CpuDenseProduct for Flex {
    fn cpu_dense_product(x: FlexTensor, kernel: FlexTensor) -> FlexTensor {
        let shape = Shape::of(&x, &kernel);
        let rows = transpose(&values(&kernel), shape.features, shape.outputs);
        flex_tensor(
            forward(&values(&x), &rows, shape),
            [shape.samples, shape.outputs],
        )
    }
}

/// The backward step of [`product`]: input and kernel gradients from the output's.
#[derive(Debug)]
struct DenseBackward;

impl Backward<Flex, 2> for DenseBackward {
    type State = (NodeId, NodeId, Shape);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_node, kernel_node] = ops.parents;
        let output_gradient = grads.consume::<Flex>(&ops.node);
        let output_gradient = values(&output_gradient);
        let (x_state, kernel_state, shape) = ops.state;
        if let Some(node) = x_node {
            let kernel: FlexTensor = checkpointer.retrieve_node_output(kernel_state);
            let rows = transpose(&values(&kernel), shape.features, shape.outputs);
            let gradient = input_gradient(&rows, &output_gradient, shape);
            grads.register::<Flex>(
                node.id,
                flex_tensor(gradient, [shape.samples, shape.features]),
            );
        }
        if let Some(node) = kernel_node {
            let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
            let gradient = kernel_gradient(&values(&x), &output_gradient, shape);
            grads.register::<Flex>(
                node.id,
                flex_tensor(gradient, [shape.features, shape.outputs]),
            );
        }
    }
}

impl<C: CheckpointStrategy> CpuDenseProduct for Autodiff<Flex, C> {
    fn cpu_dense_product(x: FloatTensor<Self>, kernel: FloatTensor<Self>) -> FloatTensor<Self> {
        match DenseBackward
            .prepare::<C>([x.node(), kernel.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let kernel_state = prep.checkpoint(&kernel);
                let (x, kernel) = (x.into_primitive(), kernel.into_primitive());
                let shape = Shape::of(&x, &kernel);
                let output = Flex::cpu_dense_product(x, kernel);
                prep.finish((x_state, kernel_state, shape), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::cpu_dense_product(
                x.into_primitive(),
                kernel.into_primitive(),
            )),
        }
    }
}

/// `values` (rows x columns, row-major) transposed: per column, 16 rows at a time gathered
/// into one register and stored in order.
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * columns, "transposed size");
    let mut out: Vec<f32> = Vec::with_capacity(values.len());
    // SAFETY: AVX-512F (`suits`); the gathers read row r < rows of each column inside
    // `values` (masked past the last row), the stores write the same places of `out`'s
    // capacity, all of it, after which its length is set.
    unsafe {
        gather_columns(values, rows, columns, out.as_mut_ptr());
        out.set_len(values.len());
    }
    out
}

/// The loops of [`transpose`].
///
/// # Safety
/// Needs AVX-512F; `values` holds rows x columns values, `out` room for as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_columns(values: &[f32], rows: usize, columns: usize, out: *mut f32) {
    use std::arch::x86_64::*;
    let stride = columns as i32;
    let index = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride),
    );
    for c in 0..columns {
        for first in (0..rows).step_by(LANES) {
            let mask = lane_mask(rows - first);
            let base = values.as_ptr().add(first * columns + c);
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, index, base);
            _mm512_mask_storeu_ps(out.add(c * rows + first), mask, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn gather_columns(_: &[f32], _: usize, _: usize, _: *mut f32) {
    unreachable!("dense products run on x86-64 only (`suits` is false elsewhere)")
}

/// out[s][o] = x[s] . rows[o]: `x` samples x features, `rows` (the kernel transposed) outputs
/// x features. Tasks of [`ROWS`] samples.
fn forward(x: &[f32], rows: &[f32], shape: Shape) -> Vec<f32> {
    let Shape {
        samples,
        features,
        outputs,
    } = shape;
    assert!(x.len() == samples * features && rows.len() == outputs * features);
    let mut out = vec![0f32; samples * outputs];
    if outputs == 0 {
        return out;
    }
    out.par_chunks_mut(ROWS * outputs)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * ROWS;
            let count = out.len() / outputs;
            // Rows past the task's samples, and kernel rows past the outputs, repeat the last
            // one: the same loop for every tile, the extra sums dropped.
            let samples: [&[f32]; ROWS] = std::array::from_fn(|r| {
                let s = first + r.min(count - 1);
                &x[s * features..(s + 1) * features]
            });
            for o in (0..outputs).step_by(OUTPUTS) {
                let kernel: [&[f32]; OUTPUTS] = std::array::from_fn(|k| {
                    let o = (o + k).min(outputs - 1);
                    &rows[o * features..(o + 1) * features]
                });
                // SAFETY: AVX-512F (`suits` checked it before any product); every slice holds
                // `features` values.
                let sums = unsafe { dot_tile(samples, kernel, features) };
                for (r, sums) in sums.iter().enumerate().take(count) {
                    for (k, &sum) in sums.iter().enumerate().take(outputs - o) {
                        out[r * outputs + o + k] = sum;
                    }
                }
            }
        });
    out
}

/// The [`ROWS`] x [`OUTPUTS`] dot products of `samples` and `kernel` rows (`features` long).
///
/// # Safety
/// Needs AVX-512F; every slice must hold `features` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_tile(
    samples: [&[f32]; ROWS],
    kernel: [&[f32]; OUTPUTS],
    features: usize,
) -> [[f32; OUTPUTS]; ROWS] {
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); OUTPUTS]; ROWS];
    for first in (0..features).step_by(LANES) {
        let mask = lane_mask(features - first);
        let w: [__m512; OUTPUTS] =
            std::array::from_fn(|k| _mm512_maskz_loadu_ps(mask, kernel[k].as_ptr().add(first)));
        for (sums, row) in sums.iter_mut().zip(samples) {
            let x = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(first));
            for (sum, &w) in sums.iter_mut().zip(&w) {
                *sum = _mm512_fmadd_ps(x, w, *sum);
            }
        }
    }
    sums.map(|row| row.map(|sum| _mm512_reduce_add_ps(sum)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_tile(_: [&[f32]; ROWS], _: [&[f32]; OUTPUTS], _: usize) -> [[f32; OUTPUTS]; ROWS] {
    unreachable!("dense products run on x86-64 only (`suits` is false elsewhere)")
}

/// The kernel gradient (features x outputs): column o = the sum over samples of
/// `output_gradient`[s][o] times x[s]. Tasks of [`TASK_FEATURES`] features.
fn kernel_gradient(x: &[f32], output_gradient: &[f32], shape: Shape) -> Vec<f32> {
    let Shape {
        samples,
        features,
        outputs,
    } = shape;
    assert!(x.len() == samples * features && output_gradient.len() == samples * outputs);
    let len = outputs * features;
    let mut rows: Vec<f32> = Vec::with_capacity(len);
    let out = super::winograd::SharedOutput(rows.as_mut_ptr());
    let out = &out;
    let tasks = features.div_ceil(TASK_FEATURES);
    (0..tasks).into_par_iter().for_each(|task| {
        let first = task * TASK_FEATURES;
        let count = TASK_FEATURES.min(features - first);
        // SAFETY: AVX-512F (`suits`); features first..first + count, inside both buffers,
        // written by this task alone.
        unsafe { gradient_columns(x, output_gradient, shape, first, count, out) };
    });
    // SAFETY: the tasks wrote every output of every feature.
    unsafe { rows.set_len(len) };
    rows
}

/// Features `first..first + count` of [`kernel_gradient`]: tiles of [`OUTPUTS`] outputs x
/// four registers of features (each sample row read 256 bytes at a time), outputs past the
/// last repeating it, their sums dropped; each tile's sums are interleaved into the features x
/// outputs layout through a buffer in L1.
///
/// # Safety
/// Needs AVX-512F; the features lie inside the rows, `out` points at features x outputs
/// values, and no other task writes these features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gradient_columns(
    x: &[f32],
    output_gradient: &[f32],
    shape: Shape,
    first: usize,
    count: usize,
    out: &super::winograd::SharedOutput,
) {
    use std::arch::x86_64::*;
    const VECTORS: usize = 4;
    let Shape {
        samples,
        features,
        outputs,
    } = shape;
    let end = first + count;
    for o in (0..outputs).step_by(OUTPUTS) {
        let tile: [usize; OUTPUTS] = std::array::from_fn(|k| (o + k).min(outputs - 1));
        for column in (first..end).step_by(LANES * VECTORS) {
            let masks: [u16; VECTORS] =
                std::array::from_fn(|v| lane_mask((end - column).saturating_sub(v * LANES)));
            let mut sums = [[_mm512_setzero_ps(); VECTORS]; OUTPUTS];
            for s in 0..samples {
                let row = x.as_ptr().add(s * features + column);
                let x: [__m512; VECTORS] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], row.add(v * LANES)));
                let gradients = output_gradient.as_ptr().add(s * outputs);
                for (sums, &k) in sums.iter_mut().zip(&tile) {
                    let g = _mm512_set1_ps(*gradients.add(k));
                    for (sum, &x) in sums.iter_mut().zip(&x) {
                        *sum = _mm512_fmadd_ps(x, g, *sum);
                    }
                }
            }
            let mut block = [[0f32; LANES * VECTORS]; OUTPUTS];
            for (block, sums) in block.iter_mut().zip(&sums) {
                for (v, &sum) in sums.iter().enumerate() {
                    _mm512_storeu_ps(block.as_mut_ptr().add(v * LANES), sum);
                }
            }
            let kept = (outputs - o).min(OUTPUTS);
            for f in 0..(end - column).min(LANES * VECTORS) {
                let row = out.at((column + f) * outputs + o);
                for (k, block) in block.iter().enumerate().take(kept) {
                    *row.add(k) = block[f];
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn gradient_columns(
    _: &[f32],
    _: &[f32],
    _: Shape,
    _: usize,
    _: usize,
    _: &super::winograd::SharedOutput,
) {
    unreachable!("dense products run on x86-64 only (`suits` is false elsewhere)")
}

/// The input gradient (samples x features): row s = the sum over outputs of
/// `output_gradient`[s][o] times kernel row o (`rows`, outputs x features). Tasks of
/// [`TASK_FEATURES`] features.
fn input_gradient(rows: &[f32], output_gradient: &[f32], shape: Shape) -> Vec<f32> {
    let Shape {
        samples,
        features,
        outputs,
    } = shape;
    assert!(rows.len() == outputs * features && output_gradient.len() == samples * outputs);
    let mut gradient = vec![0f32; samples * features];
    let out = super::winograd::SharedOutput(gradient.as_mut_ptr());
    let out = &out;
    let tasks = features.div_ceil(TASK_FEATURES);
    (0..tasks).into_par_iter().for_each(|task| {
        let first = task * TASK_FEATURES;
        let count = TASK_FEATURES.min(features - first);
        // SAFETY: AVX-512F (`suits`); columns first..first + count of every sample's row,
        // inside both buffers, written by this task alone.
        unsafe { input_columns(rows, output_gradient, shape, first, count, out) };
    });
    gradient
}

/// Columns `first..first + count` of [`input_gradient`].
///
/// # Safety
/// As for [`gradient_columns`], `out` pointing at samples x features values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_columns(
    rows: &[f32],
    output_gradient: &[f32],
    shape: Shape,
    first: usize,
    count: usize,
    out: &super::winograd::SharedOutput,
) {
    use std::arch::x86_64::*;
    let Shape {
        samples,
        features,
        outputs,
    } = shape;
    for column in (first..first + count).step_by(LANES) {
        let mask = lane_mask(first + count - column);
        let kernel: [__m512; MAX_OUTPUTS] = std::array::from_fn(|o| match o < outputs {
            true => _mm512_maskz_loadu_ps(mask, rows.as_ptr().add(o * features + column)),
            false => _mm512_setzero_ps(),
        });
        for s in 0..samples {
            let gradients = &output_gradient[s * outputs..(s + 1) * outputs];
            let mut sum = _mm512_setzero_ps();
            for (&w, &g) in kernel.iter().zip(gradients) {
                sum = _mm512_fmadd_ps(w, _mm512_set1_ps(g), sum);
            }
            _mm512_mask_storeu_ps(out.at(s * features + column), mask, sum);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn input_columns(
    _: &[f32],
    _: &[f32],
    _: Shape,
    _: usize,
    _: usize,
    _: &super::winograd::SharedOutput,
) {
    unreachable!("dense products run on x86-64 only (`suits` is false elsewhere)")
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{filled, host, max_difference};
    use super::*;

    #[test]
    fn products_and_gradients_equal_burns_matmul() {
        if !super::super::avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512 (Dense layers use Burn's matmul)");
            return;
        }
        // Sample counts around the tile of four, outputs around the tile of six and up to the
        // most, feature counts with a partial register and more than one gradient task.
        for (samples, features, outputs) in [
            (32, 2 * TASK_FEATURES + 37, 5),
            (5, 40, 1),
            (3, 16, 7),
            (9, 1000, 16),
            (1, 3, 2),
        ] {
            let x = filled([samples, features], 0, 2.0).require_grad();
            let kernel = filled([features, outputs], 17, 0.5).require_grad();
            assert!(suits(&x, &kernel));
            let weights = filled([samples, outputs], 3, 1.0);

            let ours = product(x.clone(), kernel.clone());
            let ours_values = host(ours.clone());
            let grads = (ours * weights.clone()).sum().backward();
            let (our_dx, our_dk) = (
                host(x.grad(&grads).unwrap()),
                host(kernel.grad(&grads).unwrap()),
            );

            let (x_ref, kernel_ref) = (
                x.clone().detach().require_grad(),
                kernel.clone().detach().require_grad(),
            );
            let burn = x_ref.clone().matmul(kernel_ref.clone());
            let burn_values = host(burn.clone());
            let grads = (burn * weights).sum().backward();
            let burn_dx = host(x_ref.grad(&grads).unwrap());
            let burn_dk = host(kernel_ref.grad(&grads).unwrap());

            for (what, ours, burn) in [
                ("output", ours_values, burn_values),
                ("input gradient", our_dx, burn_dx),
                ("kernel gradient", our_dk, burn_dk),
            ] {
                let scale = burn.iter().fold(1f32, |m, v| m.max(v.abs()));
                let worst = max_difference(&ours, &burn) / scale;
                assert!(
                    worst < 1e-5,
                    "{samples}x{features}x{outputs} {what}: relative difference {worst}"
                );
            }
        }
    }

    #[test]
    fn wide_or_mismatched_products_are_left_to_burn() {
        let x = filled([2, 8], 0, 1.0);
        assert!(!suits(&x, &filled([8, MAX_OUTPUTS + 1], 0, 1.0)));
        assert!(!suits(&x, &filled([7, 3], 0, 1.0)));
    }
}
