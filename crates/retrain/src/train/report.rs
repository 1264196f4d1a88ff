//! Pictures of a run: the confusion matrix and the training curves, as PNG.
//!
use super::metrics::Confusion;
use super::EpochMetrics;
use crate::draw::{Canvas, BLACK, WHITE};
use crate::error::Result;
use image::Rgb;
use std::path::Path;

const GRID: Rgb<u8> = Rgb([220, 220, 220]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);

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
