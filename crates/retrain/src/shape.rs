//! Symbolic per-sample shapes, written the Keras way (channels last, `None` for unknown sizes).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The shape of one sample flowing between layers; the batch dimension is implicit.
///
/// Images are shown channels-last like Keras, `(None, 224, 224, 3)`, although tensors are stored
/// NCHW internally. Height and width may be unknown (`None`) until real data arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// A feature map: height, width (each possibly unknown) and channels.
    Image {
        height: Option<usize>,
        width: Option<usize>,
        channels: usize,
    },
    /// A flat feature vector.
    Vector(usize),
}

impl Shape {
    /// An image shape with known or unknown spatial size.
    pub fn image(height: Option<usize>, width: Option<usize>, channels: usize) -> Self {
        Shape::Image {
            height,
            width,
            channels,
        }
    }

    /// (height, width, channels) of a feature map, or a shape error naming `layer` for vectors.
    pub fn maps(self, layer: &str) -> crate::error::Result<(Option<usize>, Option<usize>, usize)> {
        match self {
            Shape::Image {
                height,
                width,
                channels,
            } => Ok((height, width, channels)),
            Shape::Vector(_) => Err(crate::error::Error::shape(
                layer,
                format!("expects feature maps, got {self}"),
            )),
        }
    }

    /// Number of channels (images) or features (vectors).
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Image { channels, .. } => channels,
            Shape::Vector(n) => n,
        }
    }

    /// Does a concrete batch shape (NCHW or NC, batch dimension first) fit this symbolic shape?
    pub fn accepts(&self, dims: &[usize]) -> bool {
        let fits = |want: Option<usize>, got: usize| want.is_none_or(|w| w == got);
        match (*self, dims) {
            (
                Shape::Image {
                    height,
                    width,
                    channels,
                },
                [_, c, h, w],
            ) => *c == channels && fits(height, *h) && fits(width, *w),
            (Shape::Vector(n), [_, f]) => *f == n,
            _ => false,
        }
    }
}

fn dim(d: Option<usize>) -> String {
    d.map_or_else(|| "None".to_string(), |d| d.to_string())
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Image {
                height,
                width,
                channels,
            } => write!(f, "(None, {}, {}, {channels})", dim(height), dim(width)),
            Shape::Vector(n) => write!(f, "(None, {n})"),
        }
    }
}

/// Check a window's kernel, strides and dilation (from a config file, they could be anything):
/// each between 1 and 4096.
pub(crate) fn check_window(
    layer: &str,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilation: [usize; 2],
) -> crate::error::Result<()> {
    let all = kernel.iter().chain(&strides).chain(&dilation);
    if all.into_iter().any(|&v| v == 0 || v > 4096) {
        return Err(crate::error::Error::shape(
            layer,
            format!(
                "kernel {kernel:?}, strides {strides:?} and dilation {dilation:?} must each be between 1 and 4096"
            ),
        ));
    }
    Ok(())
}

/// Output length of a sliding window along one axis (`None` when the input is unknown or too
/// small). Call [`check_window`] first.
pub(crate) fn window_output(
    axis: usize,
    input: Option<usize>,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: crate::layers::Padding,
) -> Option<usize> {
    use crate::layers::Padding;
    let input = input?;
    let span = (kernel - 1) * dilation + 1;
    let padded = match padding {
        Padding::Same => return Some(input.div_ceil(stride)),
        Padding::Valid => input,
        Padding::Symmetric(p) => input.checked_add(p.checked_mul(2)?)?,
        Padding::Explicit(padding) => {
            let (before, after) = padding[axis];
            input.checked_add(before)?.checked_add(after)?
        }
    };
    (padded >= span).then(|| (padded - span) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_keras() {
        assert_eq!(
            Shape::image(Some(224), Some(224), 3).to_string(),
            "(None, 224, 224, 3)"
        );
        assert_eq!(
            Shape::image(None, None, 64).to_string(),
            "(None, None, None, 64)"
        );
        assert_eq!(Shape::Vector(25088).to_string(), "(None, 25088)");
    }

    #[test]
    fn accepts_matching_batches_only() {
        let s = Shape::image(None, Some(10), 3);
        assert!(s.accepts(&[2, 3, 7, 10]));
        assert!(!s.accepts(&[2, 3, 7, 11]));
        assert!(!s.accepts(&[2, 4, 7, 10]));
        assert!(!Shape::Vector(5).accepts(&[1, 5, 1, 1]));
    }
}
