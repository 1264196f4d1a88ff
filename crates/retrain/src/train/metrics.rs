//! Classification metrics: loss, accuracy, per-class precision / recall / F1, confusion matrix.

use serde::Serialize;

/// Confusion counts: `counts[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Confusion {
    /// Class names.
    pub classes: Vec<String>,
    /// Row = true class, column = predicted class.
    pub counts: Vec<Vec<usize>>,
}

/// Precision, recall and F1 of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassReport {
    /// Class name.
    pub class: String,
    /// Of the predictions of this class, the fraction that were right.
    pub precision: f64,
    /// Of the samples of this class, the fraction found.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Samples of this class.
    pub support: usize,
}

impl Confusion {
    /// Count (true, predicted) pairs.
    pub fn new(classes: &[String], pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let n = classes.len();
        let mut counts = vec![vec![0; n]; n];
        for (t, p) in pairs {
            counts[t][p] += 1;
        }
        Confusion {
            classes: classes.to_vec(),
            counts,
        }
    }

    /// Fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let total: usize = self.counts.iter().flatten().sum();
        let right: usize = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / total.max(1) as f64
    }

    /// Per-class precision, recall, F1.
    pub fn per_class(&self) -> Vec<ClassReport> {
        let n = self.counts.len();
        (0..n)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let predicted: usize = (0..n).map(|t| self.counts[t][c]).sum();
                let support: usize = self.counts[c].iter().sum();
                let precision = if predicted == 0 {
                    0.0
                } else {
                    tp / predicted as f64
                };
                let recall = if support == 0 {
                    0.0
                } else {
                    tp / support as f64
                };
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassReport {
                    class: self.classes[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// The matrix as a text table.
    pub fn table(&self) -> String {
        let width = self
            .classes
            .iter()
            .map(|c| c.len())
            .chain([9])
            .max()
            .unwrap_or(9);
        let mut out = format!("{:>width$} │", "true\\pred");
        for c in &self.classes {
            out += &format!(" {c:>width$}");
        }
        out += "\n";
        out += &format!(
            "{}┼{}\n",
            "─".repeat(width + 1),
            "─".repeat((width + 1) * self.classes.len())
        );
        for (i, row) in self.counts.iter().enumerate() {
            out += &format!("{:>width$} │", self.classes[i]);
            for v in row {
                out += &format!(" {v:>width$}");
            }
            out += "\n";
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_f1_from_counts() {
        let classes = vec!["a".to_string(), "b".to_string()];
        // true a: 3 right, 1 as b; true b: 2 right, 2 as a.
        let pairs = [
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 1),
            (1, 1),
            (1, 1),
            (1, 0),
            (1, 0),
        ];
        let c = Confusion::new(&classes, pairs);
        assert_eq!(c.counts, vec![vec![3, 1], vec![2, 2]]);
        assert!((c.accuracy() - 5.0 / 8.0).abs() < 1e-12);
        let r = c.per_class();
        assert!((r[0].precision - 0.6).abs() < 1e-12);
        assert!((r[0].recall - 0.75).abs() < 1e-12);
        assert!((r[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r[1].f1 - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert!(c.table().contains("true\\pred"));
    }
}
