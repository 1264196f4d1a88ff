//! What the AVX-512 loops of the kernels share: the CPU check, lane masks, and bias plus
//! activation applied to a register before it is stored.

#[cfg(target_arch = "x86_64")]
use super::Activation;

/// Whether this CPU has AVX-512F and BW, which the loops of [`super::direct1x1`],
/// [`super::dense`] and the depthwise planes need (BW for the 16-bit loads of bf16 maps; every
/// AVX-512 CPU but the Xeon Phi has both).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The mask of the first `left` lanes of a 16-lane register (all 16 for 16 or more).
#[cfg(target_arch = "x86_64")]
pub(crate) fn lane_mask(left: usize) -> u16 {
    ((1u32 << left.min(16)) - 1) as u16
}

/// `activation(value + bias)`, lane by lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn bias_activation(
    value: std::arch::x86_64::__m512,
    bias: std::arch::x86_64::__m512,
    activation: Activation,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let (value, zero) = (_mm512_add_ps(value, bias), _mm512_setzero_ps());
    match activation {
        Activation::Linear => value,
        Activation::Relu => _mm512_max_ps(value, zero),
        Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(value, zero), _mm512_set1_ps(6.0)),
    }
}
