//! Batch normalization with Keras semantics for frozen layers.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec, LazyVariables};
use crate::error::Result;
use crate::kernels::{self, batch_norm::batch_norm_train as cpu_batch_norm_train};
use crate::shape::Shape;
use crate::variable::{Initializer, Variable};
use burn::tensor::module::{batch_norm, batch_norm_train};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Configuration of a [`BatchNorm`] layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNormConfig {
    /// Weight of the old moving statistic in each update (Keras 0.99 = PyTorch momentum 0.01).
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
    /// Learn a per-channel scale `gamma` (Keras `scale=True`); InceptionV3 has none.
    #[serde(default = "keep_scale")]
    pub scale: bool,
}

fn keep_scale() -> bool {
    true
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            momentum: 0.99,
            epsilon: 1e-3,
            scale: true,
        }
    }
}

/// Keras `BatchNormalization` over the channel axis.
///
/// Variables: `gamma`, `beta` (trainable while the layer is), `moving_mean`, `moving_variance`
/// (never trainable). A layer with `trainable == false` always runs in inference mode, on the
/// moving statistics, and updates nothing, even inside a model that is training.
pub struct BatchNorm {
    base: LayerBase,
    config: BatchNormConfig,
    variables: LazyVariables,
}

impl BatchNorm {
    /// A BatchNorm with Keras' defaults (momentum 0.99, epsilon 1e-3).
    pub fn new(name: Option<String>) -> Self {
        Self::from_config(name, BatchNormConfig::default())
    }

    /// A BatchNorm from its configuration.
    pub fn from_config(name: Option<String>, config: BatchNormConfig) -> Self {
        BatchNorm {
            base: LayerBase::new(name, "batch_normalization"),
            config,
            variables: LazyVariables::default(),
        }
    }

    fn normalize<const D: usize>(&self, x: Tensor<D>, ctx: &mut Context) -> Result<Tensor<D>> {
        let name = self.name();
        let first = usize::from(self.config.scale);
        let [beta, mean, var] = [first, first + 1, first + 2].map(|i| self.variables.get(name, i));
        let (beta, mean, var) = (beta?, mean?, var?);
        let trainable = self.trainable();
        let g = if self.config.scale {
            ctx.weight::<1>(&self.variables.get(name, 0)?, trainable)
        } else {
            Tensor::ones([beta.numel()], &ctx.device)
        };
        let b = ctx.weight::<1>(&beta, trainable);
        if ctx.training && trainable {
            let eps = self.config.epsilon;
            let on_cpu_kernel = D == 4
                && kernels::on_cpu_f32(&x)
                && kernels::on_cpu_f32(&g)
                && kernels::on_cpu_f32(&b);
            let (output, batch_mean, batch_var) = if on_cpu_kernel {
                let dims = x.dims();
                let maps: Tensor<4> = x.reshape([dims[0], dims[1], dims[2], dims[3]]);
                let (output, batch_mean, batch_var) = cpu_batch_norm_train(maps, g, b, eps);
                (output.reshape(dims), batch_mean, batch_var)
            } else {
                let out = batch_norm_train(x, g, b, eps);
                (out.output, out.mean, out.variance)
            };
            let m = self.config.momentum;
            let device = ctx.device.clone();
            mean.assign(mean.value(&device) * m + batch_mean.without_autodiff() * (1.0 - m));
            var.assign(var.value(&device) * m + batch_var.without_autodiff() * (1.0 - m));
            Ok(output)
        } else {
            let mu = ctx.weight::<1>(&mean, false);
            let sigma2 = ctx.weight::<1>(&var, false);
            Ok(batch_norm(x, g, b, mu, sigma2, self.config.epsilon))
        }
    }
}

impl Layer for BatchNorm {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        let n = input.channels();
        self.variables.ensure(self.name(), n, || {
            [
                ("gamma", true, Initializer::Ones),
                ("beta", true, Initializer::Zeros),
                ("moving_mean", false, Initializer::Zeros),
                ("moving_variance", false, Initializer::Ones),
            ]
            .into_iter()
            .filter(|(v, _, _)| self.config.scale || *v != "gamma")
            .map(|(v, trainable, init)| {
                Variable::new(format!("{}/{v}", self.name()), vec![n], trainable, init)
            })
            .collect()
        })?;
        Ok(input)
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        let built = self.variables.get(self.name(), 0)?.numel();
        let channels = x.dims()[1];
        if channels != built {
            return Err(crate::error::Error::shape(
                self.name(),
                format!("was built for {built} channels, got {channels}"),
            ));
        }
        Ok(match x {
            Batch::Maps(t) => Batch::Maps(self.normalize(t, ctx)?),
            Batch::Vectors(t) => Batch::Vectors(self.normalize(t, ctx)?),
        })
    }

    fn variables(&self) -> Vec<Variable> {
        self.variables.all()
    }

    fn training_dependent(&self) -> bool {
        self.trainable()
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::BatchNorm(self.config.clone()),
        }
    }
}
