//! One module per group of subcommands.

pub mod data;
pub mod evaluate;
pub mod extract;
pub mod fit;
pub mod predict;
pub mod progress;
pub mod weights;
pub mod zoo;
