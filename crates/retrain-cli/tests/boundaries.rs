//! Inputs at the boundary: wrong weights, mismatched classes, incompatible run directories,
//! unwritable and full disks. Each is one clear error line naming the thing at fault, a non-zero
//! exit code, and nothing saved before is damaged.

mod common;

use common::{retrain, shared, stderr, stdout, tiny_folder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("boundary-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lite0() -> String {
    shared("weights/efficientnet-lite0-57934424.pth")
        .to_string_lossy()
        .into_owned()
}

/// A finished two-epoch feature-extraction run on the tiny folder.
fn trained_run(work: &Path) -> (PathBuf, PathBuf) {
    let data = work.join("data");
    tiny_folder(&data);
    let run = work.join("run");
    let out = retrain(&[
        "fit",
        data.to_str().unwrap(),
        "--base",
        "efficientnet_lite0",
        "--weights",
        &lite0(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    (data, run)
}

/// The one error line of a failed command.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", stdout(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// Every file of a run directory with its bytes (the feature cache aside).
fn snapshot(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Every file of the run is as it was, except command.txt, which only grows (one line per try).
fn assert_unchanged(run: &Path, before: &[(String, Vec<u8>)]) {
    let after = snapshot(run);
    let changed: Vec<&str> = after
        .iter()
        .filter(|(name, bytes)| {
            !before.iter().any(|(old_name, old)| {
                old_name == name
                    && (old == bytes || (name == "command.txt" && bytes.starts_with(old)))
            })
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        changed.is_empty() && after.len() == before.len(),
        "the run directory changed: {changed:?}"
    );
}

#[test]
fn weights_of_another_architecture_name_the_file_and_the_tensor() {
    let work = workdir("arch");
    let data = work.join("data");
    tiny_folder(&data);
    let line = error_line(&retrain(&[
        "extract",
        data.to_str().unwrap(),
        "--base",
        "efficientnet_lite1",
        "--weights",
        &lite0(),
        "-o",
        work.join("f.safetensors").to_str().unwrap(),
    ]));
    assert!(
        line.contains("efficientnet-lite0-57934424.pth")
            && line.contains("not weights for 'efficientnet_lite1'")
            && line.contains("[144, 1, 5, 5]"),
        "{line}"
    );
    assert!(!work.join("f.safetensors").exists());
}

#[test]
fn class_mismatch_and_incompatible_versions_are_refused_without_damage() {
    let work = workdir("classes");
    let (data, run) = trained_run(&work);
    let before = snapshot(&run);

    let three = work.join("three");
    tiny_folder(&three);
    for split in ["train", "val"] {
        let green = three.join(split).join("green");
        std::fs::create_dir_all(&green).unwrap();
        image::RgbImage::from_pixel(40, 40, image::Rgb([20, 200, 40]))
            .save(green.join("g.png"))
            .unwrap();
    }
    let line = error_line(&retrain(&[
        "fit",
        three.to_str().unwrap(),
        "--from",
        run.to_str().unwrap(),
        "--out",
        work.join("fine").to_str().unwrap(),
    ]));
    assert!(
        line.contains(r#"trained on classes ["blue", "red"]"#) && line.contains("green"),
        "{line}"
    );
    let line = error_line(&retrain(&[
        "evaluate",
        run.to_str().unwrap(),
        three.to_str().unwrap(),
    ]));
    assert!(line.contains("'green'"), "{line}");

    let future = work.join("future");
    std::fs::create_dir_all(&future).unwrap();
    for (name, bytes) in &before {
        std::fs::write(future.join(name), bytes).unwrap();
    }
    let json = std::fs::read_to_string(future.join("model.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["version"] = serde_json::json!(99);
    std::fs::write(future.join("model.json"), value.to_string()).unwrap();
    let line = error_line(&retrain(&[
        "evaluate",
        future.to_str().unwrap(),
        data.to_str().unwrap(),
    ]));
    assert!(
        line.contains("model.json") && line.contains("version 99"),
        "{line}"
    );

    assert_unchanged(&run, &before);
}

#[test]
fn an_unwritable_output_directory_is_one_error_line() {
    let work = workdir("readonly");
    let data = work.join("data");
    tiny_folder(&data);
    let locked = work.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    let mut permissions = std::fs::metadata(&locked).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(&locked, permissions).unwrap();
    // Root ignores permission bits; /sys is a read-only file system in containers then.
    let out_dir = if std::fs::write(locked.join("probe"), b"").is_err() {
        locked.join("run")
    } else {
        PathBuf::from("/sys/retrain-boundary-test-run")
    };
    let line = error_line(&retrain(&[
        "fit",
        data.to_str().unwrap(),
        "--base",
        "efficientnet_lite0",
        "--weights",
        &lite0(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(line.contains(out_dir.to_str().unwrap()), "{line}");
    assert!(!out_dir.exists());
}

/// `retrain` with the size of any file it writes limited to `kib` KiB (RLIMIT_FSIZE; SIGXFSZ
/// ignored, so writes fail with an error as on a full disk).
fn retrain_with_file_limit(kib: u64, args: &[&str]) -> Output {
    let mut script = format!(
        "trap '' XFSZ; ulimit -f {kib}; exec '{}'",
        env!("CARGO_BIN_EXE_retrain")
    );
    for arg in args {
        script.push_str(&format!(" '{arg}'"));
    }
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_the_last_good_state() {
    let work = workdir("full");
    let (data, run) = trained_run(&work);
    // Ask the finished 2-epoch run for 4 epochs, so --resume has to write new state.
    let state_path = run.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["config"]["epochs"] = serde_json::json!(4);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let before = snapshot(&run);

    let args = [
        "fit",
        data.to_str().unwrap(),
        "--resume",
        "--out",
        run.to_str().unwrap(),
    ];
    // Room for command.txt only: epoch 3's first weights file fails, nothing else changes.
    let line = error_line(&retrain_with_file_limit(4, &args));
    assert!(line.contains("File too large"), "{line}");
    assert!(line.contains(run.to_str().unwrap()), "{line}");
    assert_unchanged(&run, &before);

    // Room for a head's weights and checkpoints, not for the whole model written at the end:
    // epochs 3 and 4 are kept, the run loads as its best model, and a resume saves it.
    let line = error_line(&retrain_with_file_limit(64, &args));
    assert!(
        line.contains("File too large") && line.contains("model.safetensors"),
        "{line}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 4);
    assert!(run.join("best.safetensors").is_file());
    let evaluated = retrain(&[
        "evaluate",
        run.to_str().unwrap(),
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(evaluated.status.success(), "{}", stderr(&evaluated));
    let report: serde_json::Value = serde_json::from_str(&stdout(&evaluated)).unwrap();
    let (loss, best) = (
        report["loss"].as_f64().unwrap(),
        state["best_val_loss"].as_f64().unwrap(),
    );
    assert!((loss - best).abs() < 1e-4, "evaluated {loss}, best {best}");
    let finished = retrain(&args);
    assert!(finished.status.success(), "{}", stderr(&finished));
    assert!(stdout(&finished).contains("already finished all 4 epochs"));
    assert!(!run.join("best.safetensors").exists());
    let mut state = state;
    state["config"]["epochs"] = serde_json::json!(6);
    std::fs::write(&state_path, state.to_string()).unwrap();

    let out = retrain(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Epoch 6/6"), "{}", stdout(&out));
    // command.txt keeps the command that started the run and adds each resume that trained
    // (the one that only saved the finished model does not).
    let commands = std::fs::read_to_string(run.join("command.txt")).unwrap();
    let lines: Vec<&str> = commands.lines().collect();
    assert_eq!(lines.len(), 4, "{commands}");
    assert!(lines[0].contains("--base efficientnet_lite0") && lines[2].contains("--resume"));
}
