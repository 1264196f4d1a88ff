//! Run directories: the model, its best and last weights, history, and the state to resume from.
//!
//! Every file is written to a temporary name and renamed, and the resume state is written only
//! after the checkpoint it names, so a run killed at any moment leaves a directory that either
//! resumes from the last completed epoch or starts over; never a half-written weights file.
//!
//! `model.safetensors` holds the whole model: written before the first epoch and again when
//! training ends. In between, an epoch that improves on the best writes only the variables
//! training changes to `best.safetensors` (a head's few kilobytes instead of a base's megabytes
//! every epoch); [`RunDir::load_model`] reads them over `model.safetensors`, so a run killed
//! mid-way still loads as its best model.

use super::optimizer::Optimizer;
use super::{EpochMetrics, FitConfig};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::layers::Layer;
use crate::model::{load_model, save_model, weights_bytes, ModelFile, Sequential, WEIGHTS_FILE};
use crate::variable::Variable;
use crate::weights::safetensors::{to_bytes, SafetensorsFile};
use crate::weights::TensorSource;
use crate::zoo::PretrainedConfig;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The resumable training state, written after every epoch.
const STATE_FILE: &str = "state.json";

/// The best weights of the variables training changes, while they differ from
/// `model.safetensors`'s.
const BEST_WEIGHTS: &str = "best.safetensors";

fn infinity_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Where a training run keeps its files.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

/// What a resumed run needs to continue exactly where it stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResumeState {
    /// Epochs fully completed.
    pub epochs_done: usize,
    /// The epoch (1-based) with the lowest validation loss so far.
    pub best_epoch: usize,
    /// Its validation loss (infinite before the first epoch, which JSON writes as null).
    #[serde(deserialize_with = "infinity_if_null")]
    pub best_val_loss: f64,
    /// Epochs since the best one (early stopping).
    pub stale_epochs: usize,
    /// Optimizer steps taken.
    pub optimizer_step: u64,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// The training configuration.
    pub config: FitConfig,
    /// File name of the checkpoint holding the weights and optimizer state after `epochs_done`.
    pub checkpoint: String,
}

impl ResumeState {
    /// The state of a run that has not finished an epoch yet.
    pub fn start(config: FitConfig) -> Self {
        ResumeState {
            epochs_done: 0,
            best_epoch: 0,
            best_val_loss: f64::INFINITY,
            stale_epochs: 0,
            optimizer_step: 0,
            history: Vec::new(),
            config,
            checkpoint: String::new(),
        }
    }
}

impl RunDir {
    /// Use `path` (created if missing) as a run directory.
    pub fn create(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// An existing run directory (it must hold a saved model).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("model.json").is_file() {
            return Err(Error::Invalid(format!(
                "'{}' is not a retrain run directory (no model.json)",
                path.display()
            )));
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// Take the run's writer lock (an OS file lock on `.lock`, released when the process ends,
    /// even by SIGKILL): two `fit`s writing one run would overwrite each other's checkpoints.
    /// Keep the returned file alive while writing.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.path.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Invalid(format!(
                "'{}' is being written by another retrain process; wait for it to end or choose another --out",
                self.path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// Delete temporary files that a killed writer left behind (`.NAME.tmp-PID`, see
    /// [`write_atomic`]); call it only when this process is the run's one writer.
    pub fn remove_stale_temporaries(&self) -> Result<usize> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether training has started in `path` (a checkpoint state exists), so a new run must
    /// not overwrite it. A directory killed before its first checkpoint can simply be reused.
    pub fn has_started(path: &Path) -> bool {
        path.join(STATE_FILE).is_file()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where cached prefix features go.
    pub fn cache_dir(&self) -> PathBuf {
        self.path.join("cache")
    }

    /// Save the model (architecture, preprocessing, classes, current weights); it supersedes
    /// any `best.safetensors`.
    pub fn save_model(
        &self,
        model: &Sequential,
        pretrained: &PretrainedConfig,
        class_names: &[String],
        device: &Device,
    ) -> Result<()> {
        save_model(model, &self.path, Some(pretrained), class_names, device)?;
        let best = self.path.join(BEST_WEIGHTS);
        match std::fs::remove_file(&best) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&best, e)),
            _ => Ok(()),
        }
    }

    /// Load the saved model with its best weights.
    pub fn load_model(&self, device: &Device) -> Result<(Sequential, ModelFile)> {
        let (model, file) = load_model(&self.path, device)?;
        self.overlay_best_weights(&model, device)?;
        Ok((model, file))
    }

    /// Put the best weights saved so far into `model` (same architecture).
    pub fn load_best_weights(&self, model: &Sequential, device: &Device) -> Result<()> {
        let weights = SafetensorsFile::open(&self.path.join(WEIGHTS_FILE))?;
        crate::weights::load_into(
            model,
            &weights,
            &crate::weights::NameMap::identity(model),
            device,
        )?;
        self.overlay_best_weights(model, device)
    }

    /// Save the current values of `variables` (the ones training changes) as the best so far.
    pub fn save_best_weights(&self, variables: &[Variable], device: &Device) -> Result<()> {
        write_atomic(
            &self.path.join(BEST_WEIGHTS),
            &weights_bytes(variables, device)?,
        )
    }

    /// Whether an epoch saved better weights than `model.safetensors` holds (they are in
    /// `best.safetensors`): a run that ends saves its whole model then.
    pub fn has_best_weights(&self) -> bool {
        self.path.join(BEST_WEIGHTS).exists()
    }

    /// Read `best.safetensors`, when a run left one, over the variables of `model` it names.
    fn overlay_best_weights(&self, model: &Sequential, device: &Device) -> Result<()> {
        if !self.has_best_weights() {
            return Ok(());
        }
        let file = SafetensorsFile::open(&self.path.join(BEST_WEIGHTS))?;
        let names: std::collections::HashSet<String> = file.keys().into_iter().collect();
        let variables: Vec<Variable> = model
            .variables()
            .into_iter()
            .filter(|v| names.contains(v.path()))
            .collect();
        assign_saved(&file, "", &variables, device)
    }

    /// Record the exact command line: the one that started the run, then one line per resume.
    pub fn write_command(&self, args: &[String]) -> Result<()> {
        let path = self.path.join("command.txt");
        let mut text = match std::fs::read_to_string(&path) {
            Ok(earlier) => earlier,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        text.push_str(&(args.join(" ") + "\n"));
        write_atomic(&path, text.as_bytes())
    }

    /// Write history.csv and history.json.
    pub fn write_history(&self, history: &[EpochMetrics]) -> Result<()> {
        let mut csv = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
        for m in history {
            csv += &format!(
                "{},{:.6},{:.6},{:.6},{:.6},{:.8},{:.3}\n",
                m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.lr, m.seconds
            );
        }
        write_atomic(&self.path.join("history.csv"), csv.as_bytes())?;
        let json = serde_json::to_vec_pretty(history).expect("history serializes");
        write_atomic(&self.path.join("history.json"), &json)
    }

    /// The metrics written by [`RunDir::write_history`].
    pub fn history(&self) -> Result<Vec<EpochMetrics>> {
        let path = self.path.join("history.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("unreadable history: {e}")))
    }

    /// Save the `variables` training changes (the trainable suffix's: the frozen rest never
    /// changes and is in model.safetensors, saved before the first checkpoint) and the optimizer
    /// state after an epoch, then the state that points at them.
    pub fn save_checkpoint(
        &self,
        variables: &[Variable],
        optimizer: &Optimizer,
        state: &mut ResumeState,
        device: &Device,
    ) -> Result<()> {
        let (step, mut tensors) = optimizer.state();
        for v in variables {
            tensors.push((
                format!("model/{}", v.path()),
                v.shape().to_vec(),
                v.to_vec(device),
            ));
        }
        let name = format!("checkpoint-{}.safetensors", state.epochs_done);
        write_atomic(&self.path.join(&name), &to_bytes(&tensors, None)?)?;
        let previous = std::mem::replace(&mut state.checkpoint, name);
        state.optimizer_step = step;
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        write_atomic(&self.path.join(STATE_FILE), &json)?;
        if !previous.is_empty() && previous != state.checkpoint {
            let _ = std::fs::remove_file(self.path.join(previous));
        }
        Ok(())
    }

    /// The saved resume state, if a completed epoch was recorded.
    pub fn resume_state(&self) -> Result<Option<ResumeState>> {
        let path = self.path.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::format(&path, format!("unreadable resume state: {e}")))
    }

    /// Put the checkpoint's values into `variables` (those [`RunDir::save_checkpoint`] saved;
    /// the rest come from [`RunDir::load_best_weights`]) and its state into `optimizer`.
    pub fn restore_checkpoint(
        &self,
        state: &ResumeState,
        variables: &[Variable],
        optimizer: &mut Optimizer,
        device: &Device,
    ) -> Result<()> {
        let file = SafetensorsFile::open(&self.path.join(&state.checkpoint))?;
        assign_saved(&file, "model/", variables, device)?;
        let optimizer_tensors = file
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("optimizer/"))
            .map(|k| file.read(&k).map(|v| (k, v)))
            .collect::<Result<Vec<_>>>()?;
        optimizer.restore(state.optimizer_step, optimizer_tensors, device)
    }
}

/// Give each of `variables` its values saved in `file` under `prefix` + its path.
fn assign_saved(
    file: &SafetensorsFile,
    prefix: &str,
    variables: &[Variable],
    device: &Device,
) -> Result<()> {
    for v in variables {
        let key = format!("{prefix}{}", v.path());
        let values = file.read(&key)?;
        if values.len() != v.numel() {
            return Err(Error::TensorShape {
                found: file.shape(&key).unwrap_or_default(),
                tensor: key,
                variable: v.path().to_string(),
                expected: v.shape().to_vec(),
            });
        }
        v.assign_data(values, device);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_at_a_time() {
        let dir = std::env::temp_dir().join(format!("retrain-lock-{}", std::process::id()));
        let run = RunDir::create(&dir).unwrap();
        let first = run.lock().unwrap();
        let err = run.lock().unwrap_err().to_string();
        assert!(err.contains("another retrain process"), "{err}");
        drop(first);
        assert!(run.lock().is_ok(), "released with its holder");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_before_the_first_epoch_reads_back() {
        // Found by tools/kill_loop.sh: a run killed before its first epoch ended had a
        // state.json with "best_val_loss": null that --resume could not read.
        let state = ResumeState::start(FitConfig::default());
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"best_val_loss\":null"), "{json}");
        let back: ResumeState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.best_val_loss, f64::INFINITY);
    }
}
