//! InceptionV3 (Szegedy et al. 2015) as a functional graph, named as Keras names it in a fresh
//! session (`conv2d`, `conv2d_1`, ..., `batch_normalization_93`, `mixed0` .. `mixed10`), so
//! Keras weight files and summaries line up. 299x299, tf preprocessing.

use super::{
    call, graph_top, input_shape, keras_file, merge, Interpolation, Pooling, PretrainedConfig,
    ZooEntry, ZooOptions,
};
use crate::error::Result;
use crate::layers::{
    Activation, ActivationKind, AvgPool2d, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig,
    GlobalAveragePooling2d, GlobalMaxPooling2d, LayerRef, MaxPool2d, Merge, Padding, PoolConfig,
    PreprocessMode,
};
use crate::model::{input, Sequential, SymbolicTensor};
use std::collections::HashMap;
use std::sync::Arc;

/// InceptionV3: 23,851,784 parameters with the classifier (Keras's count).
pub const INCEPTION_V3: ZooEntry = ZooEntry {
    name: "inception_v3",
    description: "InceptionV3 (Keras applications layout), 299x299, tf preprocessing",
    build: inception_v3,
    pretrained,
    pytorch_names: None,
    imagenet: |include_top| {
        keras_file(
            include_top,
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                "9a0d58056eeedaa3f26cb7ebd46da564",
            ),
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "bcbd6486424b2319ff4ef7d526e38f63",
            ),
        )
    },
};

fn pretrained() -> PretrainedConfig {
    PretrainedConfig {
        input_size: [299, 299],
        transfer_input_size: None,
        crop_pct: 0.875,
        interpolation: Interpolation::Bilinear,
        preprocess: PreprocessMode::Tf,
        weights: "Keras applications InceptionV3 weights".to_string(),
    }
}

/// Keras' automatic names in a fresh session: `conv2d`, `conv2d_1`, ...
#[derive(Default)]
struct Names(HashMap<&'static str, usize>);

impl Names {
    fn next(&mut self, prefix: &'static str) -> Option<String> {
        let n = self.0.entry(prefix).or_insert(0);
        let name = match *n {
            0 => prefix.to_string(),
            k => format!("{prefix}_{k}"),
        };
        *n += 1;
        Some(name)
    }
}

/// Keras' `conv2d_bn`: convolution without bias, BatchNorm without scale, ReLU.
fn conv_bn(
    names: &mut Names,
    x: &SymbolicTensor,
    filters: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: Padding,
) -> Result<SymbolicTensor> {
    let mut config = Conv2dConfig::new(filters, 1)
        .strides(stride)
        .padding(padding)
        .bias(false);
    config.kernel = kernel;
    let y = call(Conv2d::from_config(names.next("conv2d"), config), x)?;
    let bn = BatchNormConfig {
        scale: false,
        ..BatchNormConfig::default()
    };
    let y = call(
        BatchNorm::from_config(names.next("batch_normalization"), bn),
        &y,
    )?;
    call(
        Activation::new(names.next("activation"), ActivationKind::Relu),
        &y,
    )
}

/// `conv_bn` with "same" padding and stride 1, the common case.
fn same(
    names: &mut Names,
    x: &SymbolicTensor,
    filters: usize,
    kh: usize,
    kw: usize,
) -> Result<SymbolicTensor> {
    conv_bn(names, x, filters, [kh, kw], 1, Padding::Same)
}

/// The 3x3 max pool (stride 2, valid) of the reduction steps, or the 3x3 stride-1 "same"
/// average pool of the pooling branches.
fn pool(names: &mut Names, x: &SymbolicTensor, max: bool) -> Result<SymbolicTensor> {
    let (stride, padding) = if max {
        (2, Padding::Valid)
    } else {
        (1, Padding::Same)
    };
    let config = PoolConfig {
        pool: [3, 3],
        strides: [stride, stride],
        padding,
    };
    if max {
        call(
            MaxPool2d::from_config(names.next("max_pooling2d"), config),
            x,
        )
    } else {
        call(
            AvgPool2d::from_config(names.next("average_pooling2d"), config),
            x,
        )
    }
}

fn concat(name: Option<String>, parts: &[&SymbolicTensor]) -> Result<SymbolicTensor> {
    merge(Merge::concatenate(name), parts)
}

/// Build InceptionV3.
pub fn inception_v3(options: &ZooOptions) -> Result<Sequential> {
    let n = &mut Names::default();
    let image = input(input_shape("inception_v3", options, 299)?);
    let mut x = conv_bn(n, &image, 32, [3, 3], 2, Padding::Valid)?;
    x = conv_bn(n, &x, 32, [3, 3], 1, Padding::Valid)?;
    x = same(n, &x, 64, 3, 3)?;
    x = pool(n, &x, true)?;
    x = conv_bn(n, &x, 80, [1, 1], 1, Padding::Valid)?;
    x = conv_bn(n, &x, 192, [3, 3], 1, Padding::Valid)?;
    x = pool(n, &x, true)?;

    // mixed0..2: 35x35.
    for (i, pool_filters) in [32, 64, 64].into_iter().enumerate() {
        let b1 = same(n, &x, 64, 1, 1)?;
        let b5 = same(n, &x, 48, 1, 1)?;
        let b5 = same(n, &b5, 64, 5, 5)?;
        let b3 = same(n, &x, 64, 1, 1)?;
        let b3 = same(n, &b3, 96, 3, 3)?;
        let b3 = same(n, &b3, 96, 3, 3)?;
        let bp = pool(n, &x, false)?;
        let bp = same(n, &bp, pool_filters, 1, 1)?;
        x = concat(Some(format!("mixed{i}")), &[&b1, &b5, &b3, &bp])?;
    }

    // mixed3: to 17x17.
    let b3 = conv_bn(n, &x, 384, [3, 3], 2, Padding::Valid)?;
    let bd = same(n, &x, 64, 1, 1)?;
    let bd = same(n, &bd, 96, 3, 3)?;
    let bd = conv_bn(n, &bd, 96, [3, 3], 2, Padding::Valid)?;
    let bp = pool(n, &x, true)?;
    x = concat(Some("mixed3".into()), &[&b3, &bd, &bp])?;

    // mixed4..7: 17x17 with factorized 7x7 convolutions.
    for (i, width) in [128, 160, 160, 192].into_iter().enumerate() {
        let b1 = same(n, &x, 192, 1, 1)?;
        let b7 = same(n, &x, width, 1, 1)?;
        let b7 = same(n, &b7, width, 1, 7)?;
        let b7 = same(n, &b7, 192, 7, 1)?;
        let bd = same(n, &x, width, 1, 1)?;
        let bd = same(n, &bd, width, 7, 1)?;
        let bd = same(n, &bd, width, 1, 7)?;
        let bd = same(n, &bd, width, 7, 1)?;
        let bd = same(n, &bd, 192, 1, 7)?;
        let bp = pool(n, &x, false)?;
        let bp = same(n, &bp, 192, 1, 1)?;
        x = concat(Some(format!("mixed{}", 4 + i)), &[&b1, &b7, &bd, &bp])?;
    }

    // mixed8: to 8x8.
    let b3 = same(n, &x, 192, 1, 1)?;
    let b3 = conv_bn(n, &b3, 320, [3, 3], 2, Padding::Valid)?;
    let b7 = same(n, &x, 192, 1, 1)?;
    let b7 = same(n, &b7, 192, 1, 7)?;
    let b7 = same(n, &b7, 192, 7, 1)?;
    let b7 = conv_bn(n, &b7, 192, [3, 3], 2, Padding::Valid)?;
    let bp = pool(n, &x, true)?;
    x = concat(Some("mixed8".into()), &[&b3, &b7, &bp])?;

    // mixed9, mixed10: 8x8 with split 1x3 / 3x1 branches.
    for i in 0..2 {
        let b1 = same(n, &x, 320, 1, 1)?;
        let b3 = same(n, &x, 384, 1, 1)?;
        let b3a = same(n, &b3, 384, 1, 3)?;
        let b3b = same(n, &b3, 384, 3, 1)?;
        let b3 = concat(Some(format!("mixed9_{i}")), &[&b3a, &b3b])?;
        let bd = same(n, &x, 448, 1, 1)?;
        let bd = same(n, &bd, 384, 3, 3)?;
        let bda = same(n, &bd, 384, 1, 3)?;
        let bdb = same(n, &bd, 384, 3, 1)?;
        let bd = concat(n.next("concatenate"), &[&bda, &bdb])?;
        let bp = pool(n, &x, false)?;
        let bp = same(n, &bp, 192, 1, 1)?;
        x = concat(Some(format!("mixed{}", 9 + i)), &[&b1, &b3, &bd, &bp])?;
    }

    let pooling: Option<LayerRef> = match options.pooling {
        Pooling::None => None,
        Pooling::Avg => Some(Arc::new(GlobalAveragePooling2d::new(
            n.next("global_average_pooling2d"),
        ))),
        Pooling::Max => Some(Arc::new(GlobalMaxPooling2d::new(
            n.next("global_max_pooling2d"),
        ))),
    };
    x = graph_top(x, options, Some("avg_pool".into()), pooling)?;
    Sequential::functional(Some("inception_v3"), &image, &x)
}
