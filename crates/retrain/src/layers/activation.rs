//! Activation functions, as a layer of their own or fused into Conv2d / Dense.

use super::{Batch, Context, Layer, LayerBase, LayerKind, LayerSpec};
use crate::error::Result;
use crate::kernels;
use crate::shape::Shape;
use burn::tensor::{activation, Tensor};
use serde::{Deserialize, Serialize};

/// The activations retrain knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// Identity (Keras `None` / `"linear"`).
    #[default]
    Linear,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6), as in MobileNet and EfficientNet-Lite.
    Relu6,
    /// Softmax over the last axis.
    Softmax,
}

impl ActivationKind {
    /// Apply to a tensor; softmax runs over the last axis (features for vectors).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            ActivationKind::Linear => x,
            ActivationKind::Relu => activation::relu(x),
            // Under autodiff Burn's clamp is two compare + mask-fill passes each way: on the
            // CPU one pass each way (kernels::relu6); elsewhere the same function from two
            // ReLUs differentiates with ReLU's cheap backward.
            ActivationKind::Relu6 if x.is_tracked() && kernels::on_cpu_f32(&x) => {
                kernels::relu6::relu6(x)
            }
            ActivationKind::Relu6 if x.is_tracked() => {
                let r = activation::relu(x);
                r.clone() - activation::relu(r - 6.0)
            }
            ActivationKind::Relu6 => activation::relu6(x),
            ActivationKind::Softmax => activation::softmax(x, D - 1),
        }
    }

    /// The same activation as the CPU kernels apply it, fused into the operation before; `None`
    /// for softmax, which they do not.
    pub fn kernel(self) -> Option<kernels::Activation> {
        match self {
            ActivationKind::Linear => Some(kernels::Activation::Linear),
            ActivationKind::Relu => Some(kernels::Activation::Relu),
            ActivationKind::Relu6 => Some(kernels::Activation::Relu6),
            ActivationKind::Softmax => None,
        }
    }

    /// Apply to a batch; softmax on feature maps runs over channels, like Keras' channel axis.
    pub fn apply_batch(self, x: Batch) -> Batch {
        match (self, x) {
            (ActivationKind::Softmax, Batch::Maps(t)) => Batch::Maps(activation::softmax(t, 1)),
            (kind, Batch::Maps(t)) => Batch::Maps(kind.apply(t)),
            (kind, Batch::Vectors(t)) => Batch::Vectors(kind.apply(t)),
        }
    }
}

/// A standalone activation layer (Keras `Activation`, `ReLU`, `Softmax`).
pub struct Activation {
    base: LayerBase,
    kind: ActivationKind,
    /// Shown and saved as Keras `ReLU(max_value)` rather than `Activation`.
    relu_layer: bool,
}

impl Activation {
    /// An activation layer; `name` defaults to `activation`, `activation_1`, ...
    pub fn new(name: Option<String>, kind: ActivationKind) -> Self {
        Activation {
            base: LayerBase::new(name, "activation"),
            kind,
            relu_layer: false,
        }
    }

    /// Keras `ReLU(max_value)` (MobileNetV2's `ReLU(6.)`); `name` defaults to `re_lu`, ...
    pub fn relu(name: Option<String>, max_value: Option<f64>) -> crate::error::Result<Self> {
        let kind = match max_value {
            None => ActivationKind::Relu,
            Some(6.0) => ActivationKind::Relu6,
            Some(m) => {
                return Err(crate::error::Error::Invalid(format!(
                    "ReLU max_value {m} is not supported (only none or 6)"
                )))
            }
        };
        Ok(Activation {
            base: LayerBase::new(name, "re_lu"),
            kind,
            relu_layer: true,
        })
    }
}

impl Layer for Activation {
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        if self.relu_layer {
            "ReLU"
        } else {
            "Activation"
        }
    }
    fn setup(&self, input: Shape) -> Result<Shape> {
        Ok(input)
    }
    fn forward(&self, x: Batch, _ctx: &mut Context) -> Result<Batch> {
        Ok(self.kind.apply_batch(x))
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec {
            name: self.name().to_string(),
            trainable: self.trainable(),
            kind: match (self.relu_layer, self.kind) {
                (true, ActivationKind::Relu6) => LayerKind::ReLU {
                    max_value: Some(6.0),
                },
                (true, _) => LayerKind::ReLU { max_value: None },
                (false, activation) => LayerKind::Activation { activation },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Tracked (training) ReLU6 takes the two-ReLU form: same values as the clamp, gradient 1
    /// strictly inside (0, 6) and 0 outside.
    #[test]
    fn tracked_relu6_has_the_clamp_values_and_gradient() {
        let device = Device::flex().autodiff();
        let inputs = vec![-3.0f32, -0.5, 0.5, 3.0, 5.5, 6.5, 9.0];
        let x =
            Tensor::<1>::from_data(TensorData::new(inputs.clone(), [7]), &device).require_grad();
        let y = ActivationKind::Relu6.apply(x.clone());
        let grads = y.clone().sum().backward();
        let host = |t: Tensor<1>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let want: Vec<f32> = inputs.iter().map(|v| v.clamp(0.0, 6.0)).collect();
        assert_eq!(host(y.inner()), want);
        assert_eq!(
            host(x.grad(&grads).unwrap()),
            vec![0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
        );
    }
}
