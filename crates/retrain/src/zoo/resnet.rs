//! ResNet50 (He et al. 2015, v1 bottlenecks) as a functional graph with Keras layer names
//! (`conv1_conv`, `conv2_block1_0_conv`, ..., `conv5_block3_out`).

use super::{
    call, graph_top, input_shape, keras_file, merge, pooling_layer, Interpolation,
    PretrainedConfig, ZooEntry, ZooOptions,
};
use crate::error::Result;
use crate::layers::{
    Activation, ActivationKind, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, MaxPool2d, Merge,
    Padding, PoolConfig, PreprocessMode, ZeroPadding2d,
};
use crate::model::{input, Sequential, SymbolicTensor};

/// ResNet50: 25,636,712 parameters with the classifier (Keras's count).
pub const RESNET50: ZooEntry = ZooEntry {
    name: "resnet50",
    description: "ResNet50 v1 (Keras applications layout), caffe preprocessing",
    build: resnet50,
    pretrained,
    pytorch_names: None,
    imagenet: |include_top| {
        keras_file(
            include_top,
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                "2cb95161c43110f7111970584f804107",
            ),
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "4d473c1dd8becc155b73f8504c6f6626",
            ),
        )
    },
};

fn pretrained() -> PretrainedConfig {
    PretrainedConfig {
        input_size: [224, 224],
        transfer_input_size: None,
        crop_pct: 0.875,
        interpolation: Interpolation::Bilinear,
        preprocess: PreprocessMode::Caffe,
        weights: "Keras applications ResNet50 weights".to_string(),
    }
}

fn named(name: String) -> Option<String> {
    Some(name)
}

/// Keras' ResNet BatchNorm (epsilon 1.001e-5).
fn bn(name: String, x: &SymbolicTensor) -> Result<SymbolicTensor> {
    let config = BatchNormConfig {
        epsilon: 1.001e-5,
        ..BatchNormConfig::default()
    };
    call(BatchNorm::from_config(named(name), config), x)
}

fn relu(name: String, x: &SymbolicTensor) -> Result<SymbolicTensor> {
    call(Activation::new(named(name), ActivationKind::Relu), x)
}

fn conv(name: String, x: &SymbolicTensor, config: Conv2dConfig) -> Result<SymbolicTensor> {
    call(Conv2d::from_config(named(name), config), x)
}

/// Keras' `residual_block_v1`: 1x1 -> 3x3 -> 1x1 (4x filters), added to the input or to a
/// projected shortcut.
fn block(
    x: &SymbolicTensor,
    filters: usize,
    stride: usize,
    project: bool,
    name: &str,
) -> Result<SymbolicTensor> {
    let shortcut = if project {
        let s = conv(
            format!("{name}_0_conv"),
            x,
            Conv2dConfig::new(4 * filters, 1).strides(stride),
        )?;
        bn(format!("{name}_0_bn"), &s)?
    } else {
        x.clone()
    };
    let mut y = conv(
        format!("{name}_1_conv"),
        x,
        Conv2dConfig::new(filters, 1).strides(stride),
    )?;
    y = bn(format!("{name}_1_bn"), &y)?;
    y = relu(format!("{name}_1_relu"), &y)?;
    y = conv(
        format!("{name}_2_conv"),
        &y,
        Conv2dConfig::new(filters, 3).padding(Padding::Same),
    )?;
    y = bn(format!("{name}_2_bn"), &y)?;
    y = relu(format!("{name}_2_relu"), &y)?;
    y = conv(
        format!("{name}_3_conv"),
        &y,
        Conv2dConfig::new(4 * filters, 1),
    )?;
    y = bn(format!("{name}_3_bn"), &y)?;
    let sum = merge(Merge::add(named(format!("{name}_add"))), &[&shortcut, &y])?;
    relu(format!("{name}_out"), &sum)
}

/// Build ResNet50.
pub fn resnet50(options: &ZooOptions) -> Result<Sequential> {
    let image = input(input_shape("resnet50", options, 224)?);
    let mut x = call(
        ZeroPadding2d::new(named("conv1_pad".into()), [(3, 3), (3, 3)]),
        &image,
    )?;
    x = conv("conv1_conv".into(), &x, Conv2dConfig::new(64, 7).strides(2))?;
    x = bn("conv1_bn".into(), &x)?;
    x = relu("conv1_relu".into(), &x)?;
    x = call(
        ZeroPadding2d::new(named("pool1_pad".into()), [(1, 1), (1, 1)]),
        &x,
    )?;
    let pool = PoolConfig {
        pool: [3, 3],
        strides: [2, 2],
        padding: Padding::Valid,
    };
    x = call(MaxPool2d::from_config(named("pool1_pool".into()), pool), &x)?;
    for (stage, (filters, blocks)) in [(64, 3), (128, 4), (256, 6), (512, 3)]
        .into_iter()
        .enumerate()
    {
        let stride = if stage == 0 { 1 } else { 2 };
        for b in 1..=blocks {
            let name = format!("conv{}_block{b}", stage + 2);
            x = block(&x, filters, if b == 1 { stride } else { 1 }, b == 1, &name)?;
        }
    }
    let pooling = pooling_layer(options.pooling, true);
    x = graph_top(x, options, named("avg_pool".into()), pooling)?;
    Sequential::functional(Some("resnet50"), &image, &x)
}
