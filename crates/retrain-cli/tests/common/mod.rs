//! Helpers shared by the command-line tests: running the binary, the shared data, small folders.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A path inside the read-only `shared/` folder beside the checkout (or `$RETRAIN_SHARED`).
pub fn shared(relative: &str) -> PathBuf {
    std::env::var_os("RETRAIN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join(relative)
}

/// Run the `retrain` binary with these arguments.
pub fn retrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrain"))
        .args(args)
        .output()
        .expect("run retrain")
}

/// The standard output of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small two-class folder: red-dominant vs blue-dominant pictures, 6 per class and split.
pub fn tiny_folder(root: &std::path::Path) {
    for split in ["train", "val"] {
        for (class, color) in [("blue", [30u8, 60, 220]), ("red", [220u8, 50, 30])] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..6u32 {
                let img = image::RgbImage::from_fn(96, 80, |x, y| {
                    let n = ((x * 5 + y * 3 + i * 17) % 40) as u8;
                    image::Rgb([
                        color[0].saturating_add(n),
                        color[1].saturating_add(n),
                        color[2].saturating_add(n),
                    ])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/red/notes.txt"), "not an image").unwrap();
}
