//! The `retrain` binary as a user runs it.

mod common;

use common::{retrain, shared, stdout, tiny_folder};
use std::path::PathBuf;

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
    let lite0 = text
        .lines()
        .find(|line| line.starts_with("efficientnet_lite0"))
        .unwrap();
    assert!(
        lite0.contains("224x224   288x288"),
        "input and transfer sizes: {lite0}"
    );
}

#[test]
fn a_closed_stdout_ends_the_command_without_a_panic() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_retrain"))
        .arg("models")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `retrain models | head -0`
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
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

#[test]
fn fit_evaluate_predict_extract_and_resume_from_the_command_line() {
    let work =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-fit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let data = work.join("data");
    tiny_folder(&data);
    let run = work.join("run");
    let weights = shared("weights/efficientnet-lite0-57934424.pth");
    let (data_s, run_s, weights_s) = (
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        weights.to_str().unwrap(),
    );

    let out = retrain(&[
        "fit",
        data_s,
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights_s,
        "--out",
        run_s,
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("notes.txt"),
        "the skipped file is reported: {text}"
    );
    assert!(
        text.contains("Epoch 3/3") && text.contains("val_accuracy"),
        "{text}"
    );
    for file in [
        "model.json",
        "model.safetensors",
        "history.csv",
        "command.txt",
        "state.json",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }

    let again = retrain(&[
        "fit",
        data_s,
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights_s,
        "--out",
        run_s,
    ]);
    assert!(
        !again.status.success(),
        "an existing run is never overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let done = retrain(&["fit", data_s, "--resume", "--out", run_s]);
    assert!(done.status.success() && stdout(&done).contains("already finished"));

    let summary = stdout(&retrain(&["summary", run_s, "--trainable"]));
    assert!(
        summary.contains("efficientnet_lite0 (Functional)")
            && summary.contains("Trainable params: 2,562"),
        "{summary}"
    );

    let eval = retrain(&["evaluate", run_s, data_s, "--json"]);
    assert!(eval.status.success());
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(report["accuracy"].as_f64().unwrap() >= 0.9, "{report}");
    assert_eq!(report["confusion"]["counts"].as_array().unwrap().len(), 2);

    let pred = retrain(&[
        "predict",
        run_s,
        data.join("val/red").to_str().unwrap(),
        "--json",
        "--top-k",
        "1",
    ]);
    assert!(pred.status.success());
    let lines: Vec<serde_json::Value> = stdout(&pred)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(
        lines
            .iter()
            .filter(|l| l["top_k"][0]["name"] == "red")
            .count()
            >= 5,
        "{lines:?}"
    );

    let features = work.join("features.safetensors");
    let ext = retrain(&[
        "extract",
        data_s,
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights_s,
        "-o",
        features.to_str().unwrap(),
    ]);
    assert!(
        ext.status.success(),
        "{}",
        String::from_utf8_lossy(&ext.stderr)
    );
    let bytes = std::fs::read(&features).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header["features"]["shape"], serde_json::json!([24, 1280]));
    assert_eq!(header["labels"]["dtype"], "I64");
    assert!(header["__metadata__"]["classes"]
        .as_str()
        .unwrap()
        .contains("red"));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn extract_on_the_broken_image_set_reports_what_it_skipped() {
    let broken =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../retrain/tests/data/images/broken");
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("broken-{}.safetensors", std::process::id()));
    let weights = shared("weights/efficientnet-lite0-57934424.pth");
    let out = retrain(&[
        "extract",
        broken.to_str().unwrap(),
        "--base",
        "efficientnet_lite0",
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("skipped 5 image file(s)"), "{text}");
    for name in [
        "empty.jpg",
        "truncated.jpg",
        "bomb.png",
        "corrupt_header.jpg",
        "not_an_image.jpg",
    ] {
        assert!(text.contains(name), "{name} not reported: {text}");
    }
    assert!(text.contains("9 images -> features [9, 1280]"), "{text}");
    let _ = std::fs::remove_file(&output);
}
