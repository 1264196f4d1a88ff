//! Reduced precision for the frozen prefix: the products of each convolution and dense layer
//! take bf16 inputs (weights and feature maps), their sums stay f32.
//!
//! bf16 keeps f32's 8-bit exponent and 8 of its 24 mantissa bits. Where the CPU has AMX tiles
//! (Intel Xeon from Sapphire Rapids on) the 1x1, im2col and 3x3 convolutions take their products
//! on them in bf16 ([`super::amx`], [`super::direct3x3`]). Elsewhere this module gives the same
//! numbers by rounding the inputs to bf16 (to nearest, ties to even, as VCVTNE2PS2BF16 does) and
//! running the f32 kernels on them: a bf16 run gives the same features on every machine, up to
//! the order of the f32 sums (and subnormal values, which the tiles take as zero). Depthwise
//! convolutions (too few multiplies per value to gain from bf16), and 1x1 ones with at most 16
//! outputs on large maps, keep f32 products ([`super::ConvKernel::products_precision`]); on
//! AMX CPUs a depthwise convolution reads the map of a 1x1 convolution before it in bf16
//! ([`super::ConvKernel::writes_bf16`], [`super::ConvKernel::reads_bf16`]), so its products
//! take that map rounded to bf16.

use burn::tensor::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Values rounded per parallel task.
const CHUNK: usize = 1 << 16;

/// The precision of the products of a layer's weights and inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 weights and inputs, f32 sums.
    Bf16,
}

impl Precision {
    /// `values` rounded to this precision, in place, in parallel.
    pub fn round(self, values: &mut [f32]) {
        if self == Precision::Bf16 {
            values
                .par_chunks_mut(CHUNK)
                .for_each(|chunk| self.round_here(chunk));
        }
    }

    /// `values` rounded to this precision, in place, on this thread.
    #[inline(always)]
    fn round_here(self, values: &mut [f32]) {
        if self == Precision::Bf16 {
            super::with_avx2(
                #[inline(always)]
                || values.iter_mut().for_each(|v| *v = to_bf16(*v)),
            )
        }
    }

    /// `values` rounded to this precision: borrowed as they are for f32, else a rounded copy
    /// made in one pass.
    pub fn rounded(self, values: &[f32]) -> Cow<'_, [f32]> {
        if self == Precision::F32 {
            return Cow::Borrowed(values);
        }
        // Not zeroed first: every value is written once below.
        let mut copy: Vec<f32> = Vec::with_capacity(values.len());
        copy.spare_capacity_mut()[..values.len()]
            .par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .for_each(|(out, values)| {
                super::with_avx2(
                    #[inline(always)]
                    || {
                        for (o, &v) in out.iter_mut().zip(values) {
                            o.write(to_bf16(v));
                        }
                    },
                )
            });
        // SAFETY: the chunks cover all `values.len()` slots, each written above.
        unsafe { copy.set_len(values.len()) };
        Cow::Owned(copy)
    }

    /// `t` rounded to this precision (a round trip through the backend's bf16, for tensors
    /// that do not go through the CPU kernels).
    pub fn round_tensor<const D: usize>(self, t: Tensor<D>) -> Tensor<D> {
        match self {
            Precision::F32 => t,
            Precision::Bf16 => t.cast(DType::BF16).cast(DType::F32),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision '{other}' (f32 or bf16)")),
        }
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as an f32; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(v: f32) -> f32 {
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    if v.is_nan() {
        f32::NAN
    } else {
        f32::from_bits(rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{bf16, Device, TensorData};

    #[test]
    fn rounds_like_the_half_crate_ties_to_even() {
        let mut values: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .chain([
                0.0,
                -0.0,
                1.0,
                1.0 + f32::EPSILON,
                f32::MAX,
                f32::MIN_POSITIVE,
                f32::INFINITY,
                f32::NEG_INFINITY,
                // Halfway between two bf16 values: ties go to the even mantissa.
                f32::from_bits(0x3f80_8000),
                f32::from_bits(0x3f81_8000),
            ])
            .collect();
        let want: Vec<f32> = values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
        Precision::Bf16.round(&mut values);
        for (got, want) in values.iter().zip(&want) {
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{got:e} != {want:e}"
            );
        }
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 1.0);
        assert_eq!(
            to_bf16(f32::from_bits(0x3f81_8000)),
            f32::from_bits(0x3f82_0000)
        );
    }

    #[test]
    fn rounds_tensors_like_values() {
        let values: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.7311).sin() * 37.0)
            .collect();
        let t = Tensor::<1>::from_data(TensorData::new(values.clone(), [1000]), &Device::flex());
        let got = Precision::Bf16
            .round_tensor(t)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let mut want = values.clone();
        Precision::Bf16.round(&mut want);
        assert_eq!(got, want);
        assert_ne!(got, values, "bf16 changes most of these values");
        let mut same = values.clone();
        Precision::F32.round(&mut same);
        assert_eq!(same, values);
        assert_eq!(*Precision::Bf16.rounded(&values), want[..]);
        assert!(matches!(Precision::F32.rounded(&values), Cow::Borrowed(_)));
    }

    #[test]
    fn names_parse_back() {
        for precision in [Precision::F32, Precision::Bf16] {
            assert_eq!(precision.to_string().parse(), Ok(precision));
        }
        assert!("fp8"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32 or bf16"));
    }
}
