//! Optimizers over retrain's variables: Adam, AdamW and SGD with momentum.
//!
//! retrain's layers are dynamic (built lazily, shared between models, frozen per layer), so they
//! are not Burn `Module`s and `burn-optim` cannot drive them; these few update rules are written
//! here on Burn tensors instead. Their state is saved with checkpoints so training resumes exactly.

use crate::error::Result;
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
                let m = match self.first.remove(&key) {
                    Some(m) => m * BETA1 + grad.clone() * (1.0 - BETA1),
                    None => grad.clone() * (1.0 - BETA1),
                };
                let g2 = grad.clone() * grad;
                let v = match self.second.remove(&key) {
                    Some(v) => v * BETA2 + g2 * (1.0 - BETA2),
                    None => g2 * (1.0 - BETA2),
                };
                let t = self.step.max(1) as i32;
                let m_hat = m.clone() / (1.0 - BETA1.powi(t));
                let v_hat = v.clone() / (1.0 - BETA2.powi(t));
                self.first.insert(key.clone(), m);
                self.second.insert(key, v);
                let decayed = match self.kind {
                    OptimizerKind::AdamW { weight_decay } => {
                        param.clone() - param * (lr * weight_decay)
                    }
                    _ => param,
                };
                decayed - m_hat / (v_hat.sqrt() + EPSILON) * lr
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
