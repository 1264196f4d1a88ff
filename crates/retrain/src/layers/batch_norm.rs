//! Batch normalization with Keras semantics for frozen layers.

use super::{
    ActivationKind, Batch, Context, Layer, LayerBase, LayerKind, LayerRef, LayerSpec, LazyVariables,
};
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
    /// The activation applied to the output: `Linear` in every model (Keras has no such
    /// option); training plans fuse a following ReLU / ReLU6 layer in here
    /// ([`crate::model::fuse_activations`]), so it runs inside the normalization's passes.
    #[serde(default, skip_serializing_if = "is_linear")]
    pub activation: ActivationKind,
}

fn keep_scale() -> bool {
    true
}

fn is_linear(activation: &ActivationKind) -> bool {
    *activation == ActivationKind::Linear
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            momentum: 0.99,
            epsilon: 1e-3,
            scale: true,
            activation: ActivationKind::Linear,
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

    /// The BatchNorm `layer` (its name, flag and variables, shared) with `activation` (ReLU,
    /// ReLU6) applied to its output; `None` when `layer` is not a built BatchNorm without an
    /// activation, or `activation` is not one the CPU kernel runs.
    pub fn with_activation(layer: &LayerRef, activation: ActivationKind) -> Option<Self> {
        let LayerKind::BatchNorm(config) = layer.spec().kind else {
            return None;
        };
        let variables = layer.variables();
        let fusable = activation.kernel().is_some() && activation != ActivationKind::Linear;
        if !fusable || config.activation != ActivationKind::Linear || variables.is_empty() {
            return None;
        }
        let fused = BatchNorm::from_config(
            Some(layer.name().to_string()),
            BatchNormConfig {
                activation,
                ..config
            },
        );
        let channels = variables[0].numel();
        fused
            .variables
            .ensure(layer.name(), channels, || variables)
            .ok()?;
        fused.set_trainable(layer.trainable());
        Some(fused)
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
        let activation = self.config.activation;
        if ctx.training && trainable {
            let eps = self.config.epsilon;
            let kernel_activation = activation.kernel().filter(|_| {
                D == 4
                    && kernels::on_cpu_f32(&x)
                    && kernels::on_cpu_f32(&g)
                    && kernels::on_cpu_f32(&b)
            });
            let (output, batch_mean, batch_var) = if let Some(fused) = kernel_activation {
                let dims = x.dims();
                let maps: Tensor<4> = x.reshape([dims[0], dims[1], dims[2], dims[3]]);
                let (output, batch_mean, batch_var) = cpu_batch_norm_train(maps, g, b, eps, fused);
                (output.reshape(dims), batch_mean, batch_var)
            } else {
                let out = batch_norm_train(x, g, b, eps);
                (activation.apply(out.output), out.mean, out.variance)
            };
            let m = self.config.momentum;
            let device = ctx.device.clone();
            mean.assign(mean.value(&device) * m + batch_mean.without_autodiff() * (1.0 - m));
            var.assign(var.value(&device) * m + batch_var.without_autodiff() * (1.0 - m));
            Ok(output)
        } else {
            let mu = ctx.weight::<1>(&mean, false);
            let sigma2 = ctx.weight::<1>(&var, false);
            Ok(activation.apply(batch_norm(x, g, b, mu, sigma2, self.config.epsilon)))
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
        if self.config.activation.kernel().is_none() {
            return Err(crate::error::Error::Invalid(format!(
                "BatchNorm '{}': activation {:?} after a BatchNorm is not supported (linear, \
                 relu and relu6 are)",
                self.name(),
                self.config.activation
            )));
        }
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
