//! The broken-image set in tests/data/images/broken (written by tools/make_broken_images.py):
//! awkward but valid images decode correctly, the rest are skipped with a reason, nothing panics.

use retrain::data::folder::{decode_samples, ImageFolder};
use retrain::data::image::{load_rgb, prepare};
use retrain::zoo;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn broken_set() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/broken")
}

#[test]
fn broken_set_decodes_the_valid_files_and_reports_the_rest() {
    let classes = vec!["ants".to_string(), "bees".to_string()];
    let samples = ImageFolder::labelled_files(&broken_set(), &classes).unwrap();
    assert_eq!(samples.len(), 14);
    let config = (zoo::entry("efficientnet_lite0").unwrap().pretrained)();
    let set = decode_samples(&samples, &config, &|_| {});

    let skipped: BTreeMap<String, String> = set
        .skipped
        .iter()
        .map(|(path, reason)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, reason.clone())
        })
        .collect();
    let names: Vec<&str> = skipped.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bomb.png",
            "corrupt_header.jpg",
            "empty.jpg",
            "not_an_image.jpg",
            "truncated.jpg"
        ]
    );
    assert_eq!(skipped["empty.jpg"], "the file is empty");
    assert_eq!(skipped["not_an_image.jpg"], "not a recognized image format");
    assert!(
        skipped["bomb.png"].contains("larger than the decoding limits"),
        "{}",
        skipped["bomb.png"]
    );
    assert!(skipped.values().all(|reason| !reason.contains('\n')));
    assert!(skipped.values().all(|reason| !reason.is_empty()));

    // Every usable image, the 1x1 one included, becomes a full-size model input.
    assert_eq!(set.items.len(), 9);
    for (sample, image) in &set.items {
        let chw = prepare(image, &config);
        assert_eq!(chw.len(), 3 * 224 * 224, "{}", sample.path.display());
        assert!(chw.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn awkward_valid_images_decode_to_the_right_pixels() {
    let load = |name: &str| load_rgb(&broken_set().join(name)).unwrap();

    // Stored 32x16 red-over-blue with EXIF orientation 6: upright it is 16x32, blue left.
    let rotated = load("ants/exif_rotated.jpg");
    assert_eq!(rotated.dimensions(), (16, 32));
    let (left, right) = (rotated.get_pixel(2, 16), rotated.get_pixel(13, 16));
    assert!(left[2] > 200 && left[0] < 60, "{left:?}");
    assert!(right[0] > 200 && right[2] < 60, "{right:?}");

    // 16-bit gray 30000 / 65535 of full scale -> 8-bit 117 on all channels.
    let gray = load("ants/gray16.png");
    assert_eq!(gray.get_pixel(10, 5).0, [117, 117, 117]);

    // CMYK (0, 255, 255, 0) is red.
    let cmyk = load("ants/cmyk.jpg").get_pixel(12, 12).0;
    assert!(cmyk[0] > 200 && cmyk[1] < 60 && cmyk[2] < 60, "{cmyk:?}");

    assert_eq!(load("ants/one_pixel.png").get_pixel(0, 0).0, [10, 200, 30]);
    // A PNG behind a .jpg name is recognized by its content.
    assert_eq!(load("bees/png_named.jpg").dimensions(), (14, 14));
    assert_eq!(load("bees/alpha.png").dimensions(), (12, 12));
    assert_eq!(load("bees/plain.webp").get_pixel(19, 0).0, [255, 0, 128]);
    assert_eq!(load("bees/plain.bmp").get_pixel(16, 12).0, [255, 255, 128]);
}
