//! retrain's side of the benchmark harness: one workload per process, timed after warm-up.
//!
//! `retrain-bench WORKLOAD --batch N --runs R --warmup W [--device cpu|cuda]` prints one JSON line,
//! `{"workload", "batch", "seconds": [..]}`, one entry per timed run; `bench/run.py` runs the
//! same workloads in PyTorch and Keras, takes medians and peak RSS, and prints the ratios.
//!
//! Workloads (224x224 inputs, random weights: speed does not depend on their values):
//! - `forward-vgg16`, `forward-efficientnet_lite0`, `forward-mobilenet_v2`: the frozen
//!   convolutional base, inference
//!   plan (BatchNorm folded, nothing tracked for gradients), feature map out;
//! - `step-vgg16-block5`: one Adam step of VGG16 block5 + GAP + Dense(5) from block4_pool maps;
//! - `step-lite0-last2`: one Adam step of EfficientNet-Lite0's last two blocks, head conv, GAP and
//!   Dense(5) from the maps before them;
//! - `step-dense-head`: one Adam step of Dense(25088 -> 5) on feature vectors.

use anyhow::{bail, Context as _, Result};
use burn::tensor::{Distribution, Tensor};
use retrain::layers::{
    ActivationKind, Batch, Dense, GlobalAveragePooling2d, Layer, LayerRef, Precision,
};
use retrain::model::Sequential;
use retrain::train::features::{execution_layers, inference_layers, run_inference};
use retrain::train::optimizer::{Optimizer, OptimizerKind};
use retrain::train::train_step;
use retrain::zoo::{self, ZooOptions};
use retrain::{default_device, device_named, Device, Shape};
use std::sync::Arc;
use std::time::Instant;

const CLASSES: usize = 5;

fn main() -> Result<()> {
    retrain::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(workload) = args.first().cloned() else {
        bail!("usage: retrain-bench WORKLOAD [--batch N] [--runs R] [--warmup W] [--device D] [--precision f32|bf16]");
    };
    let option = |flag: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == flag) {
            Some(i) => args
                .get(i + 1)
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} takes a number")),
            None => Ok(default),
        }
    };
    let batch = option("--batch", 8)?;
    let runs = option("--runs", 5)?;
    let warmup = option("--warmup", 1)?;
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => device_named(args.get(i + 1).context("--device needs a name")?)?,
        None => default_device(),
    };
    let precision: Precision = match args.iter().position(|a| a == "--precision") {
        Some(i) => args
            .get(i + 1)
            .context("--precision needs a value")?
            .parse()
            .map_err(anyhow::Error::msg)?,
        None => Precision::F32,
    };
    let mut step = workload_step(&workload, batch, &device, precision)?;
    for _ in 0..warmup {
        step()?;
    }
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        step()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({"workload": workload, "batch": batch, "seconds": seconds})
    );
    Ok(())
}

type Step = Box<dyn FnMut() -> Result<()>>;

/// The workload's step; `precision` is that of the frozen layers' products (forward workloads).
fn workload_step(
    workload: &str,
    batch: usize,
    device: &Device,
    precision: Precision,
) -> Result<Step> {
    Ok(match workload {
        "forward-vgg16" => forward("vgg16", batch, device, precision)?,
        "forward-efficientnet_lite0" => forward("efficientnet_lite0", batch, device, precision)?,
        "forward-mobilenet_v2" => forward("mobilenet_v2", batch, device, precision)?,
        "step-vgg16-block5" => fine_tune_step("vgg16", "block5_conv1", batch, device)?,
        "step-lite0-last2" => fine_tune_step("efficientnet_lite0", "block6d", batch, device)?,
        "step-dense-head" => {
            let head = Sequential::new(Some("head")).with_input(Shape::Vector(25088));
            let head = with_classifier(head, Vec::new())?;
            let x = random(&[batch, 25088], device);
            train_steps(execution_layers(&head), x, batch, device)
        }
        other => bail!("unknown workload '{other}'"),
    })
}

/// A zoo base without its top at 224x224, random weights.
fn base(name: &str, device: &Device) -> Result<Sequential> {
    let entry = zoo::entry(name)?;
    let model = (entry.build)(&ZooOptions {
        include_top: false,
        input: Some([224, 224]),
        ..ZooOptions::default()
    })?;
    model.initialize(0, device);
    Ok(model)
}

fn random(dims: &[usize], device: &Device) -> Batch {
    let dist = Distribution::Uniform(-1.0, 1.0);
    match *dims {
        [n, c, h, w] => Batch::Maps(Tensor::random([n, c, h, w], dist, device)),
        [n, f] => Batch::Vectors(Tensor::random([n, f], dist, device)),
        _ => unreachable!("benchmark inputs are maps or vectors"),
    }
}

fn forward(name: &str, batch: usize, device: &Device, precision: Precision) -> Result<Step> {
    let layers = inference_layers(&base(name, device)?, device)?;
    let x = random(&[batch, 3, 224, 224], device);
    let device = device.clone();
    Ok(Box::new(move || {
        let out = run_inference(&layers, x.clone(), &device, precision)?;
        // Reading the result back waits for the work, whatever the backend.
        let _ = match out {
            Batch::Maps(t) => t.sum().into_data(),
            Batch::Vectors(t) => t.sum().into_data(),
        };
        Ok(())
    }))
}

/// `layers` (trainable) + GAP + Dense(5), given the input of `layers`.
fn with_classifier(mut model: Sequential, layers: Vec<LayerRef>) -> Result<Sequential> {
    for layer in layers {
        model.add(layer)?;
    }
    if matches!(model.output_shape(), Some(Shape::Image { .. })) {
        model.add(Arc::new(GlobalAveragePooling2d::new(None)))?;
    }
    model.add(Arc::new(Dense::with_name(
        "predictions",
        CLASSES,
        ActivationKind::Linear,
    )))?;
    Ok(model)
}

/// Fine-tuning from `first_trainable` on: the frozen part runs once to make the input, the
/// timed step trains the rest.
fn fine_tune_step(
    name: &str,
    first_trainable: &str,
    batch: usize,
    device: &Device,
) -> Result<Step> {
    let layers = execution_layers(&base(name, device)?);
    let split = layers
        .iter()
        .position(|l| l.name() == first_trainable)
        .with_context(|| format!("{name} has no layer '{first_trainable}'"))?;
    let frozen = inference_layers(&Sequential::from_layers(None, &layers[..split])?, device)?;
    let x = run_inference(
        &frozen,
        random(&[batch, 3, 224, 224], device),
        device,
        Precision::F32,
    )?;
    let [_, c, h, w] = x.dims()[..] else {
        bail!("'{first_trainable}' does not take feature maps");
    };
    let suffix = Sequential::new(Some("suffix")).with_input(Shape::image(Some(h), Some(w), c));
    let suffix = with_classifier(suffix, layers[split..].to_vec())?;
    suffix.set_trainable(true);
    let layers = retrain::model::fuse_activations(&execution_layers(&suffix));
    Ok(train_steps(layers, x, batch, device))
}

fn train_steps(layers: Vec<LayerRef>, x: Batch, batch: usize, device: &Device) -> Step {
    let labels: Vec<usize> = (0..batch).map(|i| i % CLASSES).collect();
    let mut optimizer = Optimizer::new(OptimizerKind::Adam);
    let device = device.clone();
    Box::new(move || {
        train_step(&layers, x.clone(), &labels, &mut optimizer, 1e-4, &device)?;
        Ok(())
    })
}
