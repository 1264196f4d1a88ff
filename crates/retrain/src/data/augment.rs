//! Training-time augmentation: random resized crop and horizontal flip (torchvision's defaults).

use super::image::{center_chw, resize_region, to_chw};
use crate::zoo::PretrainedConfig;
use image::imageops;
use image::RgbImage;
use rand::Rng;

/// torchvision `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))` then a horizontal
/// flip with probability 0.5; CHW values in [0, 255].
pub fn random_view(image: &RgbImage, config: &PretrainedConfig, rng: &mut impl Rng) -> Vec<f32> {
    let [out_h, out_w] = config.input_size;
    let (w, h) = (image.width() as f64, image.height() as f64);
    let area = w * h;
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..1.0);
        let log_ratio = rng.random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round();
        let ch = (target / ratio).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=(w - cw) as u32);
            let y = rng.random_range(0..=(h - ch) as u32);
            crop = Some((x, y, cw as u32, ch as u32));
            break;
        }
    }
    // Fallback: the largest centered crop within the ratio bounds.
    let (x, y, cw, ch) = crop.unwrap_or_else(|| {
        let side = w.min(h) as u32;
        (((w as u32) - side) / 2, ((h as u32) - side) / 2, side, side)
    });
    let mut view = resize_region(
        image,
        Some([x, y, cw, ch]),
        out_w as u32,
        out_h as u32,
        config.interpolation,
    );
    if rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut view);
    }
    to_chw(&view)
}

/// The evaluation view: center crop of an image already resized on its shorter side.
pub fn center_view(image: &RgbImage, config: &PretrainedConfig) -> Vec<f32> {
    let [h, w] = config.input_size;
    center_chw(image, h, w)
}
