//! CPU kernels for the frozen, inference-only part of a model, where Burn's general kernels
//! leave speed on the table. Each one is checked against Burn's own operation in the tests.

pub mod winograd;

/// The activation a kernel applies after the bias (the layer's own, or the one folded into it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }
}
