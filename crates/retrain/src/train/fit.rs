//! The training loop.

use super::features::{
    cache_key, execution_layers, frozen_prefix_len, prefix_fingerprint, run_inference, run_layers,
    CacheFile, FeatureStore,
};
use super::optimizer::{Optimizer, OptimizerKind};
use super::run::{ResumeState, RunDir};
use super::schedule::LrSchedule;
use crate::data::augment::{center_view, random_view};
use crate::data::folder::Sample;
use crate::error::{Error, Result};
use crate::layers::{Batch, Context, Layer, LayerRef, Precision};
use crate::model::Sequential;
use crate::variable::Variable;
use crate::zoo::PretrainedConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Stop after this many epochs without a lower validation loss (best weights are kept).
    pub patience: Option<usize>,
    /// Seed of shuffling, augmentation, dropout and head initialization.
    pub seed: u64,
    /// Random resized crop + horizontal flip on training images.
    pub augment: bool,
    /// Compute the frozen prefix once per image (off: every step, for comparison).
    pub cache: bool,
    /// Bytes of cached features kept in memory; beyond, they are read from the run directory.
    pub memory_budget: usize,
    /// Fraction of each class held out for validation when the data has no val/ folder.
    pub val_split: f64,
    /// Precision of the frozen prefix's products (the trained layers stay f32).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            optimizer: OptimizerKind::Adam,
            schedule: LrSchedule::Constant,
            patience: None,
            seed: 42,
            augment: false,
            cache: true,
            memory_budget: 4 << 30,
            val_split: 0.2,
            precision: Precision::F32,
        }
    }
}

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub accuracy: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time of the epoch (seconds).
    pub seconds: f64,
}

/// Progress reports for a user interface.
pub enum Event<'a> {
    /// A preparation step advanced (`what` names it).
    Preparing {
        what: &'a str,
        done: usize,
        total: usize,
    },
    /// A training step finished.
    Step {
        epoch: usize,
        done: usize,
        total: usize,
        loss: f64,
    },
    /// An epoch finished.
    Epoch(&'a EpochMetrics),
    /// Something worth telling the user.
    Note(String),
}

/// Decoded images with labels, and how to prepare them.
pub struct TrainingSet<'a> {
    /// Training images (already resized on their shorter side).
    pub train: &'a [(Sample, RgbImage)],
    /// Validation images.
    pub val: &'a [(Sample, RgbImage)],
    /// Class names.
    pub class_names: &'a [String],
    /// Input size, crop, interpolation.
    pub pretrained: &'a PretrainedConfig,
}

/// What a progress callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop at the end of the current epoch, after its checkpoint (Ctrl-C, a time budget).
    Stop,
}

/// What training produced.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    /// Metrics per epoch.
    pub history: Vec<EpochMetrics>,
    /// The epoch whose weights the model holds now (lowest validation loss).
    pub best_epoch: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the callback asked to stop before the last epoch.
    pub interrupted: bool,
    /// Seconds spent computing the frozen prefix for the caches.
    pub prefix_seconds: f64,
}

/// Mean cross-entropy of logits against labels, and the number of right predictions.
fn cross_entropy(logits: Tensor<2>, labels: &[usize], device: &Device) -> (Tensor<1>, usize) {
    let [n, classes] = logits.dims();
    let predicted: Vec<i64> = logits
        .clone()
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("argmax values");
    let correct = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == **l)
        .count();
    let mut one_hot = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        one_hot[i * classes + l] = 1.0;
    }
    let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [n, classes]), device);
    let loss = (log_softmax(logits, 1) * one_hot).sum().neg() / n as f64;
    (loss, correct)
}

/// One optimization step of the trainable `layers` on a batch: forward in training mode,
/// cross-entropy against `labels`, backward, and `optimizer` updates with learning rate `lr`.
/// Returns the batch's mean loss and how many predictions were right; a loss that is not
/// finite is [`Error::NonFiniteLoss`] and changes no weight.
pub fn train_step(
    layers: &[LayerRef],
    x: Batch,
    labels: &[usize],
    optimizer: &mut Optimizer,
    lr: f64,
    device: &Device,
) -> Result<(f64, usize)> {
    let mut ctx = Context::training(device, true);
    let logits = run_layers(layers, x, &mut ctx)?.into_vectors("classifier output")?;
    let (loss, right) = cross_entropy(logits, labels, device);
    let loss_value = scalar(loss.clone());
    if !loss_value.is_finite() {
        return Err(Error::NonFiniteLoss(loss_value));
    }
    let grads = loss.backward();
    optimizer.begin_step();
    for (variable, leaf) in ctx.into_leaves() {
        if let Some(grad) = leaf.grad(&grads) {
            optimizer.update(&variable, grad, lr, device);
        }
    }
    Ok((loss_value, right))
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map(|v| f64::from(v[0]))
        .unwrap_or(f64::NAN)
}

/// Where the inputs of the trainable suffix come from.
enum Inputs<'a> {
    Cached(FeatureStore),
    /// Run the prefix each step on these views.
    Live {
        images: &'a [(Sample, RgbImage)],
        augment: bool,
    },
}

struct Plan<'a> {
    prefix: Vec<LayerRef>,
    /// Precision of the prefix's products.
    precision: Precision,
    suffix: Vec<LayerRef>,
    pretrained: &'a PretrainedConfig,
    device: Device,
}

impl Plan<'_> {
    fn suffix_input(
        &self,
        inputs: &Inputs,
        indices: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<Batch> {
        match inputs {
            Inputs::Cached(store) => store.gather(indices, &self.device),
            Inputs::Live { images, augment } => {
                let views: Vec<Vec<f32>> = indices
                    .iter()
                    .map(|&i| {
                        if *augment {
                            random_view(&images[i].1, self.pretrained, rng)
                        } else {
                            center_view(&images[i].1, self.pretrained)
                        }
                    })
                    .collect();
                let [h, w] = self.pretrained.input_size;
                let x = crate::data::image::batch_tensor(&views, h, w, &self.device);
                run_inference(&self.prefix, Batch::Maps(x), &self.device, self.precision)
            }
        }
    }

    /// Mean loss and accuracy over a split in inference mode.
    fn evaluate(&self, inputs: &Inputs, labels: &[usize], batch_size: usize) -> Result<(f64, f64)> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (mut loss_sum, mut correct) = (0.0, 0);
        let order: Vec<usize> = (0..labels.len()).collect();
        for chunk in order.chunks(batch_size) {
            let x = self.suffix_input(inputs, chunk, &mut rng)?;
            let logits = run_inference(&self.suffix, x, &self.device, Precision::F32)?
                .into_vectors("classifier output")?;
            let batch_labels: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
            let (loss, right) = cross_entropy(logits, &batch_labels, &self.device);
            loss_sum += scalar(loss) * chunk.len() as f64;
            correct += right;
        }
        let n = labels.len().max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }
}

fn snapshot(layers: &[LayerRef], device: &Device) -> HashMap<u64, Tensor<1>> {
    layers
        .iter()
        .flat_map(|l| l.variables())
        .map(|v| (v.id(), v.value(device)))
        .collect()
}

fn restore(layers: &[LayerRef], saved: &HashMap<u64, Tensor<1>>) {
    for v in layers.iter().flat_map(|l| l.variables()) {
        if let Some(t) = saved.get(&v.id()) {
            v.assign(t.clone());
        }
    }
}

/// Train `model` (logits output) on `data`.
///
/// The longest frozen, deterministic prefix of the model runs once per image (unless
/// `config.cache` is off or augmentation makes each view different); only the rest runs each
/// step, with gradients for its trainable variables. With a run directory, the best weights,
/// history and a resumable checkpoint are written after every epoch, the whole model at the start
/// and the end (see [`RunDir`]); `resume` continues from it.
pub fn fit(
    model: &Sequential,
    data: &TrainingSet,
    config: &FitConfig,
    run: Option<&RunDir>,
    resume: Option<ResumeState>,
    device: &Device,
    on_event: &mut dyn FnMut(Event) -> Flow,
) -> Result<FitOutcome> {
    if data.train.is_empty() || data.val.is_empty() {
        return Err(Error::Invalid(format!(
            "need training and validation images, have {} and {}",
            data.train.len(),
            data.val.len()
        )));
    }
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(Error::Invalid(
            "epochs and batch size must be at least 1".into(),
        ));
    }
    let [h, w] = data.pretrained.input_size;
    model.build(crate::shape::Shape::image(Some(h), Some(w), 3))?;
    model.initialize(config.seed, device);

    let layers = execution_layers(model);
    let split = frozen_prefix_len(&layers);
    if split == layers.len() {
        return Err(Error::Invalid(
            "nothing to train: every layer is frozen".into(),
        ));
    }
    let plan = Plan {
        prefix: crate::model::fold_batch_norms(&layers[..split], device)?,
        precision: config.precision,
        suffix: crate::model::fuse_activations(&layers[split..]),
        pretrained: data.pretrained,
        device: device.clone(),
    };
    let train_labels: Vec<usize> = data.train.iter().map(|(s, _)| s.label).collect();
    let val_labels: Vec<usize> = data.val.iter().map(|(s, _)| s.label).collect();
    let mut interrupted = false;
    on_event(Event::Note(format!(
        "frozen prefix: {split} of {} layers (up to '{}'); training from '{}'",
        layers.len(),
        layers[..split].last().map_or("input", |l| l.name()),
        layers[split].name()
    )));

    let prefix_started = Instant::now();
    let fingerprint = run.map(|_| {
        let view = format!("{:?} {:?}", data.pretrained, plan.precision);
        prefix_fingerprint(&plan.prefix, &view, device)
    });
    let cached =
        |images: &[(Sample, RgbImage)], name: &str, on_event: &mut dyn FnMut(Event) -> Flow| {
            let files: Vec<_> = images.iter().map(|(s, _)| s.path.clone()).collect();
            let cache = run.zip(fingerprint).map(|(r, fingerprint)| {
                CacheFile::new(&r.cache_dir(), name, cache_key(fingerprint, &files))
            });
            let input = |i: usize| center_view(&images[i].1, data.pretrained);
            let total = images.len();
            FeatureStore::load_or_compute(
                &plan.prefix,
                total,
                &input,
                data.pretrained.input_size,
                config.batch_size,
                cache.as_ref(),
                config.memory_budget,
                device,
                plan.precision,
                &mut |done| {
                    on_event(Event::Preparing {
                        what: name,
                        done,
                        total,
                    });
                },
            )
        };
    let train_inputs = if config.cache && !config.augment {
        Inputs::Cached(cached(data.train, "train-features", on_event)?)
    } else {
        if config.augment {
            on_event(Event::Note(
                "augmentation on: every training view differs, so the frozen prefix runs each step for training images (validation stays cached)".into(),
            ));
        }
        Inputs::Live {
            images: data.train,
            augment: config.augment,
        }
    };
    let val_inputs = if config.cache {
        Inputs::Cached(cached(data.val, "val-features", on_event)?)
    } else {
        Inputs::Live {
            images: data.val,
            augment: false,
        }
    };
    let prefix_seconds = prefix_started.elapsed().as_secs_f64();

    let mut optimizer = Optimizer::new(config.optimizer);
    let mut best = snapshot(&plan.suffix, device);
    let suffix_variables: Vec<Variable> = plan.suffix.iter().flat_map(|l| l.variables()).collect();
    let mut state = match resume {
        Some(state) => {
            let run = run.ok_or_else(|| Error::Invalid("resuming needs a run directory".into()))?;
            run.load_best_weights(model, device)?;
            best = snapshot(&plan.suffix, device);
            run.restore_checkpoint(&state, &suffix_variables, &mut optimizer, device)?;
            on_event(Event::Note(format!(
                "resuming after epoch {}",
                state.epochs_done
            )));
            state
        }
        None => {
            let mut state = ResumeState::start(config.clone());
            if let Some(run) = run {
                // A run killed during its first epoch resumes from here.
                run.save_model(model, data.pretrained, data.class_names, device)?;
                run.save_checkpoint(&suffix_variables, &optimizer, &mut state, device)?;
            }
            state
        }
    };
    let steps_per_epoch = train_labels.len().div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let mut stopped_early = false;

    for epoch in state.epochs_done..config.epochs {
        let started = Instant::now();
        device.seed(config.seed.wrapping_add(1 + epoch as u64));
        let mut rng =
            ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(7919).wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..train_labels.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0, 0);
        let mut lr = config.lr;
        for (step, chunk) in order.chunks(config.batch_size).enumerate() {
            let global_step = epoch * steps_per_epoch + step;
            lr = config
                .schedule
                .rate(config.lr, global_step, total_steps, steps_per_epoch);
            let x = plan.suffix_input(&train_inputs, chunk, &mut rng)?;
            let labels: Vec<usize> = chunk.iter().map(|&i| train_labels[i]).collect();
            let (loss_value, right) = match train_step(
                &plan.suffix,
                x,
                &labels,
                &mut optimizer,
                lr,
                device,
            ) {
                Err(Error::NonFiniteLoss(loss_value)) => {
                    restore(&plan.suffix, &best);
                    return Err(Error::Invalid(format!(
                            "the loss became {loss_value} in epoch {} step {}; stopped and kept the weights of epoch {} (try a lower --lr)",
                            epoch + 1,
                            step + 1,
                            state.best_epoch
                        )));
                }
                other => other?,
            };
            loss_sum += loss_value * chunk.len() as f64;
            correct += right;
            on_event(Event::Step {
                epoch: epoch + 1,
                done: step + 1,
                total: steps_per_epoch,
                loss: loss_value,
            });
        }
        let (val_loss, val_accuracy) =
            plan.evaluate(&val_inputs, &val_labels, config.batch_size)?;
        let n = train_labels.len() as f64;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            val_loss,
            val_accuracy,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        let flow = on_event(Event::Epoch(&metrics));
        state.history.push(metrics);
        state.epochs_done = epoch + 1;
        let improved = val_loss < state.best_val_loss;
        if improved {
            state.best_val_loss = val_loss;
            state.best_epoch = epoch + 1;
            state.stale_epochs = 0;
            best = snapshot(&plan.suffix, device);
        } else {
            state.stale_epochs += 1;
        }
        if let Some(run) = run {
            // Weights first, the history files last: a write that fails (a full disk) then
            // leaves the run as the last epoch's state recorded it.
            if improved {
                run.save_best_weights(&suffix_variables, device)?;
            }
            run.save_checkpoint(&suffix_variables, &optimizer, &mut state, device)?;
            run.write_history(&state.history)?;
        }
        if flow == Flow::Stop && state.epochs_done < config.epochs {
            on_event(Event::Note(format!(
                "stopped after epoch {}; continue with --resume",
                state.epochs_done
            )));
            interrupted = true;
            break;
        }
        if config.patience.is_some_and(|p| state.stale_epochs >= p) {
            on_event(Event::Note(format!(
                "early stopping: no lower val_loss for {} epochs; keeping epoch {}",
                state.stale_epochs, state.best_epoch
            )));
            stopped_early = true;
            break;
        }
    }
    restore(&plan.suffix, &best);
    if let Some(run) = run.filter(|r| r.has_best_weights()) {
        run.save_model(model, data.pretrained, data.class_names, device)?;
    }
    Ok(FitOutcome {
        history: state.history,
        best_epoch: state.best_epoch,
        stopped_early,
        interrupted,
        prefix_seconds,
    })
}
