//! The seed's transfer learning on the shared ants/bees images, in the library API: feature
//! extraction with a frozen EfficientNet-Lite0, then fine-tuning of its last two blocks.
//!
//! Run: `cargo run --release --example ants_bees [DATA [WEIGHTS [RUN_DIR]]]`

use retrain::data::folder::{decode_samples, ImageFolder, SplitRule};
use retrain::layers::Layer;
use retrain::model::{summary, SummaryOptions};
use retrain::train::head::{transfer_model, unfreeze, HeadConfig, Unfreeze};
use retrain::train::run::RunDir;
use retrain::train::{fit, Event, FitConfig, Flow, TrainingSet};
use std::path::PathBuf;

fn report(event: Event) -> Flow {
    match event {
        Event::Epoch(m) => println!(
            "epoch {:>2}: loss {:.4} accuracy {:.4} val_loss {:.4} val_accuracy {:.4} ({:.1}s)",
            m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.seconds
        ),
        Event::Note(text) => println!("{text}"),
        _ => {}
    }
    Flow::Continue
}

fn main() -> retrain::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| PathBuf::from(args.get(i).map_or(default, String::as_str));
    let data = arg(1, "../shared/data/hymenoptera");
    let weights = arg(2, "../shared/weights/efficientnet-lite0-57934424.pth");
    let runs = arg(3, "runs/example");
    let device = retrain::default_device();

    let folder = ImageFolder::scan(
        &data,
        SplitRule {
            val_split: 0.2,
            seed: 42,
        },
    )?;
    let (model, pretrained) = transfer_model(
        "efficientnet_lite0",
        &weights,
        &HeadConfig::default(),
        folder.class_names.len(),
        None,
        &device,
    )?;
    let train = decode_samples(&folder.train, &pretrained, &|_| {});
    let val = decode_samples(&folder.val, &pretrained, &|_| {});
    for (path, reason) in train.skipped.iter().chain(&val.skipped) {
        println!("skipped {}: {reason}", path.display());
    }
    let set = TrainingSet {
        train: &train.items,
        val: &val.items,
        class_names: &folder.class_names,
        pretrained: &pretrained,
    };

    // 1. Feature extraction: the base is frozen, its outputs are computed once per image.
    let [h, w] = pretrained.input_size;
    model.build(retrain::Shape::image(Some(h), Some(w), 3))?;
    print!(
        "{}",
        summary(
            &model,
            SummaryOptions {
                show_trainable: true,
                ..Default::default()
            }
        )
    );
    let extraction = RunDir::create(&runs.join("feature-extraction"))?;
    fit(
        &model,
        &set,
        &FitConfig::default(),
        Some(&extraction),
        None,
        &device,
        &mut report,
    )?;

    // 2. Fine-tuning: unfreeze the last two blocks, 10x lower learning rate, augmentation on.
    let first = unfreeze(&model, &Unfreeze::LastBlocks(2), false)?;
    println!("fine-tuning from {first}");
    let fine_tuning = RunDir::create(&runs.join("fine-tuning"))?;
    let config = FitConfig {
        lr: 1e-4,
        augment: true,
        ..FitConfig::default()
    };
    let outcome = fit(
        &model,
        &set,
        &config,
        Some(&fine_tuning),
        None,
        &device,
        &mut report,
    )?;
    let trainable: usize = model.trainable_variables().iter().map(|v| v.numel()).sum();
    println!(
        "best epoch {} of the fine-tuning; {trainable} trainable parameters",
        outcome.best_epoch
    );
    Ok(())
}
