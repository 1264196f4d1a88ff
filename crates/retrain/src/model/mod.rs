//! Models: a Sequential of named layers or a functional graph of them (a model is itself a
//! layer, so models nest), its Keras-style summary and plot, and retrain's own model files.

mod extractor;
mod fold;
mod functional;
mod fuse;
mod persist;
mod plot;
mod sequential;
mod summary;

pub use extractor::{FeatureExtractor, LeafGraph};
pub use fold::fold_batch_norms;
pub use functional::{input, Apply, SymbolicTensor};
pub use fuse::fuse_activations;
pub use persist::{
    load_model, model_from_json, save_model, weights_bytes, ModelFile, WEIGHTS_FILE,
};
pub use plot::{plot_model, to_dot, to_svg, PlotOptions, RankDir};
pub use sequential::{ModelSpec, Segment, Sequential, INPUT_NAME};
pub use summary::{group_thousands, summary, SummaryOptions};
