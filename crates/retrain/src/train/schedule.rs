//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// Linear warm-up over `warmup_epochs`, then cosine decay to zero at the last step.
    Cosine { warmup_epochs: f64 },
}

impl LrSchedule {
    /// The rate at `step` (0-based) of `total_steps`, with `steps_per_epoch`.
    pub fn rate(&self, base: f64, step: usize, total_steps: usize, steps_per_epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine { warmup_epochs } => {
                let warmup = (warmup_epochs * steps_per_epoch as f64).round() as usize;
                if step < warmup {
                    return base * (step + 1) as f64 / warmup as f64;
                }
                let span = total_steps.saturating_sub(warmup).max(1) as f64;
                let progress = (step - warmup) as f64 / span;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays() {
        let s = LrSchedule::Cosine { warmup_epochs: 1.0 };
        assert!((s.rate(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.rate(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((s.rate(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!((s.rate(1.0, 55, 100, 10) - 0.5).abs() < 1e-12);
        assert!(s.rate(1.0, 99, 100, 10) < 0.001);
        assert_eq!(LrSchedule::Constant.rate(0.3, 50, 100, 10), 0.3);
    }
}
