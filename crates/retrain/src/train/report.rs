//! Pictures of a run: the confusion matrix and the training curves, as PNG.
//!
//! Drawn with `image` and the public-domain `font8x8` bitmap font, so no font files or system
//! libraries are needed; the few drawing primitives (rectangles, lines, text) are written here.

use super::metrics::Confusion;
use super::EpochMetrics;
use crate::error::{Error, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const GRID: Rgb<u8> = Rgb([220, 220, 220]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);

struct Canvas(RgbImage);

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Canvas(RgbImage::from_pixel(width, height, WHITE))
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
        for yy in y.max(0)..(y + h).min(i64::from(self.0.height())) {
            for xx in x.max(0)..(x + w).min(i64::from(self.0.width())) {
                self.0.put_pixel(xx as u32, yy as u32, color);
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.rect(x.round() as i64 - 1, y.round() as i64 - 1, 2, 2, color);
        }
    }

    /// Text with its top-left corner at (x, y), each font pixel drawn `scale` x `scale`.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb<u8>) {
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

    fn save(self, path: &Path) -> Result<()> {
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

/// The confusion matrix as a heat map with counts (rows: true class, columns: predicted).
pub fn confusion_png(confusion: &Confusion, path: &Path) -> Result<()> {
    let n = confusion.classes.len() as i64;
    let cell = 80i64;
    let label = confusion
        .classes
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(4)
        .min(20) as i64
        * 16
        + 20;
    let (left, top) = (label + 30, 90);
    let mut canvas = Canvas::new((left + n * cell + 20) as u32, (top + n * cell + 40) as u32);
    canvas.text(10, 10, "Confusion matrix", 2, BLACK);
    canvas.text(left, 50, "predicted", 2, BLACK);
    canvas.text(10, top - 24, "true", 2, BLACK);
    for (i, row) in confusion.counts.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let name: String = confusion.classes[i].chars().take(20).collect();
        canvas.text(10, top + i as i64 * cell + cell / 2 - 8, &name, 2, BLACK);
        canvas.text(
            left + i as i64 * cell + 4,
            top - 24,
            &name.chars().take(4).collect::<String>(),
            2,
            BLACK,
        );
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let shade = |c: u8| (255.0 - share * (255.0 - f64::from(c))) as u8;
            let color = Rgb([shade(8), shade(81), shade(156)]);
            let (x, y) = (left + j as i64 * cell, top + i as i64 * cell);
            canvas.rect(x, y, cell - 2, cell - 2, color);
            let text = count.to_string();
            let ink = if share > 0.5 { WHITE } else { BLACK };
            canvas.text(
                x + cell / 2 - text.len() as i64 * 8,
                y + cell / 2 - 8,
                &text,
                2,
                ink,
            );
        }
    }
    canvas.save(path)
}

fn panel(canvas: &mut Canvas, x0: i64, title: &str, series: [(&str, Vec<f64>, Rgb<u8>); 2]) {
    let (w, h, top) = (390i64, 300i64, 60i64);
    let (px, py) = (x0 + 70, top + 10);
    canvas.text(px, 20, title, 2, BLACK);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let epochs = series[0].1.len().max(2);
    for k in 0..=4 {
        let v = lo + (hi - lo) * f64::from(k) / 4.0;
        let y = py + h - (h as f64 * f64::from(k) / 4.0) as i64;
        canvas.rect(px, y, w, 1, GRID);
        canvas.text(x0 + 10, y - 4, &format!("{v:.2}"), 1, BLACK);
    }
    canvas.rect(px, py, 1, h, BLACK);
    canvas.rect(px, py + h, w, 1, BLACK);
    canvas.text(px + w / 2 - 20, py + h + 12, "epoch", 1, BLACK);
    canvas.text(px, py + h + 12, "1", 1, BLACK);
    canvas.text(px + w - 16, py + h + 12, &epochs.to_string(), 1, BLACK);
    let point = |i: usize, v: f64| {
        (
            (px + (w as f64 * i as f64 / (epochs - 1) as f64) as i64) as f64,
            (py + h) as f64 - h as f64 * (v - lo) / (hi - lo),
        )
    };
    for (k, (name, values, color)) in series.iter().enumerate() {
        for i in 1..values.len() {
            canvas.line(point(i - 1, values[i - 1]), point(i, values[i]), *color);
        }
        let ly = 14 + k as i64 * 16;
        canvas.rect(px + w - 120, ly + 2, 20, 4, *color);
        canvas.text(px + w - 94, ly, name, 1, BLACK);
    }
}

/// Loss and accuracy per epoch, training and validation, side by side.
pub fn curves_png(history: &[EpochMetrics], path: &Path) -> Result<()> {
    let mut canvas = Canvas::new(1000, 420);
    let pick = |f: fn(&EpochMetrics) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    panel(
        &mut canvas,
        0,
        "loss",
        [
            ("loss", pick(|m| m.loss), TRAIN),
            ("val_loss", pick(|m| m.val_loss), VAL),
        ],
    );
    panel(
        &mut canvas,
        500,
        "accuracy",
        [
            ("accuracy", pick(|m| m.accuracy), TRAIN),
            ("val_acc", pick(|m| m.val_accuracy), VAL),
        ],
    );
    canvas.save(path)
}
