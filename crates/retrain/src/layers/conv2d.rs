//! 2-D convolution: standard, grouped and depthwise, with valid / same (TF-SAME) / fixed padding.

use super::{
    ActivationKind, Batch, Context, LayerBase, LayerKind, LayerSpec, LazyVariables, Padding,
};
use crate::error::{Error, Result};
use crate::kernels::backprop::{self, TrainableConv};
use crate::kernels::depthwise::Depthwise;
use crate::kernels::im2col::Im2col;
use crate::kernels::pointwise::Pointwise;
use crate::kernels::winograd::Conv3x3;
use crate::kernels::{self, Activation, ConvKernel, PreparedConv, PreparedWeights};
use crate::layers::Layer;
use crate::shape::{check_window, window_output, Shape};
use crate::variable::{Initializer, Variable};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

/// Below this many input channels Burn's direct convolution is as fast as Winograd.
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// Largest gathered input (elements) [`conv_as_matmul`] builds; autodiff keeps it for the
/// kernel gradient, so larger maps (VGG's first blocks at batch 32: ~1e9) stay with conv2d.
/// 64 Mi elements = 256 MiB; VGG16 block5 at batch 8 needs 7.2 Mi.
const MATMUL_MAX_COLUMNS: usize = 64 << 20;
use serde::{Deserialize, Serialize};

/// Configuration of a [`Conv2d`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dConfig {
    /// Output channels; `None` for a depthwise convolution (output = input channels × multiplier).
    pub filters: Option<usize>,
    /// Depthwise channel multiplier (only for depthwise).
    pub depth_multiplier: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub strides: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
    /// Padding rule.
    pub padding: Padding,
    /// Channel groups for a standard convolution (1 = dense).
    pub groups: usize,
    /// Whether a bias is added.
    pub use_bias: bool,
    /// Activation applied after the bias.
    pub activation: ActivationKind,
}

impl Conv2dConfig {
    /// A standard convolution with `filters` outputs and a square `kernel`, stride 1, valid
    /// padding, bias and no activation (Keras' defaults).
    pub fn new(filters: usize, kernel: usize) -> Self {
        Conv2dConfig {
            filters: Some(filters),
            depth_multiplier: 1,
            kernel: [kernel, kernel],
            strides: [1, 1],
            dilation: [1, 1],
            padding: Padding::Valid,
            groups: 1,
            use_bias: true,
            activation: ActivationKind::Linear,
        }
    }

    /// A depthwise convolution (one filter per input channel), like Keras `DepthwiseConv2D`.
    pub fn depthwise(kernel: usize) -> Self {
        Conv2dConfig {
            filters: None,
            ..Conv2dConfig::new(0, kernel)
        }
    }

    /// Set the stride.
    pub fn strides(mut self, stride: usize) -> Self {
        self.strides = [stride, stride];
        self
    }

    /// Set the padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Set the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = [dilation, dilation];
        self
    }

    /// Set the groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Use or drop the bias.
    pub fn bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// Set the activation.
    pub fn activation(mut self, activation: ActivationKind) -> Self {
        self.activation = activation;
        self
    }
}

/// Keras `Conv2D` / `DepthwiseConv2D`. Kernel stored `[out, in/groups, kh, kw]`.
pub struct Conv2d {
    base: LayerBase,
    config: Conv2dConfig,
    variables: LazyVariables,
}

impl Conv2d {
    /// A convolution; `name` defaults to `conv2d` / `depthwise_conv2d` with a counter.
    pub fn from_config(name: Option<String>, config: Conv2dConfig) -> Self {
        let prefix = if config.filters.is_none() {
            "depthwise_conv2d"
        } else {
            "conv2d"
        };
        Conv2d {
            base: LayerBase::new(name, prefix),
            config,
            variables: LazyVariables::default(),
        }
    }

    /// Output channels and groups for `in_channels` inputs.
    fn layout(&self, in_channels: usize) -> Result<(usize, usize)> {
        let c = &self.config;
        let (out, groups) = match c.filters {
            None => (
                in_channels.checked_mul(c.depth_multiplier).unwrap_or(0),
                in_channels,
            ),
            Some(f) => (f, c.groups),
        };
        if groups == 0
            || !in_channels.is_multiple_of(groups)
            || !out.is_multiple_of(groups)
            || out == 0
        {
            return Err(Error::shape(
                self.name(),
                format!("{in_channels} input channels and {out} filters do not split into {groups} groups"),
            ));
        }
        Ok((out, groups))
    }
}

/// A stride-1, single-group convolution as one matrix product over all pixels of the batch:
/// out channels x (in channels x taps) times (in channels x taps) x (batch x pixels), the
/// right-hand side gathered from shifted views of the padded input (im2col; a 1x1 kernel needs
/// none). Its gradients are then two large products, where Burn's conv2d backward runs a
/// transposed convolution and a convolution of swapped batch and channel axes, one small product
/// per image.
fn conv_as_matmul(
    x: Tensor<4>,
    kernel: Tensor<4>,
    bias: Option<Tensor<1>>,
    padding: [(usize, usize); 2],
) -> Tensor<4> {
    let [batch, channels, _, _] = x.dims();
    let [out, _, kh, kw] = kernel.dims();
    let x = match padding {
        [(0, 0), (0, 0)] => x,
        padding => x.pad(padding, 0.0),
    };
    let [_, _, h, w] = x.dims();
    let (oh, ow) = (h + 1 - kh, w + 1 - kw);
    let rows = channels * kh * kw;
    let columns = if kh * kw == 1 {
        x.swap_dims(0, 1).reshape([rows, batch * oh * ow])
    } else {
        let taps: Vec<Tensor<5>> = (0..kh)
            .flat_map(|dy| (0..kw).map(move |dx| (dy, dx)))
            .map(|(dy, dx)| {
                x.clone()
                    .slice([0..batch, 0..channels, dy..dy + oh, dx..dx + ow])
                    .unsqueeze_dim(2)
            })
            .collect();
        // [batch, channels, taps, oh, ow] -> [channels, taps, batch, oh, ow]: the kernel's
        // (in channel, tap) order down, (image, pixel) across.
        Tensor::cat(taps, 2)
            .swap_dims(0, 1)
            .swap_dims(1, 2)
            .reshape([rows, batch * oh * ow])
    };
    let mut y = kernel.reshape([out, rows]).matmul(columns);
    if let Some(bias) = bias {
        y = y + bias.reshape([out, 1]);
    }
    y.reshape([out, batch, oh, ow]).swap_dims(0, 1)
}

impl Conv2d {
    /// Whether [`conv_as_matmul`] should run this convolution: gradients are wanted, on the CPU
    /// (where Burn's conv2d backward is slow; GPU backends keep their own), for a stride-1 dense
    /// convolution whose gathered input stays within [`MATMUL_MAX_COLUMNS`].
    fn matmul_pays(
        x: &Tensor<4>,
        kernel: &Tensor<4>,
        groups: usize,
        c: &Conv2dConfig,
        [(pt, pb), (pl, pr)]: [(usize, usize); 2],
    ) -> bool {
        let [batch, channels, h, w] = x.dims();
        let [kh, kw] = c.kernel;
        let columns = (channels * kh * kw)
            * batch
            * (h + pt + pb + 1).saturating_sub(kh)
            * (w + pl + pr + 1).saturating_sub(kw);
        c.strides == [1, 1]
            && c.dilation == [1, 1]
            && groups == 1
            && (x.is_tracked() || kernel.is_tracked())
            && x.device().inner() == Device::flex()
            && columns <= MATMUL_MAX_COLUMNS
    }

    /// The CPU kernels with gradients ([`backprop`]) for this convolution, where they apply:
    /// gradients wanted, on the CPU, stride 1, and either depthwise, a dense 1x1 one without
    /// padding, or a dense 3x3 one with at least [`WINOGRAD_MIN_CHANNELS`] inputs.
    fn trainable_kernel(
        x: &Tensor<4>,
        kernel: &Tensor<4>,
        c: &Conv2dConfig,
        padding: [(usize, usize); 2],
    ) -> Option<TrainableConv> {
        let [batch, channels, h, w] = x.dims();
        let [out, per_group, _, _] = kernel.dims();
        if !(x.is_tracked() || kernel.is_tracked())
            || !kernels::on_cpu_f32(x)
            || !kernels::on_cpu_f32(kernel)
            || c.strides != [1, 1]
            || c.dilation != [1, 1]
        {
            return None;
        }
        let conv = if c.filters.is_none() && out == channels && per_group == 1 {
            TrainableConv::Depthwise(Depthwise {
                batch,
                channels,
                input: [h, w],
                kernel: c.kernel,
                stride: c.strides,
                padding,
            })
        } else if c.kernel == [1, 1] && per_group == channels && padding == [(0, 0); 2] {
            TrainableConv::Pointwise(Pointwise {
                batch,
                in_channels: channels,
                out_channels: out,
                input: [h, w],
            })
        } else if c.kernel == [3, 3] && per_group == channels && channels >= WINOGRAD_MIN_CHANNELS {
            TrainableConv::Conv3x3(Conv3x3 {
                batch,
                in_channels: channels,
                out_channels: out,
                input: [h, w],
                padding,
            })
        } else {
            return None;
        };
        conv.has_gradients().then_some(conv)
    }

    /// The padding (before, after) of each axis for an input of `hw`.
    fn padding_amounts(&self, [h, w]: [usize; 2]) -> [(usize, usize); 2] {
        let c = &self.config;
        [
            c.padding
                .amounts(0, h, c.kernel[0], c.strides[0], c.dilation[0]),
            c.padding
                .amounts(1, w, c.kernel[1], c.strides[1], c.dilation[1]),
        ]
    }

    /// The CPU inference kernel for this convolution on `x`, if one applies: Winograd for 3x3
    /// stride-1 dense convolutions, the fused pointwise kernel for 1x1 stride-1 dense ones, the
    /// fused depthwise kernel for one filter per channel, im2col for the other dense ones.
    /// `None` where Burn's `conv2d` runs (training, other devices or dtypes, dilation, groups,
    /// depth multipliers, a softmax activation).
    fn cpu_kernel(
        &self,
        x: &Tensor<4>,
        groups: usize,
        padding: [(usize, usize); 2],
        ctx: &Context,
    ) -> Option<(Box<dyn ConvKernel>, Activation)> {
        if x.device() != Device::flex() {
            return None;
        }
        let (kernel, activation) = self.cpu_kernel_for(x.dims(), groups, padding, ctx)?;
        match x.dtype() {
            DType::F32 => Some((kernel, activation)),
            DType::BF16 if kernel.reads_bf16(ctx.precision) => Some((kernel, activation)),
            _ => None,
        }
    }

    /// [`Conv2d::cpu_kernel`] for an f32 CPU input of `dims`.
    fn cpu_kernel_for(
        &self,
        dims: [usize; 4],
        groups: usize,
        padding: [(usize, usize); 2],
        ctx: &Context,
    ) -> Option<(Box<dyn ConvKernel>, Activation)> {
        let c = &self.config;
        let activation = c.activation.kernel()?;
        let [batch, in_channels, h, w] = dims;
        if ctx.training || c.dilation != [1, 1] {
            return None;
        }
        let kernel: Box<dyn ConvKernel> = if c.filters.is_none() {
            if c.depth_multiplier != 1 {
                return None;
            }
            Box::new(Depthwise {
                batch,
                channels: in_channels,
                input: [h, w],
                kernel: c.kernel,
                stride: c.strides,
                padding,
            })
        } else if groups != 1 {
            return None;
        } else if c.kernel == [1, 1] && c.strides == [1, 1] && padding == [(0, 0); 2] {
            Box::new(Pointwise {
                batch,
                in_channels,
                out_channels: c.filters?,
                input: [h, w],
            })
        } else if c.kernel == [3, 3] && c.strides == [1, 1] && in_channels >= WINOGRAD_MIN_CHANNELS
        {
            Box::new(Conv3x3 {
                batch,
                in_channels,
                out_channels: c.filters?,
                input: [h, w],
                padding,
            })
        } else {
            Box::new(Im2col {
                batch,
                in_channels,
                out_channels: c.filters?,
                input: [h, w],
                kernel: c.kernel,
                stride: c.strides,
                padding,
            })
        };
        Some((kernel, activation))
    }

    /// Run `kernel` on `x`, its values read in place, the products at `precision`.
    fn run_cpu_kernel(
        &self,
        x: Tensor<4>,
        kernel_var: &Variable,
        kernel: &dyn ConvKernel,
        activation: Activation,
        ctx: &Context,
    ) -> Result<Tensor<4>> {
        let device = x.device();
        let precision = kernel.products_precision(ctx.precision);
        // Half the bytes through memory where the one reader of the output takes bf16 (its
        // products would round the values to bf16 anyway, or it reads them as the products
        // of this layer rounded them).
        let bf16_output = kernel.writes_bf16(precision)
            && ctx.consumer().is_some_and(|reader| {
                let [n, c, h, w] = kernel.output_shape();
                reader.reads_bf16_maps([n, c, h, w], ctx)
            });
        let bias = match self.config.use_bias {
            true => Some(self.variables.get(self.name(), 1)?.to_vec(&device)),
            false => None,
        };
        let weights = kernel_var.derived(&device, precision as u64, |w| {
            let mut w = w.to_vec();
            precision.round(&mut w);
            PreparedWeights::new(kernel, &w, precision)
        });
        Ok(kernels::convolve(
            x,
            PreparedConv {
                kernel,
                weights: &weights,
                bias: bias.as_deref(),
                activation,
                precision,
                bf16_output,
            },
        ))
    }
}

impl Layer for Conv2d {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        if self.config.filters.is_none() {
            "DepthwiseConv2D"
        } else {
            "Conv2D"
        }
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        let (height, width, channels) = input.maps(self.name())?;
        let c = &self.config;
        check_window(self.name(), c.kernel, c.strides, c.dilation)?;
        let (out, groups) = self.layout(channels)?;
        let oh = window_output(
            0,
            height,
            c.kernel[0],
            c.strides[0],
            c.dilation[0],
            c.padding,
        );
        let ow = window_output(
            1,
            width,
            c.kernel[1],
            c.strides[1],
            c.dilation[1],
            c.padding,
        );
        if (height.is_some() && oh.is_none()) || (width.is_some() && ow.is_none()) {
            return Err(Error::shape(
                self.name(),
                format!("input {input} is smaller than the {:?} kernel", c.kernel),
            ));
        }
        self.variables.ensure(self.name(), channels, || {
            let fan_in = channels / groups * c.kernel[0] * c.kernel[1];
            let fan_out = out / groups * c.kernel[0] * c.kernel[1];
            let mut vars = vec![Variable::new(
                format!("{}/kernel", self.name()),
                vec![out, channels / groups, c.kernel[0], c.kernel[1]],
                true,
                Initializer::GlorotUniform { fan_in, fan_out },
            )];
            if c.use_bias {
                vars.push(Variable::new(
                    format!("{}/bias", self.name()),
                    vec![out],
                    true,
                    Initializer::Zeros,
                ));
            }
            vars
        })?;
        Ok(Shape::image(oh, ow, out))
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        let x = x.into_maps(self.name())?;
        let [_, channels, h, w] = x.dims();
        let c = &self.config;
        let (_, groups) = self.layout(channels)?;
        let trainable = self.trainable();
        let kernel_var = self.variables.get(self.name(), 0)?;
        if kernel_var.shape()[1] * groups != channels {
            return Err(Error::shape(
                self.name(),
                format!(
                    "was built for {} input channels, got {channels}",
                    kernel_var.shape()[1] * groups
                ),
            ));
        }
        let [ph, pw] = self.padding_amounts([h, w]);
        if let Some((kernel, activation)) = self.cpu_kernel(&x, groups, [ph, pw], ctx) {
            return Ok(Batch::Maps(self.run_cpu_kernel(
                x,
                &kernel_var,
                kernel.as_ref(),
                activation,
                ctx,
            )?));
        }
        let x = ctx.precision.round_tensor(x);
        let kernel = ctx
            .precision
            .round_tensor(ctx.weight::<4>(&kernel_var, trainable));
        let bias = if c.use_bias {
            Some(ctx.weight::<1>(&self.variables.get(self.name(), 1)?, trainable))
        } else {
            None
        };
        let y = if let Some(conv) = Self::trainable_kernel(&x, &kernel, c, [ph, pw]) {
            let y = backprop::conv2d(x, kernel, conv);
            match bias {
                Some(bias) => y + bias.reshape([1, -1, 1, 1]),
                None => y,
            }
        } else if Self::matmul_pays(&x, &kernel, groups, c, [ph, pw]) {
            conv_as_matmul(x, kernel, bias, [ph, pw])
        } else {
            let options = ConvOptions::new_with_padding(c.strides, [ph, pw], c.dilation, groups);
            conv2d(x, kernel, bias, options)
        };
        Ok(Batch::Maps(c.activation.apply(y)))
    }

    /// Where the CPU kernel for these maps takes bf16 input ([`ConvKernel::reads_bf16`]).
    fn reads_bf16_maps(&self, dims: [usize; 4], ctx: &Context) -> bool {
        let [_, channels, h, w] = dims;
        if ctx.device != Device::flex() {
            return false;
        }
        let Ok((_, groups)) = self.layout(channels) else {
            return false;
        };
        let padding = self.padding_amounts([h, w]);
        self.cpu_kernel_for(dims, groups, padding, ctx)
            .is_some_and(|(kernel, _)| kernel.reads_bf16(ctx.precision))
    }

    fn variables(&self) -> Vec<Variable> {
        self.variables.all()
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Conv2d(self.config.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::max_difference;
    use burn::tensor::TensorData;

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    /// The matrix-product path is taken for gradients on the CPU, not for plain inference, and
    /// not when the gathered input would be too large.
    #[test]
    fn matmul_runs_where_gradients_are_wanted_and_the_columns_fit() {
        let device = Device::flex().autodiff();
        let config = Conv2dConfig::new(8, 3);
        let same = [(1, 1), (1, 1)];
        let x = Tensor::<4>::zeros([2, 4, 14, 14], &device);
        let kernel = Tensor::<4>::zeros([8, 4, 3, 3], &device);
        assert!(!Conv2d::matmul_pays(&x, &kernel, 1, &config, same));
        let tracked = kernel.require_grad();
        assert!(Conv2d::matmul_pays(&x, &tracked, 1, &config, same));
        let strided = Conv2dConfig::new(8, 3).strides(2);
        assert!(!Conv2d::matmul_pays(&x, &tracked, 1, &strided, same));
        // VGG16's block1_conv2 at batch 32: 576 x 32 x 224 x 224 gathered values.
        let large = Tensor::<4>::empty([32, 64, 224, 224], &device);
        let kernel = Tensor::<4>::zeros([64, 64, 3, 3], &device).require_grad();
        assert!(!Conv2d::matmul_pays(&large, &kernel, 1, &config, same));
    }

    /// The training path's matrix-product convolution gives Burn's conv2d values and gradients
    /// (input, kernel, bias) for 1x1, 3x3 with TF-SAME's asymmetric padding, and 5x5 kernels.
    #[test]
    fn conv_as_matmul_has_conv2d_values_and_gradients() {
        let device = Device::flex().autodiff();
        let tensor = |shape: [usize; 4], seed: usize| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        for (k, padding, cin, cout) in [
            (1, [(0, 0), (0, 0)], 6, 3),
            (3, [(1, 1), (1, 1)], 5, 7),
            (3, [(0, 1), (1, 0)], 4, 6),
            (5, [(2, 2), (2, 2)], 3, 4),
        ] {
            let x = tensor([2, cin, 7, 9], 1);
            let kernel = tensor([cout, cin, k, k], 2);
            let bias = Tensor::<1>::from_data(
                TensorData::new((0..cout).map(|i| i as f32 * 0.1).collect(), [cout]),
                &device,
            );
            let run = |matmul: bool| {
                let (x, kernel, bias) = (
                    x.clone().require_grad(),
                    kernel.clone().require_grad(),
                    bias.clone().require_grad(),
                );
                let y = if matmul {
                    conv_as_matmul(x.clone(), kernel.clone(), Some(bias.clone()), padding)
                } else {
                    let options = ConvOptions::new_with_padding([1, 1], padding, [1, 1], 1);
                    conv2d(x.clone(), kernel.clone(), Some(bias.clone()), options)
                };
                // Weight each output differently so every gradient entry matters.
                let weights = tensor(y.dims(), 3);
                let grads = (y.clone() * weights).sum().backward();
                let bias_grad = bias.grad(&grads).unwrap();
                let nb = bias_grad.dims()[0];
                (
                    host(y.inner()),
                    host(x.grad(&grads).unwrap()),
                    host(kernel.grad(&grads).unwrap()),
                    host(bias_grad.reshape([1, 1, 1, nb])),
                )
            };
            let (want, got) = (run(false), run(true));
            for (what, a, b) in [
                ("output", &want.0, &got.0),
                ("input gradient", &want.1, &got.1),
                ("kernel gradient", &want.2, &got.2),
                ("bias gradient", &want.3, &got.3),
            ] {
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = max_difference(a, b);
                assert!(
                    scale > 0.0 && diff <= 1e-5 * scale,
                    "{k}x{k} {padding:?} {what}: {diff} of {scale}"
                );
            }
        }
    }
}
