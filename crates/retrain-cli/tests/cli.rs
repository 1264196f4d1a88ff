//! The `retrain` binary as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shared(relative: &str) -> PathBuf {
    std::env::var_os("RETRAIN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join(relative)
}

fn retrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrain"))
        .args(args)
        .output()
        .expect("run retrain")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn summary_prints_keras_totals() {
    let out = retrain(&["summary", "vgg16"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("Total params: 138,357,544 (527.79 MB)"),
        "{text}"
    );
    assert!(text.contains("block5_pool (MaxPooling2D)"));

    let text = stdout(&retrain(&["summary", "vgg16", "--no-top"]));
    assert!(text.contains("Total params: 14,714,688"), "{text}");
    assert!(text.contains("(None, None, None, 512)"), "{text}");

    let text = stdout(&retrain(&[
        "summary",
        "vgg16",
        "--no-top",
        "--input",
        "160x160",
        "--trainable",
    ]));
    assert!(
        text.contains("(None, 5, 5, 512)") && text.contains("Trainable"),
        "{text}"
    );
}

#[test]
fn models_lists_the_zoo() {
    let text = stdout(&retrain(&["models"]));
    for needle in [
        "vgg16",
        "138,357,544",
        "vgg19",
        "143,667,240",
        "efficientnet_lite0",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}

#[test]
fn unknown_model_is_one_clear_error() {
    let out = retrain(&["summary", "resnet9000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model 'resnet9000'") && err.contains("vgg16"),
        "{err}"
    );
}

#[test]
fn predict_prints_top_classes_and_reports_bad_images() {
    let ant = shared("data/hymenoptera/val/ants/10308379_1b6c72e180.jpg");
    let bee = shared("data/hymenoptera/val/bees/10870992_eebeeb3a12.jpg");
    let bogus =
        std::env::temp_dir().join(format!("retrain-not-an-image-{}.jpg", std::process::id()));
    std::fs::write(&bogus, b"this is not a jpeg").unwrap();
    let weights = shared("weights/efficientnet-lite0-57934424.pth");
    let labels = shared("fixtures/imagenet_classes.txt");
    let args = [
        "predict",
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
        ant.to_str().unwrap(),
        bogus.to_str().unwrap(),
        bee.to_str().unwrap(),
    ];
    let out = retrain(&args);
    let _ = std::fs::remove_file(&bogus);
    assert!(
        !out.status.success(),
        "a failed image makes the exit code non-zero"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retrain-not-an-image"), "{err}");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one JSON object per readable image");
    for (line, want, name) in [(&lines[0], 310, "ant"), (&lines[1], 309, "bee")] {
        let top = line["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["index"], want, "{line}");
        assert_eq!(top[0]["name"], name, "{line}");
        let p: Vec<f64> = top
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .collect();
        assert!(
            p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0 && p[2] > 0.0,
            "{line}"
        );
    }

    let text = stdout(&retrain(&[
        "predict",
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights.to_str().unwrap(),
        ant.to_str().unwrap(),
    ]));
    assert!(text.contains("class 310"), "{text}");
    assert_eq!(text.lines().count(), 6, "file line plus the top 5:\n{text}");
}
