//! Data: image folders, decoding real-world image files, augmentation.

pub mod augment;
pub mod folder;
pub mod image;
