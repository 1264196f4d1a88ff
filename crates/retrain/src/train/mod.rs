//! Training: a new head on a frozen pretrained base (feature extraction), then fine-tuning,
//! with the frozen prefix computed once per image instead of once per epoch.

pub mod evaluate;
pub mod features;
mod fit;
pub mod head;
pub mod metrics;
pub mod optimizer;
pub mod report;
pub mod run;
pub mod schedule;

pub use fit::{fit, train_step, EpochMetrics, Event, FitConfig, FitOutcome, Flow, TrainingSet};
