//! One error type for the library: every variant names the file, layer, tensor or shape at fault.

use std::path::PathBuf;

/// Result alias used across retrain.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in retrain, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer cannot accept the shape it was given.
    #[error("layer '{layer}': {message}")]
    Shape { layer: String, message: String },

    /// A weight tensor in a file does not have the shape the model expects.
    #[error("tensor '{tensor}' (for '{variable}') has shape {found:?} in the file but the model expects {expected:?}")]
    TensorShape {
        tensor: String,
        variable: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// The model needs a tensor the file does not hold.
    #[error("weights file has no tensor '{tensor}' (needed for '{variable}')")]
    MissingTensor { tensor: String, variable: String },

    /// The file holds tensors the model has no place for.
    #[error("weights file has {} tensor(s) the model does not use: {}", .tensors.len(), .tensors.join(", "))]
    UnexpectedTensors { tensors: Vec<String> },

    /// A pickle asks to call something that is not a plain tensor or container constructor.
    #[error("refusing to load '{path}': its pickle calls '{global}', which is not a tensor or container; a weights file must be data, never code")]
    UnsafePickle { path: PathBuf, global: String },

    /// A file is malformed.
    #[error("'{path}': {message}")]
    Format { path: PathBuf, message: String },

    /// An image could not be decoded.
    #[error("image '{path}': {message}")]
    Image { path: PathBuf, message: String },

    /// A file could not be read or written. (The OS error is part of the message, not a
    /// `source`, so error chains print it once.)
    #[error("'{path}': {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A request that does not fit the model or the zoo (unknown name, bad option).
    #[error("{0}")]
    Invalid(String),

    /// A training step whose loss was NaN or infinite (no weight was changed).
    #[error("the loss became {0}")]
    NonFiniteLoss(f64),
}

impl Error {
    /// Shorthand for a shape error in `layer`.
    pub fn shape(layer: &str, message: impl Into<String>) -> Self {
        Error::Shape {
            layer: layer.to_string(),
            message: message.into(),
        }
    }

    /// Shorthand for an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// Shorthand for a malformed file.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
