//! Real-world image files: every format, EXIF orientation, color conversions, broken files.

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use retrain::data::image::{decode_rgb, load_rgb};
use std::io::Cursor;

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// A 4x2 image whose left column is red and the rest blue.
fn marked() -> image::RgbImage {
    ImageBuffer::from_fn(4, 2, |x, _| {
        if x == 0 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
}

#[test]
fn decodes_every_supported_format_to_rgb() {
    let rgb = DynamicImage::ImageRgb8(marked());
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Gif,
        ImageFormat::WebP,
    ] {
        let decoded = decode_rgb(&encode(rgb.clone(), format)).unwrap();
        assert_eq!(decoded.dimensions(), (4, 2), "{format:?}");
        assert_eq!(decoded.get_pixel(3, 1), &Rgb([0, 0, 255]), "{format:?}");
    }
    let jpeg = decode_rgb(&encode(
        DynamicImage::ImageRgb8(ImageBuffer::from_pixel(16, 16, Rgb([200, 100, 50]))),
        ImageFormat::Jpeg,
    ))
    .unwrap();
    let px = jpeg.get_pixel(8, 8);
    assert!(
        px[0].abs_diff(200) < 6 && px[1].abs_diff(100) < 6 && px[2].abs_diff(50) < 6,
        "{px:?}"
    );
}

#[test]
fn grayscale_alpha_and_16_bit_become_8_bit_rgb() {
    let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(2, 2, Luma([77])));
    assert_eq!(
        decode_rgb(&encode(gray, ImageFormat::Png))
            .unwrap()
            .get_pixel(0, 0),
        &Rgb([77, 77, 77])
    );
    let gray_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(2, 2, LumaA([90, 10])));
    assert_eq!(
        decode_rgb(&encode(gray_alpha, ImageFormat::Png))
            .unwrap()
            .get_pixel(1, 1),
        &Rgb([90, 90, 90])
    );
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(2, 2, Rgba([1, 2, 3, 0])));
    assert_eq!(
        decode_rgb(&encode(rgba, ImageFormat::Png))
            .unwrap()
            .get_pixel(0, 1),
        &Rgb([1, 2, 3])
    );
    let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(2, 2, Rgb([65535u16, 32896, 0])));
    assert_eq!(
        decode_rgb(&encode(deep, ImageFormat::Png))
            .unwrap()
            .get_pixel(0, 0),
        &Rgb([255, 128, 0])
    );
}

/// Insert an EXIF APP1 segment with the given orientation right after the JPEG SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let big: image::RgbImage = ImageBuffer::from_fn(32, 16, |x, _| {
        if x < 8 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let jpeg = encode(DynamicImage::ImageRgb8(big), ImageFormat::Jpeg);
    let upright = decode_rgb(&with_exif_orientation(&jpeg, 1)).unwrap();
    assert_eq!(upright.dimensions(), (32, 16));
    // Orientation 6: the camera was turned; the image is shown rotated 90 degrees clockwise,
    // so the red left edge ends up at the top.
    let rotated = decode_rgb(&with_exif_orientation(&jpeg, 6)).unwrap();
    assert_eq!(rotated.dimensions(), (16, 32));
    assert!(rotated.get_pixel(8, 2)[0] > 200 && rotated.get_pixel(8, 30)[2] > 200);
}

#[test]
fn broken_files_are_errors_that_name_the_file() {
    let dir = std::env::temp_dir().join(format!("retrain-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = encode(DynamicImage::ImageRgb8(marked()), ImageFormat::Png);
    let jpeg = encode(
        DynamicImage::ImageRgb8(ImageBuffer::from_pixel(64, 64, Rgb([9, 9, 9]))),
        ImageFormat::Jpeg,
    );
    // A tiny PNG header declaring 100000 x 100000 pixels: a decompression bomb.
    let mut bomb = png[..16].to_vec();
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&png[24..]);
    for (name, bytes) in [
        ("empty.jpg", Vec::new()),
        ("text.jpg", b"<html>not an image</html>".to_vec()),
        ("truncated.jpg", jpeg[..jpeg.len() / 3].to_vec()),
        ("bomb.png", bomb),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_rgb(&path).expect_err(name).to_string();
        assert!(err.contains(name), "{err}");
    }
    let err = load_rgb(&dir.join("missing.jpg")).unwrap_err().to_string();
    assert!(err.contains("missing.jpg"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
