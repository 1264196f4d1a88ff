//! Optimizers over retrain's variables: Adam, AdamW and SGD with momentum.
//!
//! retrain's layers are dynamic (built lazily, shared between models, frozen per layer), so they
//! are not Burn `Module`s and `burn-optim` cannot drive them; these few update rules are written
//! here on Burn tensors instead. Their state is saved with checkpoints so training resumes exactly.

use crate::error::Result;
use crate::kernels::{self, adam::AdamStep};
use crate::variable::Variable;
use crate::weights::safetensors::NamedTensor;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which update rule, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerKind {
    /// Adam (beta1 0.9, beta2 0.999, epsilon 1e-8).
    Adam,
    /// Adam with decoupled weight decay.
    AdamW { weight_decay: f64 },
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd { momentum: f64 },
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// An optimizer with per-variable state, keyed by variable path.
pub struct Optimizer {
    kind: OptimizerKind,
    step: u64,
    first: HashMap<String, Tensor<1>>,
    second: HashMap<String, Tensor<1>>,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(kind: OptimizerKind) -> Self {
        Optimizer {
            kind,
            step: 0,
            first: HashMap::new(),
            second: HashMap::new(),
        }
    }

    /// Count one optimization step (call once per batch, before the updates).
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Update `variable` from its gradient with learning rate `lr`.
    pub fn update(&mut self, variable: &Variable, grad: Tensor<1>, lr: f64, device: &Device) {
        let param = variable.value(device);
        let key = variable.path().to_string();
        let new = match self.kind {
            OptimizerKind::Sgd { momentum } => {
                let velocity = match self.first.remove(&key) {
                    Some(v) if momentum > 0.0 => v * momentum + grad,
                    _ => grad,
                };
                self.first.insert(key, velocity.clone());
                param - velocity * lr
            }
            OptimizerKind::Adam | OptimizerKind::AdamW { .. } => {
                let t = self.step.max(1) as i32;
                let step = AdamStep {
                    beta1: [BETA1 as f32, (1.0 - BETA1) as f32],
                    beta2: [BETA2 as f32, (1.0 - BETA2) as f32],
                    correction: [(1.0 - BETA1.powi(t)) as f32, (1.0 - BETA2.powi(t)) as f32],
                    epsilon: EPSILON as f32,
                    lr: lr as f32,
                    decay: match self.kind {
                        OptimizerKind::AdamW { weight_decay } => Some((lr * weight_decay) as f32),
                        _ => None,
                    },
                };
                let zeros = || Tensor::zeros(param.shape(), device);
                let first = self.first.remove(&key).unwrap_or_else(zeros);
                let second = self.second.remove(&key).unwrap_or_else(zeros);
                let on_cpu = |t: &Tensor<1>| t.device() == Device::flex() && kernels::on_cpu_f32(t);
                let (new, first, second) = if on_cpu(&param) && on_cpu(&grad) {
                    kernels::adam::adam(param, grad, first, second, step)
                } else {
                    adam_with_tensors(param, grad, first, second, step)
                };
                self.first.insert(key.clone(), first);
                self.second.insert(key, second);
                new
            }
        };
        variable.assign(new);
    }

    /// State as named flat tensors (for checkpoints) plus the step count.
    pub fn state(&self) -> (u64, Vec<NamedTensor>) {
        let mut out = Vec::new();
        for (prefix, map) in [
            ("optimizer/first/", &self.first),
            ("optimizer/second/", &self.second),
        ] {
            for (k, t) in map {
                let values: Vec<f32> = t
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 state");
                out.push((format!("{prefix}{k}"), vec![values.len()], values));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (self.step, out)
    }

    /// Restore state saved by [`Optimizer::state`].
    pub fn restore(
        &mut self,
        step: u64,
        tensors: impl IntoIterator<Item = (String, Vec<f32>)>,
        device: &Device,
    ) -> Result<()> {
        self.step = step;
        for (name, values) in tensors {
            let n = values.len();
            let t = Tensor::from_data(TensorData::new(values, [n]), device);
            if let Some(k) = name.strip_prefix("optimizer/first/") {
                self.first.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("optimizer/second/") {
                self.second.insert(k.to_string(), t);
            }
        }
        Ok(())
    }
}

/// [`kernels::adam::adam`] as tensor operations, for devices other than the CPU: the new
/// parameter, first and second moments.
fn adam_with_tensors(
    param: Tensor<1>,
    grad: Tensor<1>,
    first: Tensor<1>,
    second: Tensor<1>,
    s: AdamStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let first = first * s.beta1[0] + grad.clone() * s.beta1[1];
    let second = second * s.beta2[0] + (grad.clone() * grad) * s.beta2[1];
    let m_hat = first.clone() / s.correction[0];
    let v_hat = second.clone() / s.correction[1];
    let decayed = match s.decay {
        Some(decay) => param.clone() - param * decay,
        None => param,
    };
    let new = decayed - m_hat / (v_hat.sqrt() + s.epsilon) * s.lr;
    (new, first, second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variable::Initializer;

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    /// The one-pass CPU step gives what the tensor operations give, step after step, for Adam
    /// and AdamW.
    #[test]
    fn cpu_adam_equals_the_tensor_operations() {
        let device = Device::flex();
        let n = 40_000; // more than one parallel chunk
        let tensor = |offset: usize, scale: f32| {
            let values: Vec<f32> = (0..n)
                .map(|i| (((i + offset) * 7919 % 1000) as f32 / 500.0 - 1.0) * scale)
                .collect();
            Tensor::<1>::from_data(TensorData::new(values, [n]), &device)
        };
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::AdamW { weight_decay: 0.01 },
        ] {
            let variable = Variable::new("dense/kernel".into(), vec![n], true, Initializer::Zeros);
            variable.assign(tensor(3, 1.0));
            let mut optimizer = Optimizer::new(kind);
            let (mut param, mut first, mut second) = (
                tensor(3, 1.0),
                Tensor::zeros([n], &device),
                Tensor::zeros([n], &device),
            );
            for t in 1..=3 {
                let grad = tensor(t * 11, 0.1);
                optimizer.begin_step();
                optimizer.update(&variable, grad.clone(), 1e-2, &device);
                let step = AdamStep {
                    beta1: [BETA1 as f32, (1.0 - BETA1) as f32],
                    beta2: [BETA2 as f32, (1.0 - BETA2) as f32],
                    correction: [
                        (1.0 - BETA1.powi(t as i32)) as f32,
                        (1.0 - BETA2.powi(t as i32)) as f32,
                    ],
                    epsilon: EPSILON as f32,
                    lr: 1e-2,
                    decay: match kind {
                        OptimizerKind::AdamW { weight_decay } => Some((1e-2 * weight_decay) as f32),
                        _ => None,
                    },
                };
                (param, first, second) = adam_with_tensors(param, grad, first, second, step);
                let (ours, theirs) = (host(variable.value(&device)), host(param.clone()));
                let worst = ours
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-7, "{kind:?} step {t}: max difference {worst}");
                assert_ne!(ours, host(tensor(3, 1.0)), "the parameter moved");
            }
        }
    }
}
