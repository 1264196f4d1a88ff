//! Pooling: max and average windows, and global pooling to vectors.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec, Padding};
use crate::error::{Error, Result};
use crate::kernels;
use crate::kernels::max_pool::{max_pool, MaxPool};
use crate::shape::{check_window, window_output, Shape};
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Window, stride and padding of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Window height and width.
    pub pool: [usize; 2],
    /// Stride along height and width.
    pub strides: [usize; 2],
    /// Padding rule (padded cells never count in averages, like Keras).
    pub padding: Padding,
}

impl PoolConfig {
    /// A square window with stride equal to the window and no padding (Keras' default).
    pub fn new(pool: usize) -> Self {
        PoolConfig {
            pool: [pool, pool],
            strides: [pool, pool],
            padding: Padding::Valid,
        }
    }

    fn output_shape(&self, layer: &str, input: Shape) -> Result<Shape> {
        let (height, width, channels) = input.maps(layer)?;
        check_window(layer, self.pool, self.strides, [1, 1])?;
        let oh = window_output(0, height, self.pool[0], self.strides[0], 1, self.padding);
        let ow = window_output(1, width, self.pool[1], self.strides[1], 1, self.padding);
        if (height.is_some() && oh.is_none()) || (width.is_some() && ow.is_none()) {
            return Err(Error::shape(
                layer,
                format!(
                    "input {input} is smaller than the {:?} pooling window",
                    self.pool
                ),
            ));
        }
        Ok(Shape::image(oh, ow, channels))
    }

    fn padding_pairs(&self, h: usize, w: usize) -> [(usize, usize); 2] {
        [
            self.padding.amounts(0, h, self.pool[0], self.strides[0], 1),
            self.padding.amounts(1, w, self.pool[1], self.strides[1], 1),
        ]
    }
}

macro_rules! window_pool {
    ($ty:ident, $class:literal, $prefix:literal, $kind:ident, $run:expr) => {
        #[doc = concat!("Keras `", $class, "`.")]
        pub struct $ty {
            base: LayerBase,
            config: PoolConfig,
        }

        impl $ty {
            #[doc = concat!("A `", $class, "` layer from its configuration.")]
            pub fn from_config(name: Option<String>, config: PoolConfig) -> Self {
                $ty {
                    base: LayerBase::new(name, $prefix),
                    config,
                }
            }
        }

        impl Layer for $ty {
            fn base(&self) -> &LayerBase {
                &self.base
            }
            fn class_name(&self) -> &'static str {
                $class
            }
            fn setup(&self, input: Shape) -> Result<Shape> {
                self.config.output_shape(self.name(), input)
            }
            fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
                let x = x.into_maps(self.name())?;
                self.config
                    .output_shape(self.name(), Batch::Maps(x.clone()).shape())?;
                let [_, _, h, w] = x.dims();
                let pads = self.config.padding_pairs(h, w);
                #[allow(clippy::redundant_closure_call)]
                Ok(Batch::Maps(($run)(x, &self.config, pads)))
            }
            fn spec(&self) -> LayerSpec {
                LayerSpec {
                    name: self.name().to_string(),
                    trainable: self.trainable(),
                    kind: LayerKind::$kind(self.config),
                }
            }
        }
    };
}

window_pool!(
    MaxPool2d,
    "MaxPooling2D",
    "max_pooling2d",
    MaxPool2d,
    |x: Tensor<4>, c: &PoolConfig, pads| {
        // Without autodiff on the CPU: the kernel of `kernels::max_pool`; else (gradients,
        // other devices or dtypes) Burn's.
        if !x.is_autodiff() && kernels::on_cpu_f32(&x) {
            let [batch, channels, h, w] = x.dims();
            let pool = MaxPool {
                batch,
                channels,
                input: [h, w],
                window: c.pool,
                stride: c.strides,
                padding: pads,
            };
            return max_pool(x, pool);
        }
        max_pool2d(
            x,
            MaxPoolOptions::new(c.pool)
                .with_stride(c.strides)
                .with_padding_pairs(pads),
        )
    }
);

window_pool!(
    AvgPool2d,
    "AveragePooling2D",
    "average_pooling2d",
    AvgPool2d,
    |x, c: &PoolConfig, pads| {
        let mut options = AvgPoolOptions::new(c.pool);
        options.stride = c.strides;
        options.padding = pads;
        options.count_include_pad = false;
        avg_pool2d(x, options)
    }
);

macro_rules! global_pool {
    ($ty:ident, $class:literal, $prefix:literal, $kind:ident, $reduce:ident) => {
        #[doc = concat!("Keras `", $class, "`: one value per channel.")]
        pub struct $ty {
            base: LayerBase,
        }

        impl $ty {
            #[doc = concat!("A `", $class, "` layer.")]
            pub fn new(name: Option<String>) -> Self {
                $ty {
                    base: LayerBase::new(name, $prefix),
                }
            }
        }

        impl Layer for $ty {
            fn base(&self) -> &LayerBase {
                &self.base
            }
            fn class_name(&self) -> &'static str {
                $class
            }
            fn setup(&self, input: Shape) -> Result<Shape> {
                match input {
                    Shape::Image { channels, .. } => Ok(Shape::Vector(channels)),
                    _ => Err(Error::shape(
                        self.name(),
                        format!("global pooling expects feature maps, got {input}"),
                    )),
                }
            }
            fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
                let x = x.into_maps(self.name())?;
                let [n, c, h, w] = x.dims();
                Ok(Batch::Vectors(
                    x.reshape([n, c, h * w]).$reduce(2).reshape([n, c]),
                ))
            }
            fn spec(&self) -> LayerSpec {
                LayerSpec {
                    name: self.name().to_string(),
                    trainable: self.trainable(),
                    kind: LayerKind::$kind,
                }
            }
        }
    };
}

global_pool!(
    GlobalAveragePooling2d,
    "GlobalAveragePooling2D",
    "global_average_pooling2d",
    GlobalAveragePooling2d,
    mean_dim
);
global_pool!(
    GlobalMaxPooling2d,
    "GlobalMaxPooling2D",
    "global_max_pooling2d",
    GlobalMaxPooling2d,
    max_dim
);
