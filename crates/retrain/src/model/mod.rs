//! Models: a Sequential of named layers (which is itself a layer, so models nest), its
//! Keras-style summary, and retrain's own model files.

mod extractor;
mod fold;
mod persist;
mod plot;
mod sequential;
mod summary;

pub use extractor::FeatureExtractor;
pub use fold::fold_batch_norms;
pub use persist::{load_model, save_model, ModelFile};
pub use plot::{plot_model, to_dot, to_svg, PlotOptions, RankDir};
pub use sequential::{ModelSpec, Sequential};
pub use summary::{group_thousands, summary, SummaryOptions};
