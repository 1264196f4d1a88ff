//! MobileNetV2 (Sandler et al. 2018) as a functional graph with Keras layer names (`Conv1`,
//! `expanded_conv_depthwise`, `block_1_expand`, ..., `block_16_project_BN`, `out_relu`), for the
//! width multipliers (alpha) Keras ships.

use super::{
    call, graph_top, input_shape, merge, no_download, pooling_layer, Interpolation,
    PretrainedConfig, ZooEntry, ZooOptions,
};
use crate::error::Result;
use crate::layers::{
    Activation, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Merge, Padding, PreprocessMode,
    ZeroPadding2d,
};
use crate::model::{input, Sequential, SymbolicTensor};

/// MobileNetV2 (alpha 1.0): 3,538,984 parameters with the classifier (Keras's count).
pub const MOBILENET_V2: ZooEntry = ZooEntry {
    name: "mobilenet_v2",
    description: "MobileNetV2 alpha 1.0 (Keras applications layout), tf preprocessing",
    build: |options| mobilenet_v2(1.0, options),
    pretrained,
    pytorch_names: None,
    // Keras publishes no checksum for the MobileNetV2 files; give them with --weights FILE.
    imagenet: no_download,
};

/// MobileNetV2 with alpha 0.35: 1,691,208 parameters with the classifier.
pub const MOBILENET_V2_035: ZooEntry = ZooEntry {
    name: "mobilenet_v2_035",
    description: "MobileNetV2 alpha 0.35 (Keras applications layout), tf preprocessing",
    build: |options| mobilenet_v2(0.35, options),
    pretrained,
    pytorch_names: None,
    // Keras publishes no checksum for the MobileNetV2 files; give them with --weights FILE.
    imagenet: no_download,
};

fn pretrained() -> PretrainedConfig {
    PretrainedConfig {
        input_size: [224, 224],
        transfer_input_size: None,
        crop_pct: 0.875,
        interpolation: Interpolation::Bilinear,
        preprocess: PreprocessMode::Tf,
        weights: "Keras applications MobileNetV2 weights".to_string(),
    }
}

/// Keras' `_make_divisible`: round to a multiple of 8, never more than 10% down.
fn make_divisible(value: f64) -> usize {
    let divisor = 8.0;
    let mut rounded = ((value + divisor / 2.0) / divisor).floor() * divisor;
    rounded = rounded.max(divisor);
    if rounded < 0.9 * value {
        rounded += divisor;
    }
    rounded as usize
}

fn bn(name: String, x: &SymbolicTensor) -> Result<SymbolicTensor> {
    let config = BatchNormConfig {
        momentum: 0.999,
        epsilon: 1e-3,
        ..BatchNormConfig::default()
    };
    call(BatchNorm::from_config(Some(name), config), x)
}

/// Keras' `ReLU(6.)` layer.
fn relu6(name: String, x: &SymbolicTensor) -> Result<SymbolicTensor> {
    call(Activation::relu(Some(name), Some(6.0))?, x)
}

fn conv(name: String, x: &SymbolicTensor, config: Conv2dConfig) -> Result<SymbolicTensor> {
    call(Conv2d::from_config(Some(name), config.bias(false)), x)
}

/// Keras' `correct_pad` for a 3x3 stride-2 window: one row and column more at the end when the
/// size is even or unknown.
fn correct_pad(x: &SymbolicTensor) -> [(usize, usize); 2] {
    let side = |size: Option<usize>| match size {
        Some(n) if n % 2 == 1 => (1, 1),
        _ => (0, 1),
    };
    match x.shape() {
        crate::shape::Shape::Image { height, width, .. } => [side(height), side(width)],
        crate::shape::Shape::Vector(_) => [(0, 1), (0, 1)],
    }
}

/// Keras' `_inverted_res_block`.
fn inverted_residual(
    x: &SymbolicTensor,
    filters: usize,
    alpha: f64,
    stride: usize,
    expansion: usize,
    block: usize,
) -> Result<SymbolicTensor> {
    let in_channels = x.shape().channels();
    let out_channels = make_divisible((filters as f64 * alpha).trunc());
    let prefix = if block == 0 {
        "expanded_conv_".to_string()
    } else {
        format!("block_{block}_")
    };
    let mut y = x.clone();
    if block != 0 {
        y = conv(
            format!("{prefix}expand"),
            &y,
            Conv2dConfig::new(expansion * in_channels, 1).padding(Padding::Same),
        )?;
        y = bn(format!("{prefix}expand_BN"), &y)?;
        y = relu6(format!("{prefix}expand_relu"), &y)?;
    }
    let padding = if stride == 2 {
        y = call(
            ZeroPadding2d::new(Some(format!("{prefix}pad")), correct_pad(&y)),
            &y,
        )?;
        Padding::Valid
    } else {
        Padding::Same
    };
    y = conv(
        format!("{prefix}depthwise"),
        &y,
        Conv2dConfig::depthwise(3).strides(stride).padding(padding),
    )?;
    y = bn(format!("{prefix}depthwise_BN"), &y)?;
    y = relu6(format!("{prefix}depthwise_relu"), &y)?;
    y = conv(
        format!("{prefix}project"),
        &y,
        Conv2dConfig::new(out_channels, 1).padding(Padding::Same),
    )?;
    y = bn(format!("{prefix}project_BN"), &y)?;
    if in_channels == out_channels && stride == 1 {
        y = merge(Merge::add(Some(format!("{prefix}add"))), &[x, &y])?;
    }
    Ok(y)
}

/// (filters, stride, expansion) of the 17 inverted residual blocks.
const BLOCKS: [(usize, usize, usize); 17] = [
    (16, 1, 1),
    (24, 2, 6),
    (24, 1, 6),
    (32, 2, 6),
    (32, 1, 6),
    (32, 1, 6),
    (64, 2, 6),
    (64, 1, 6),
    (64, 1, 6),
    (64, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (160, 2, 6),
    (160, 1, 6),
    (160, 1, 6),
    (320, 1, 6),
];

/// Build MobileNetV2 with width multiplier `alpha`.
pub fn mobilenet_v2(alpha: f64, options: &ZooOptions) -> Result<Sequential> {
    let name = if alpha == 1.0 {
        "mobilenetv2_1.00_224".to_string()
    } else {
        format!("mobilenetv2_{alpha:.2}_224")
    };
    let image = input(input_shape(&name, options, 224)?);
    let mut x = conv(
        "Conv1".into(),
        &image,
        Conv2dConfig::new(make_divisible(32.0 * alpha), 3)
            .strides(2)
            .padding(Padding::Same),
    )?;
    x = bn("bn_Conv1".into(), &x)?;
    x = relu6("Conv1_relu".into(), &x)?;
    for (block, &(filters, stride, expansion)) in BLOCKS.iter().enumerate() {
        x = inverted_residual(&x, filters, alpha, stride, expansion, block)?;
    }
    let last = if alpha > 1.0 {
        make_divisible(1280.0 * alpha)
    } else {
        1280
    };
    x = conv("Conv_1".into(), &x, Conv2dConfig::new(last, 1))?;
    x = bn("Conv_1_bn".into(), &x)?;
    x = relu6("out_relu".into(), &x)?;
    x = graph_top(x, options, None, pooling_layer(options.pooling, false))?;
    Sequential::functional(Some(&name), &image, &x)
}
