//! The kernels under training: a convolution as one Burn operation with a handwritten backward
//! pass (a Burn backend extension for the CPU backend, Flex, and Autodiff over it).
//!
//! Burn's own conv2d backward on the CPU runs a transposed convolution for the input gradient
//! and a convolution of swapped axes for the kernel gradient. Here the 3x3 convolutions run by
//! Winograd all three ways (forward, input gradient, a 3x3 convolution too, and kernel
//! gradient, see [`Conv3x3::weight_gradient`]); depthwise convolutions run the depthwise kernel both
//! ways, with the kernel gradient summed per channel and tap; 1x1 convolutions are products per
//! image all three ways, on NCHW as it lies (no transposed copies). Each is checked against
//! Burn's gradients in the tests.

use super::depthwise::Depthwise;
use super::pointwise::Pointwise;
use super::winograd::Conv3x3;
use super::{flex_tensor, values, Activation, ConvKernel, Precision};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Dispatch, Flex};
use burn::tensor::Tensor;

/// A convolution that runs with its gradients on the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainableConv {
    /// A depthwise convolution, stride 1.
    Depthwise(Depthwise),
    /// A dense 3x3 convolution, stride 1, by Winograd.
    Conv3x3(Conv3x3),
    /// A dense 1x1 convolution, stride 1, without padding.
    Pointwise(Pointwise),
}

impl TrainableConv {
    /// Whether this convolution has CPU gradients (stride 1, padding within the kernel's reach).
    pub fn has_gradients(&self) -> bool {
        match self {
            TrainableConv::Depthwise(conv) => conv.has_gradients(),
            TrainableConv::Conv3x3(conv) => conv.has_gradients(),
            TrainableConv::Pointwise(_) => true,
        }
    }

    fn output_shape(&self) -> [usize; 4] {
        match self {
            TrainableConv::Depthwise(conv) => conv.output_shape(),
            TrainableConv::Conv3x3(conv) => conv.output_shape(),
            TrainableConv::Pointwise(conv) => conv.output_shape(),
        }
    }

    fn input_shape(&self) -> [usize; 4] {
        match self {
            TrainableConv::Depthwise(conv) => {
                [conv.batch, conv.channels, conv.input[0], conv.input[1]]
            }
            TrainableConv::Conv3x3(conv) => {
                [conv.batch, conv.in_channels, conv.input[0], conv.input[1]]
            }
            TrainableConv::Pointwise(conv) => {
                [conv.batch, conv.in_channels, conv.input[0], conv.input[1]]
            }
        }
    }

    fn kernel_shape(&self) -> [usize; 4] {
        match self {
            TrainableConv::Depthwise(conv) => [conv.channels, 1, conv.kernel[0], conv.kernel[1]],
            TrainableConv::Conv3x3(conv) => [conv.out_channels, conv.in_channels, 3, 3],
            TrainableConv::Pointwise(conv) => [conv.out_channels, conv.in_channels, 1, 1],
        }
    }

    fn forward(&self, input: &[f32], kernel: &[f32]) -> Vec<f32> {
        match self {
            TrainableConv::Depthwise(conv) => {
                conv.run(input, kernel, None, Activation::Linear, Precision::F32)
            }
            TrainableConv::Conv3x3(conv) => conv.run(
                input,
                &conv.prepare_weights(kernel, Precision::F32),
                None,
                Activation::Linear,
                Precision::F32,
            ),
            TrainableConv::Pointwise(conv) => {
                conv.run(input, kernel, None, Activation::Linear, Precision::F32)
            }
        }
    }

    fn input_gradient(&self, kernel: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        match self {
            TrainableConv::Depthwise(conv) => conv.input_gradient(kernel, output_gradient),
            TrainableConv::Conv3x3(conv) => conv.input_gradient(kernel, output_gradient),
            TrainableConv::Pointwise(conv) => conv.input_gradient(kernel, output_gradient),
        }
    }

    fn weight_gradient(&self, input: &[f32], output_gradient: &[f32]) -> Vec<f32> {
        match self {
            TrainableConv::Depthwise(conv) => conv.weight_gradient(input, output_gradient),
            TrainableConv::Conv3x3(conv) => conv.weight_gradient(input, output_gradient),
            TrainableConv::Pointwise(conv) => conv.weight_gradient(input, output_gradient),
        }
    }
}

/// `x` (NCHW) convolved by `kernel` (OIHW) as `conv` says, without bias, with gradients for
/// both when they are tracked. Both must live on the CPU backend (`Device::flex()`, with or
/// without autodiff), in f32, with the shapes `conv` was made for.
pub fn conv2d(x: Tensor<4>, kernel: Tensor<4>, conv: TrainableConv) -> Tensor<4> {
    debug_assert_eq!(x.dims(), conv.input_shape(), "input shape");
    debug_assert_eq!(kernel.dims(), conv.kernel_shape(), "kernel shape");
    Tensor::from_dispatch(<Dispatch as CpuConvolution>::cpu_conv2d(
        x.into_dispatch(),
        kernel.into_dispatch(),
        conv,
    ))
}

/// The backend extension behind [`conv2d`].
#[backend_extension(Flex, Autodiff)]
pub trait CpuConvolution: burn::backend::Backend {
    /// `x` convolved by `kernel` as `conv` says.
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        conv: TrainableConv,
    ) -> FloatTensor<Self>;
}

impl CpuConvolution for Flex {
    fn cpu_conv2d(x: FlexTensor, kernel: FlexTensor, conv: TrainableConv) -> FlexTensor {
        let output = conv.forward(&values(&x), &values(&kernel));
        flex_tensor(output, conv.output_shape())
    }
}

/// The backward step of [`conv2d`]: input and kernel gradients from the output's.
#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (NodeId, NodeId, TrainableConv);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [input_node, kernel_node] = ops.parents;
        let output_gradient = grads.consume::<Flex>(&ops.node);
        let output_gradient = values(&output_gradient);
        let (input_state, kernel_state, conv) = ops.state;
        if let Some(node) = input_node {
            let kernel: FlexTensor = checkpointer.retrieve_node_output(kernel_state);
            let gradient = conv.input_gradient(&values(&kernel), &output_gradient);
            grads.register::<Flex>(node.id, flex_tensor(gradient, conv.input_shape()));
        }
        if let Some(node) = kernel_node {
            let input: FlexTensor = checkpointer.retrieve_node_output(input_state);
            let gradient = conv.weight_gradient(&values(&input), &output_gradient);
            grads.register::<Flex>(node.id, flex_tensor(gradient, conv.kernel_shape()));
        }
    }
}

impl<C: CheckpointStrategy> CpuConvolution for Autodiff<Flex, C> {
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        conv: TrainableConv,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), kernel.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let input_state = prep.checkpoint(&x);
                let kernel_state = prep.checkpoint(&kernel);
                let output = Flex::cpu_conv2d(x.into_primitive(), kernel.into_primitive(), conv);
                prep.finish((input_state, kernel_state, conv), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::cpu_conv2d(
                x.into_primitive(),
                kernel.into_primitive(),
                conv,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{filled, host, max_difference};
    use super::*;
    use burn::tensor::module;
    use burn::tensor::ops::ConvOptions;

    /// Output, input gradient and kernel gradient of `conv` against Burn's conv2d under
    /// autodiff, for a loss weighting every output differently.
    fn check(conv: TrainableConv, [(pt, pb), (pl, pr)]: [(usize, usize); 2], groups: usize) {
        let x = filled(conv.input_shape(), 0, 2.0).require_grad();
        let kernel = filled(conv.kernel_shape(), 11, 0.5).require_grad();
        let weights = filled(conv.output_shape(), 5, 1.0);

        let ours = conv2d(x.clone(), kernel.clone(), conv);
        let ours_values = host(ours.clone());
        let grads = (ours * weights.clone()).sum().backward();
        let (our_dx, our_dk) = (
            host(x.grad(&grads).unwrap()),
            host(kernel.grad(&grads).unwrap()),
        );

        let x_ref = x.clone().detach().require_grad();
        let kernel_ref = kernel.clone().detach().require_grad();
        let padded = x_ref.clone().pad([(pt, pb), (pl, pr)], 0.0);
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], groups);
        let burn = module::conv2d(padded, kernel_ref.clone(), None, options);
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
            assert!(worst < 1e-4, "{conv:?} {what}: relative difference {worst}");
        }
    }

    #[test]
    fn depthwise_gradients_equal_burns() {
        // Narrow planes (across channels, 11 = a group of eight and a partial one), wide
        // planes (plane by plane), and a kernel width the row loops are not written for.
        for (kernel, padding, input) in [
            (3, [(1, 1), (1, 1)], [7, 9]),
            (5, [(2, 2), (2, 2)], [7, 7]),
            (5, [(1, 3), (2, 2)], [6, 8]), // asymmetric, like TF SAME
            (3, [(0, 0), (0, 0)], [5, 4]),
            (3, [(1, 1), (1, 1)], [4, 18]),
            (5, [(2, 2), (1, 3)], [3, 21]),
            (4, [(1, 2), (2, 1)], [6, 6]),
        ] {
            let conv = Depthwise {
                batch: 2,
                channels: 11,
                input,
                kernel: [kernel; 2],
                stride: [1, 1],
                padding,
            };
            assert!(conv.has_gradients());
            check(TrainableConv::Depthwise(conv), padding, 11);
        }
    }

    #[test]
    fn winograd_gradients_equal_burns() {
        for (padding, input) in [
            ([(1, 1), (1, 1)], [14, 14]),
            ([(0, 0), (0, 0)], [9, 7]),
            ([(0, 1), (1, 0)], [6, 11]),
        ] {
            let conv = Conv3x3 {
                batch: 2,
                in_channels: 12,
                out_channels: 10,
                input,
                padding,
            };
            assert!(conv.has_gradients());
            check(TrainableConv::Conv3x3(conv), padding, 1);
        }
    }

    #[test]
    fn pointwise_gradients_equal_burns() {
        // Three images of 9x13, and two of a single pixel.
        for (batch, input, in_channels, out_channels) in [(3, [9, 13], 12, 8), (2, [1, 1], 5, 7)] {
            let conv = Pointwise {
                batch,
                in_channels,
                out_channels,
                input,
            };
            check(TrainableConv::Pointwise(conv), [(0, 0); 2], 1);
        }
    }

    #[test]
    fn strided_depthwise_has_no_cpu_gradients() {
        let conv = Depthwise {
            batch: 1,
            channels: 1,
            input: [8, 8],
            kernel: [3, 3],
            stride: [2, 2],
            padding: [(0, 1), (0, 1)],
        };
        assert!(!TrainableConv::Depthwise(conv).has_gradients());
    }
}
