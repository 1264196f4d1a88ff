//! Progress bars and per-epoch lines for training events.

use indicatif::{ProgressBar, ProgressStyle};
use retrain::train::{Event, Flow};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Ctrl-C presses so far: the first stops training after the current epoch's checkpoint, the
/// second exits at once (every file retrain writes is atomic, so nothing is left half-written).
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Install the Ctrl-C handler.
pub fn handle_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!(
                "\ninterrupted: finishing this epoch and saving it (Ctrl-C again to quit now)"
            );
        } else {
            std::process::exit(130);
        }
    });
}

/// Draws bars for preparation and training steps, and prints one line per epoch like Keras.
pub struct Reporter {
    bar: Option<(String, ProgressBar)>,
    epochs: usize,
}

impl Reporter {
    /// A reporter for a run of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Reporter { bar: None, epochs }
    }

    fn bar(&mut self, key: &str, total: usize, template: &str) -> &ProgressBar {
        if self.bar.as_ref().is_none_or(|(k, _)| k != key) {
            if let Some((_, old)) = self.bar.take() {
                old.finish_and_clear();
            }
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some((key.to_string(), bar));
        }
        &self.bar.as_ref().expect("bar just set").1
    }

    /// Handle one event; asks to stop once Ctrl-C was pressed.
    pub fn event(&mut self, event: Event) -> Flow {
        self.show(event);
        if INTERRUPTS.load(Ordering::SeqCst) > 0 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn show(&mut self, event: Event) {
        match event {
            Event::Preparing { what, done, total } => {
                let bar = self.bar(what, total, "{msg:>16} [{bar:30}] {pos}/{len} {elapsed}");
                bar.set_message(what.to_string());
                bar.set_position(done as u64);
            }
            Event::Step {
                epoch,
                done,
                total,
                loss,
            } => {
                let epochs = self.epochs;
                let bar = self.bar(
                    &format!("epoch {epoch}"),
                    total,
                    "{msg} [{bar:30}] {pos}/{len} {elapsed}",
                );
                bar.set_message(format!("Epoch {epoch}/{epochs} loss {loss:.4}"));
                bar.set_position(done as u64);
            }
            Event::Epoch(m) => {
                if let Some((_, bar)) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let took = if m.seconds < 1.0 {
                    format!("{:.0}ms", m.seconds * 1000.0)
                } else {
                    format!("{:.1}s", m.seconds)
                };
                println!(
                    "Epoch {}/{} - {took} - loss: {:.4} - accuracy: {:.4} - val_loss: {:.4} - val_accuracy: {:.4} - lr: {:.2e}",
                    m.epoch, self.epochs, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.lr
                );
            }
            Event::Note(text) => {
                if let Some((_, bar)) = self.bar.take() {
                    bar.finish_and_clear();
                }
                println!("{text}");
            }
        }
    }

    /// Clear any bar left.
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
