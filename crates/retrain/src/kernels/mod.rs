//! CPU kernels where Burn's general kernels leave speed on the table: the frozen,
//! inference-only part of a model, and (through [`backprop`], [`batch_norm`] and [`relu6`]) the
//! depthwise and 3x3 convolutions, batch normalization and ReLU6 being trained. Each one is
//! checked against Burn's own operation in the tests.

pub mod adam;
pub mod amx;
pub mod avx512;
pub mod backprop;
pub mod batch_norm;
pub mod bf16;
pub mod dense;
pub mod depthwise;
pub mod direct1x1;
pub mod direct3x3;
pub mod im2col;
pub mod max_pool;
pub mod pointwise;
pub mod relu6;
pub mod winograd;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex};
use burn::tensor::bf16 as Bf16Value;
use burn::tensor::{DType, Tensor, TensorData};
use std::borrow::Cow;
use std::mem::MaybeUninit;

pub use bf16::Precision;

/// A convolution of this module for one input shape, with its bias and activation.
pub trait ConvKernel: Send + Sync {
    /// NCHW shape of the result.
    fn output_shape(&self) -> [usize; 4];

    /// The precision this kernel's products run at when `requested` is asked for: the
    /// requested one, except where reduced precision would cost more than it saves.
    fn products_precision(&self, requested: Precision) -> Precision {
        requested
    }

    /// The weights as [`ConvKernel::run`] takes them for products at `precision`, from the
    /// OIHW kernel values (computed once per weight value and precision and kept, see
    /// `Variable::derived`).
    fn prepare_weights(&self, kernel: &[f32], _precision: Precision) -> Vec<f32> {
        kernel.to_vec()
    }

    /// `input` NCHW, `weights` from [`ConvKernel::prepare_weights`] (of a kernel rounded to
    /// `precision`) and, where given, `tiles` the same weights packed by
    /// [`ConvKernel::pack_tiles`]; `bias` one per output channel; the result is NCHW with
    /// `activation` applied, its products taken at `precision`.
    fn run_with(
        &self,
        input: &[f32],
        weights: &[f32],
        tiles: Option<&amx::PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
    ) -> Vec<f32>;

    /// Whether [`ConvKernel::run_maps`] takes its input in bf16 (a map its producer handed over
    /// in bf16, see [`ConvKernel::writes_bf16`]) when `precision` is asked for.
    fn reads_bf16(&self, _precision: Precision) -> bool {
        false
    }

    /// Whether [`ConvKernel::run_maps`] can write its output in bf16 with products at
    /// `precision`.
    fn writes_bf16(&self, _precision: Precision) -> bool {
        false
    }

    /// [`ConvKernel::run_with`] on an f32 or bf16 input, the output in bf16 where
    /// `bf16_output`: bf16 input only where the kernel [`ConvKernel::reads_bf16`], bf16 output
    /// only where it [`ConvKernel::writes_bf16`].
    #[allow(clippy::too_many_arguments)]
    fn run_maps(
        &self,
        input: MapValues<'_>,
        weights: &[f32],
        tiles: Option<&amx::PackedLhs>,
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
        bf16_output: bool,
    ) -> MapOutput {
        match (input, bf16_output) {
            (MapValues::F32(x), false) => {
                MapOutput::F32(self.run_with(x, weights, tiles, bias, activation, precision))
            }
            _ => unreachable!("this kernel reads and writes f32 maps only"),
        }
    }

    /// [`ConvKernel::run_with`] without weights packed beforehand (packed at this call where
    /// the products run on the tiles).
    fn run(
        &self,
        input: &[f32],
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        precision: Precision,
    ) -> Vec<f32> {
        self.run_with(input, weights, None, bias, activation, precision)
    }

    /// Rows and depth of the product whose left-hand side the prepared weights are, for
    /// kernels whose bf16 products run on the AMX tiles from packed weights; `None` for the
    /// others.
    fn tiles_shape(&self) -> Option<[usize; 2]> {
        None
    }

    /// The prepared `weights` packed for the AMX tiles where this kernel's products at
    /// `precision` run on them from packed weights ([`ConvKernel::tiles_shape`]); kept with
    /// the prepared weights, so they are packed once per weight value, not at every call.
    fn pack_tiles(&self, weights: &[f32], precision: Precision) -> Option<amx::PackedLhs> {
        let [rows, depth] = self.tiles_shape()?;
        amx::runs(precision).then(|| amx::PackedLhs::new(weights, rows, depth))
    }
}

/// The values of a feature map as a kernel reads them (NCHW, row-major).
#[derive(Clone, Copy, Debug)]
pub enum MapValues<'a> {
    /// f32, as every layer writes them by default.
    F32(&'a [f32]),
    /// bf16, as a kernel that [`ConvKernel::writes_bf16`] hands them to one that
    /// [`ConvKernel::reads_bf16`].
    Bf16(&'a [Bf16Value]),
}

/// The values a kernel writes: f32, or bf16 for a consumer that reads them.
#[derive(Debug)]
pub enum MapOutput {
    /// f32 values.
    F32(Vec<f32>),
    /// bf16 values.
    Bf16(Vec<Bf16Value>),
}

/// A kernel's prepared weights ([`ConvKernel::prepare_weights`]) and, where its products run
/// on the AMX tiles, the same weights packed for them ([`ConvKernel::pack_tiles`]).
pub struct PreparedWeights {
    /// The weights as [`ConvKernel::run`] takes them.
    pub values: Vec<f32>,
    /// The weights packed for the tiles.
    pub tiles: Option<amx::PackedLhs>,
}

impl PreparedWeights {
    /// `kernel` (OIHW, rounded to `precision`) prepared for `conv` at `precision`.
    pub fn new(conv: &dyn ConvKernel, kernel: &[f32], precision: Precision) -> Self {
        let values = conv.prepare_weights(kernel, precision);
        let tiles = conv.pack_tiles(&values, precision);
        PreparedWeights { values, tiles }
    }
}

/// A [`ConvKernel`] with its prepared weights, bias and activation: one convolution layer
/// ready to run.
#[derive(Clone, Copy)]
pub struct PreparedConv<'a> {
    /// The convolution.
    pub kernel: &'a dyn ConvKernel,
    /// Its weights, from [`PreparedWeights::new`].
    pub weights: &'a PreparedWeights,
    /// One bias per output channel.
    pub bias: Option<&'a [f32]>,
    /// Applied after the bias.
    pub activation: Activation,
    /// Precision of the products: the weights must be rounded to it already.
    pub precision: Precision,
    /// Write the output in bf16 (for a consumer that reads it so; the kernel must
    /// [`ConvKernel::writes_bf16`]).
    pub bf16_output: bool,
}

impl std::fmt::Debug for PreparedConv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedConv")
            .field("output_shape", &self.kernel.output_shape())
            .field("activation", &self.activation)
            .field("precision", &self.precision)
            .finish()
    }
}

/// `conv` run on `x`, a CPU tensor (`Device::flex()`, no autodiff; f32, or bf16 where the
/// kernel [`ConvKernel::reads_bf16`]) whose values it reads in place: going through
/// `into_data` copied each map twice when it was shared (a block's input kept for its
/// residual), 4% of a Lite0 forward. The result is f32, or bf16 where `conv.bf16_output`.
pub fn convolve(x: Tensor<4>, conv: PreparedConv<'_>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuConvolve>::cpu_convolve(
        x.into_dispatch(),
        conv,
    ))
}

/// The backend extension behind [`convolve`].
#[backend_extension(Flex)]
pub trait CpuConvolve: burn::backend::Backend {
    /// `conv` of `x`.
    fn cpu_convolve(x: FloatTensor<Self>, conv: PreparedConv<'_>) -> FloatTensor<Self>;
}

impl CpuConvolve for Flex {
    fn cpu_convolve(x: FlexTensor, conv: PreparedConv<'_>) -> FlexTensor {
        let run = |input| {
            conv.kernel.run_maps(
                input,
                &conv.weights.values,
                conv.weights.tiles.as_ref(),
                conv.bias,
                conv.activation,
                conv.precision,
                conv.bf16_output,
            )
        };
        let output = match x.dtype() {
            DType::BF16 => run(MapValues::Bf16(&bf16_values(&x))),
            _ => run(MapValues::F32(&values(&x))),
        };
        let shape = conv.kernel.output_shape();
        match output {
            MapOutput::F32(values) => flex_tensor(values, shape),
            MapOutput::Bf16(values) => FlexTensor::from_data(TensorData::new(values, shape)),
        }
    }
}

/// The activation a kernel applies after the bias (the layer's own, or the one folded into it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// `out[i] = activation(values[i] + bias)` for each value of `out` (`values` at least as
    /// long), the choice of activation made once, outside the loop, so the loop vectorizes.
    #[inline(always)]
    pub fn write_with_bias(self, out: &mut [MaybeUninit<f32>], values: &[f32], bias: f32) {
        let pairs = out.iter_mut().zip(values);
        match self {
            Activation::Linear => pairs.for_each(|(o, &v)| {
                o.write(v + bias);
            }),
            Activation::Relu => pairs.for_each(|(o, &v)| {
                o.write((v + bias).max(0.0));
            }),
            Activation::Relu6 => pairs.for_each(|(o, &v)| {
                o.write((v + bias).clamp(0.0, 6.0));
            }),
        }
    }

    /// `values[i] = activation(values[i] + bias)`, the choice of activation made once, outside
    /// the loop, so the loop vectorizes.
    #[inline(always)]
    pub fn apply_with_bias(self, values: &mut [f32], bias: f32) {
        match self {
            Activation::Linear => values.iter_mut().for_each(|v| *v += bias),
            Activation::Relu => values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
            Activation::Relu6 => values
                .iter_mut()
                .for_each(|v| *v = (*v + bias).clamp(0.0, 6.0)),
        }
    }
}

/// Run `f` compiled for AVX2 + FMA when the CPU has them: the plain loops of the kernels then
/// vectorize 8 lanes wide instead of the 4 of the x86-64 baseline (SSE2) the crate is built for.
/// `f` must be inlined into the function compiled for them: pass it as `#[inline(always)] || ..`
/// and mark what it calls `#[inline(always)]`. Left out of line, a closure is compiled for the
/// baseline, and each `mul_add` in it becomes a library call (seen: the Lite0 fine-tune step
/// twice as slow in a build that happened to leave the kernels' closures out of line).
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked to have both features.
            return unsafe { run(f) };
        }
    }
    f()
}

/// Output height and width of a convolution or pooling window: `kernel` taps moved by `stride`
/// over `input` with `padding` (before, after) added, along each axis; 0 where the padded input
/// is narrower than the kernel.
pub(crate) fn output_size(
    input: [usize; 2],
    padding: [(usize, usize); 2],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [usize; 2] {
    std::array::from_fn(|axis| {
        let (before, after) = padding[axis];
        (input[axis] + before + after)
            .checked_sub(kernel[axis])
            .map_or(0, |span| span / stride[axis] + 1)
    })
}

/// Whether `t` can go through this module's operations: on the CPU backend (`Device::flex()`,
/// with or without autodiff) and in f32.
pub(crate) fn on_cpu_f32<const D: usize>(t: &burn::tensor::Tensor<D>) -> bool {
    t.device().inner() == burn::tensor::Device::flex() && t.dtype() == DType::F32
}

/// The f32 values of a CPU tensor in row-major order, borrowed where it is laid out so.
pub(crate) fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    assert_eq!(tensor.dtype(), DType::F32, "CPU kernels take f32 tensors");
    match tensor.as_slice::<f32>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(
            tensor
                .to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

/// The bf16 values of a CPU bf16 tensor in row-major order, borrowed where it is laid out so.
fn bf16_values(tensor: &FlexTensor) -> Cow<'_, [Bf16Value]> {
    match tensor.as_slice::<Bf16Value>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(
            tensor
                .to_contiguous()
                .as_slice::<Bf16Value>()
                .expect("a contiguous bf16 tensor")
                .to_vec(),
        ),
    }
}

/// A CPU tensor of `shape` holding `values` (row-major).
pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `gradient` (k x n, row-major) = `grad` (k x p) times `columns` (n x p) transposed, plus
/// `gradient` as it was when `accumulate` (a kernel gradient summed image by image, or chunk by
/// chunk), by the `gemm` crate with `parallelism`. `k` is the number of output channels.
pub(crate) fn add_gradient_product(
    gradient: &mut [f32],
    grad: &[f32],
    columns: &[f32],
    k: usize,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if k == 0 {
        return;
    }
    let (n, p) = (gradient.len() / k, grad.len() / k);
    assert!(
        n * k == gradient.len() && p * k == grad.len() && n * p == columns.len(),
        "gradient product shapes"
    );
    // SAFETY: the three buffers hold k x n, k x p and n x p values (just checked), each
    // row-major; `columns` is read transposed (p x n) through its strides.
    unsafe {
        gemm::gemm(
            k,
            n,
            p,
            gradient.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            grad.as_ptr(),
            1,
            p as isize,
            columns.as_ptr(),
            p as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// What the kernels' tests share: a deterministic fill (as values or as a tensor), reading a
/// tensor back, and the comparison.
#[cfg(test)]
pub(crate) mod test_support {
    /// A value in [-scale, scale) from index `i`, varied enough to catch misplaced elements.
    pub fn pattern(i: usize, scale: f32) -> f32 {
        ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * scale
    }

    /// A tensor of `shape` filled with [`pattern`] from `offset`, on the CPU with autodiff.
    pub fn filled<const D: usize>(
        shape: [usize; D],
        offset: usize,
        scale: f32,
    ) -> burn::tensor::Tensor<D> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| pattern(i + offset, scale)).collect();
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(values, shape),
            &burn::tensor::Device::flex().autodiff(),
        )
    }

    /// The values of a tensor, as f32.
    pub fn host<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values")
    }

    /// Largest absolute difference between two equally long slices.
    pub fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "compared outputs differ in size");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }
}
