//! Zero-shot ImageNet classification of the shared ants/bees validation images with the real
//! EfficientNet-Lite0 weights: ImageNet class 310 is "ant", 309 is "bee".

mod common;

use common::{lite0_weights, shared};
use retrain::layers::{ActivationKind, Preprocess};
use retrain::model::Sequential;
use retrain::predict::classify_files;
use retrain::zoo::{self, ZooOptions};
use std::path::PathBuf;
use std::sync::Arc;

const ANT: usize = 310;
const BEE: usize = 309;

fn images(class: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(shared(&format!("data/hymenoptera/val/{class}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    files
}

#[test]
fn lite0_tells_ants_from_bees_zero_shot() {
    let device = retrain::default_device();
    let entry = zoo::entry("efficientnet_lite0").unwrap();
    let config = (entry.pretrained)();
    let options = ZooOptions {
        classifier_activation: ActivationKind::Linear,
        ..ZooOptions::default()
    };
    let base = zoo::load_pretrained(entry, &options, &lite0_weights(), &device).unwrap();
    let mut model = Sequential::new(None);
    model
        .add(Arc::new(Preprocess::new(None, config.preprocess.clone())))
        .unwrap();
    model.add(Arc::new(base)).unwrap();

    let (mut right, mut total) = (0, 0);
    for (class, (want, other)) in [("ants", (ANT, BEE)), ("bees", (BEE, ANT))] {
        let files = images(class);
        let results =
            classify_files(&model, &config, ActivationKind::Linear, &files, 16, &device).unwrap();
        for r in results {
            let p = r.probabilities.unwrap_or_else(|e| panic!("{e}"));
            total += 1;
            if p[want] > p[other] {
                right += 1;
            }
        }
    }
    assert_eq!(total, 153);
    let accuracy = right as f64 / total as f64;
    eprintln!("zero-shot ant/bee accuracy: {right}/{total} = {accuracy:.3}");
    assert!(accuracy >= 0.97, "accuracy {accuracy:.3} < 0.97");
}
