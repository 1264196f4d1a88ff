//! Minimal raster drawing for reports and plots: rectangles, lines and text.
//!
//! Drawn with `image` and the public-domain `font8x8` bitmap font, so no font files or system
//! libraries are needed; these few primitives are written here rather than pulling in a plotting
//! stack that needs system fonts.

use crate::error::{Error, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Background.
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Ink.
pub const BLACK: Rgb<u8> = Rgb([20, 20, 20]);

/// An RGB picture to draw on.
pub struct Canvas(RgbImage);

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Canvas(RgbImage::from_pixel(width, height, WHITE))
    }

    /// A filled rectangle (clipped).
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
        for yy in y.max(0)..(y + h).min(i64::from(self.0.height())) {
            for xx in x.max(0)..(x + w).min(i64::from(self.0.width())) {
                self.0.put_pixel(xx as u32, yy as u32, color);
            }
        }
    }

    /// A 2-pixel line.
    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.rect(x.round() as i64 - 1, y.round() as i64 - 1, 2, 2, color);
        }
    }

    /// Text with its top-left corner at (x, y), each font pixel drawn `scale` x `scale`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb<u8>) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = BASIC_FONTS
                .get(ch)
                .or_else(|| BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let px = x + (i as i64 * 8 + col) * scale;
                        self.rect(px, y + row as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Write as PNG, atomically.
    pub fn save(self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        self.0
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
        crate::io::write_atomic(path, &bytes)
    }
}
