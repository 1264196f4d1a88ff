//! Dense (fully connected) layer, built lazily from its first input like Keras.

use super::{
    ActivationKind, Batch, Context, Layer, LayerBase, LayerKind, LayerSpec, LazyVariables,
};
use crate::error::{Error, Result};
use crate::kernels;
use crate::shape::Shape;
use crate::variable::{Initializer, Variable};
use serde::{Deserialize, Serialize};

/// Configuration of a [`Dense`] layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseConfig {
    /// Output features.
    pub units: usize,
    /// Activation after the bias.
    pub activation: ActivationKind,
    /// Whether a bias is added.
    pub use_bias: bool,
}

/// Keras `Dense(units)`: kernel `[in, units]`, bias `[units]`. It has no weights until it first
/// sees an input (`weights == []`), then its input width is fixed.
pub struct Dense {
    base: LayerBase,
    config: DenseConfig,
    variables: LazyVariables,
}

impl Dense {
    /// `Dense(units)` with no activation; `name` defaults to `dense`, `dense_1`, ...
    pub fn new(units: usize) -> Self {
        Self::from_config(
            None,
            DenseConfig {
                units,
                activation: ActivationKind::Linear,
                use_bias: true,
            },
        )
    }

    /// A named dense layer with a bias and the given activation (`fc1`, `predictions`, ...).
    pub fn with_name(name: &str, units: usize, activation: ActivationKind) -> Self {
        Self::from_config(
            Some(name.to_string()),
            DenseConfig {
                units,
                activation,
                use_bias: true,
            },
        )
    }

    /// A dense layer from its configuration.
    pub fn from_config(name: Option<String>, config: DenseConfig) -> Self {
        Dense {
            base: LayerBase::new(name, "dense"),
            config,
            variables: LazyVariables::default(),
        }
    }

    /// Name the layer (builder style).
    pub fn named(mut self, name: &str) -> Self {
        self.base = LayerBase::new(Some(name.to_string()), "dense");
        self
    }
}

impl Layer for Dense {
    fn base(&self) -> &LayerBase {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Dense"
    }

    fn setup(&self, input: Shape) -> Result<Shape> {
        let Shape::Vector(features) = input else {
            return Err(Error::shape(
                self.name(),
                format!("Dense expects vectors, got {input}; add Flatten or GlobalAveragePooling2D before it"),
            ));
        };
        let units = self.config.units;
        self.variables.ensure(self.name(), features, || {
            let mut vars = vec![Variable::new(
                format!("{}/kernel", self.name()),
                vec![features, units],
                true,
                Initializer::GlorotUniform {
                    fan_in: features,
                    fan_out: units,
                },
            )];
            if self.config.use_bias {
                vars.push(Variable::new(
                    format!("{}/bias", self.name()),
                    vec![units],
                    true,
                    Initializer::Zeros,
                ));
            }
            vars
        })?;
        Ok(Shape::Vector(units))
    }

    fn forward(&self, x: Batch, ctx: &mut Context) -> Result<Batch> {
        let x = x.into_vectors(self.name())?;
        let kernel_var = self.variables.get(self.name(), 0)?;
        let features = x.dims()[1];
        if kernel_var.shape()[0] != features {
            return Err(Error::shape(
                self.name(),
                format!(
                    "was built for {} input features, got {features}",
                    kernel_var.shape()[0]
                ),
            ));
        }
        let trainable = self.trainable();
        let x = ctx.precision.round_tensor(x);
        let kernel = ctx
            .precision
            .round_tensor(ctx.weight::<2>(&kernel_var, trainable));
        let bias = if self.config.use_bias {
            Some(ctx.weight::<1>(&self.variables.get(self.name(), 1)?, trainable))
        } else {
            None
        };
        // Narrow products (a classifier head) on the CPU kernel; the rest through Burn.
        let y = match kernels::dense::suits(&x, &kernel) {
            true => kernels::dense::product(x, kernel),
            false => x.matmul(kernel),
        };
        let y = match bias {
            Some(bias) => y + bias.unsqueeze_dim(0),
            None => y,
        };
        Ok(Batch::Vectors(self.config.activation.apply(y)))
    }

    fn variables(&self) -> Vec<Variable> {
        self.variables.all()
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: LayerKind::Dense(self.config.clone()),
        }
    }
}
