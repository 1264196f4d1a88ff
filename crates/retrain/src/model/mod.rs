//! Models: a Sequential of named layers (which is itself a layer, so models nest), and its
//! Keras-style summary.

mod sequential;
mod summary;

pub use sequential::{ModelSpec, Sequential};
pub use summary::{group_thousands, summary, SummaryOptions};
