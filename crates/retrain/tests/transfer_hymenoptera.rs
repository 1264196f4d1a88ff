//! The main job on the shared ants/bees set with the real EfficientNet-Lite0 weights: feature
//! extraction with every default (GAP head, Adam 1e-3, batch 32, 10 epochs, seed 42) reaches the
//! accuracy a PyTorch notebook reaches on the same weights (0.954).

mod common;

use common::{lite0_weights, shared};
use retrain::data::folder::{decode_samples, ImageFolder, SplitRule};
use retrain::layers::Layer;
use retrain::train::head::{transfer_model, HeadConfig};
use retrain::train::{fit, FitConfig, Flow, TrainingSet};

#[test]
fn feature_extraction_with_defaults_reaches_095_on_hymenoptera() {
    let device = retrain::default_device();
    let folder = ImageFolder::scan(
        &shared("data/hymenoptera"),
        SplitRule {
            val_split: 0.2,
            seed: 42,
        },
    )
    .unwrap();
    assert_eq!((folder.train.len(), folder.val.len()), (245, 153));
    let (model, pretrained) = transfer_model(
        "efficientnet_lite0",
        &lite0_weights(),
        &HeadConfig::default(),
        folder.class_names.len(),
        None,
        &device,
    )
    .unwrap();
    // Trained at 224, its features are used at the FixRes size.
    assert_eq!(pretrained.input_size, [288, 288]);
    let train = decode_samples(&folder.train, &pretrained, &|_| {});
    let val = decode_samples(&folder.val, &pretrained, &|_| {});
    let [h, w] = pretrained.input_size;
    model
        .build(retrain::Shape::image(Some(h), Some(w), 3))
        .unwrap();
    let set = TrainingSet {
        train: &train.items,
        val: &val.items,
        class_names: &folder.class_names,
        pretrained: &pretrained,
    };
    let outcome = fit(
        &model,
        &set,
        &FitConfig::default(),
        None,
        None,
        &device,
        &mut |_| Flow::Continue,
    )
    .unwrap();
    let kept = &outcome.history[outcome.best_epoch - 1];
    assert_eq!(outcome.history.len(), 10);
    assert!(
        kept.val_accuracy >= 0.95,
        "val accuracy {:.4} of the kept epoch {} < 0.95",
        kept.val_accuracy,
        outcome.best_epoch
    );
}
