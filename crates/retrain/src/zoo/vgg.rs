//! VGG16 and VGG19 (Simonyan & Zisserman 2014) with Keras layer names.

use super::{
    add_pooling, input_shape, keras_file, Interpolation, PretrainedConfig, ZooEntry, ZooOptions,
};
use crate::error::Result;
use crate::layers::{
    ActivationKind, Conv2d, Conv2dConfig, Dense, Flatten, MaxPool2d, Padding, PoolConfig,
    PreprocessMode,
};
use crate::model::Sequential;
use std::sync::Arc;

/// VGG16: 13 convolutions in 5 blocks, 138,357,544 parameters with the classifier.
pub const VGG16: ZooEntry = ZooEntry {
    name: "vgg16",
    description: "VGG16 (Keras applications layout), caffe preprocessing",
    build: vgg16,
    pretrained,
    pytorch_names: None,
    imagenet: |include_top| {
        keras_file(
            include_top,
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                "64373286793e3c8b2b4e3219cbf3544b",
            ),
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "6d6bbae143d832006294945121d1f1fc",
            ),
        )
    },
};

/// VGG19: 16 convolutions in 5 blocks, 143,667,240 parameters with the classifier.
pub const VGG19: ZooEntry = ZooEntry {
    name: "vgg19",
    description: "VGG19 (Keras applications layout), caffe preprocessing",
    build: vgg19,
    pretrained,
    pytorch_names: None,
    imagenet: |include_top| {
        keras_file(
            include_top,
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
                "cbe5617147190e668d6c5d5026f83318",
            ),
            (
                "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "253f8cb515780f3b799900260a226db6",
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
        weights: "Keras applications VGG weights".to_string(),
    }
}

/// Build VGG16.
pub fn vgg16(options: &ZooOptions) -> Result<Sequential> {
    vgg("vgg16", &[2, 2, 3, 3, 3], options)
}

/// Build VGG19.
pub fn vgg19(options: &ZooOptions) -> Result<Sequential> {
    vgg("vgg19", &[2, 2, 4, 4, 4], options)
}

fn vgg(name: &str, convs_per_block: &[usize], options: &ZooOptions) -> Result<Sequential> {
    let mut model = Sequential::new(Some(name))
        .with_input(input_shape(name, options, 224)?)
        .as_functional();
    for (block, (&convs, filters)) in convs_per_block
        .iter()
        .zip([64, 128, 256, 512, 512])
        .enumerate()
    {
        for conv in 1..=convs {
            let config = Conv2dConfig::new(filters, 3)
                .padding(Padding::Same)
                .activation(ActivationKind::Relu);
            model.add(Arc::new(Conv2d::from_config(
                Some(format!("block{}_conv{conv}", block + 1)),
                config,
            )))?;
        }
        model.add(Arc::new(MaxPool2d::from_config(
            Some(format!("block{}_pool", block + 1)),
            PoolConfig::new(2),
        )))?;
    }
    if options.include_top {
        model.add(Arc::new(Flatten::new(Some("flatten".into()))))?;
        for fc in ["fc1", "fc2"] {
            model.add(Arc::new(Dense::with_name(fc, 4096, ActivationKind::Relu)))?;
        }
        model.add(Arc::new(Dense::with_name(
            "predictions",
            options.classes,
            options.classifier_activation,
        )))?;
    } else {
        add_pooling(&mut model, options.pooling, false)?;
    }
    Ok(model)
}
