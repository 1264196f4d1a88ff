//! Data: decoding real-world image files into model-ready tensors.

pub mod image;
