//! Image-folder data sets: one subfolder per class, split into training and validation.

use super::image::{load_rgb, resize_shorter};
use crate::error::{Error, Result};
use crate::zoo::PretrainedConfig;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One image file and its class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Index into the class names.
    pub label: usize,
}

/// A data set found on disk: class names (sorted like Keras / torchvision) and the two splits.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// Class names, sorted; a label is an index into this list.
    pub class_names: Vec<String>,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub val: Vec<Sample>,
}

/// How to split a folder that has no `train/` and `val/` subfolders.
#[derive(Clone, Copy, Debug)]
pub struct SplitRule {
    /// Fraction of each class held out for validation.
    pub val_split: f64,
    /// Seed of the (reproducible) shuffle before the split.
    pub seed: u64,
}

fn is_visible(path: &Path) -> bool {
    !path
        .file_name()
        .map(|n| n.to_string_lossy().starts_with('.'))
        .unwrap_or(true)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_visible(p))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Class folders of `dir` and their files.
pub fn class_folders(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let files: Vec<PathBuf> = sorted_entries(&entry)?
                .into_iter()
                .filter(|p| p.is_file())
                .collect();
            classes.push((name, files));
        }
    }
    Ok(classes)
}

/// The `val/` (or `validation/`) folder of a data set, if it has one.
fn validation_folder(root: &Path) -> Option<PathBuf> {
    ["val", "validation"]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_dir())
}

fn samples(
    classes: &[(String, Vec<PathBuf>)],
    names: &[String],
    dir: &Path,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (name, files) in classes {
        let label = names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Invalid(format!(
                "'{}' has a class folder '{name}' that the training data does not have",
                dir.display()
            ))
        })?;
        out.extend(files.iter().map(|p| Sample {
            path: p.clone(),
            label,
        }));
    }
    Ok(out)
}

fn check_classes(dir: &Path, classes: &[(String, Vec<PathBuf>)]) -> Result<()> {
    if classes.len() < 2 {
        return Err(Error::Invalid(format!(
            "'{}' needs at least two class folders (one per class), found {}",
            dir.display(),
            classes.len()
        )));
    }
    if let Some((name, _)) = classes.iter().find(|(_, files)| files.is_empty()) {
        return Err(Error::Invalid(format!(
            "class folder '{}' has no files",
            dir.join(name).display()
        )));
    }
    Ok(())
}

impl ImageFolder {
    /// Find the data set under `root`: `train/` with `val/` (or `validation/`), or class folders
    /// directly under `root`, split per class by `split`.
    pub fn scan(root: &Path, split: SplitRule) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Invalid(format!(
                "data folder '{}' does not exist or is not a folder",
                root.display()
            )));
        }
        let train_dir = root.join("train");
        if train_dir.is_dir() {
            let val_dir = validation_folder(root).ok_or_else(|| {
                Error::Invalid(format!(
                    "'{}' has train/ but no val/ or validation/ folder",
                    root.display()
                ))
            })?;
            let train = class_folders(&train_dir)?;
            check_classes(&train_dir, &train)?;
            let class_names: Vec<String> = train.iter().map(|(n, _)| n.clone()).collect();
            let val = class_folders(&val_dir)?;
            return Ok(ImageFolder {
                train: samples(&train, &class_names, &train_dir)?,
                val: samples(&val, &class_names, &val_dir)?,
                class_names,
            });
        }
        let classes = class_folders(root)?;
        check_classes(root, &classes)?;
        if !(0.0..1.0).contains(&split.val_split) {
            return Err(Error::Invalid(format!(
                "--val-split {} must be in [0, 1)",
                split.val_split
            )));
        }
        let class_names: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(split.seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (label, (_, files)) in classes.iter().enumerate() {
            let mut files = files.clone();
            files.shuffle(&mut rng);
            let n_val = (files.len() as f64 * split.val_split).round() as usize;
            for (i, path) in files.into_iter().enumerate() {
                let sample = Sample { path, label };
                if i < n_val {
                    val.push(sample);
                } else {
                    train.push(sample);
                }
            }
        }
        train.sort_by(|a, b| a.path.cmp(&b.path));
        val.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(ImageFolder {
            class_names,
            train,
            val,
        })
    }

    /// Every file of a folder of class folders (or of its `val/` split), labelled by the given
    /// class names: for evaluating a trained model on new data.
    pub fn labelled_files(dir: &Path, class_names: &[String]) -> Result<Vec<Sample>> {
        let dir = validation_folder(dir).unwrap_or_else(|| dir.to_path_buf());
        samples(&class_folders(&dir)?, class_names, &dir)
    }
}

/// Decoded images ready for a model: resized so the shorter side matches the pretrained config,
/// and the files that could not be used, each with its reason.
pub struct DecodedSet {
    /// Usable samples with their images.
    pub items: Vec<(Sample, RgbImage)>,
    /// Files skipped and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Decode samples in parallel, resizing each to the config's shorter side. `progress` is called
/// with the number done so far.
pub fn decode_samples(
    samples: &[Sample],
    config: &PretrainedConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> DecodedSet {
    let done = AtomicUsize::new(0);
    let short = config
        .resize_to()
        .max(config.input_size[0].max(config.input_size[1]));
    let results: Vec<(Sample, std::result::Result<RgbImage, String>)> = samples
        .par_iter()
        .map(|s| {
            let r = load_rgb(&s.path)
                .map(|img| resize_shorter(&img, short, config.interpolation))
                .map_err(|e| match e {
                    Error::Image { message, .. } => message,
                    other => other.to_string(),
                });
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            (s.clone(), r)
        })
        .collect();
    let mut set = DecodedSet {
        items: Vec::new(),
        skipped: Vec::new(),
    };
    for (sample, r) in results {
        match r {
            Ok(img) => set.items.push((sample, img)),
            Err(reason) => set.skipped.push((sample.path, reason)),
        }
    }
    set
}
