//! retrain: transfer learning on images, the Keras way, in Rust on Burn.
//!
//! Take a network pretrained on ImageNet from the [`zoo`], load its [`weights`], freeze it,
//! add a new head from [`layers`] into a [`model::Sequential`], and train it on your pictures
//! ([`data`]). Summaries print like Keras, with exact parameter counts.

pub mod allocator;
pub mod data;
pub mod draw;
pub mod error;
pub mod hub;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod predict;
pub mod shape;
pub mod train;
pub mod variable;
pub mod weights;
pub mod zoo;

pub use burn::tensor::{Device, Tensor};
pub use error::{Error, Result};
pub use shape::Shape;

/// The default CPU device (burn-flex: pure Rust, SIMD, multi-threaded).
pub fn default_device() -> Device {
    Device::flex()
}

/// A device by name: `cpu` (burn-flex), or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub fn device_named(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "cuda")]
        other if other.starts_with("cuda:") => other[5..]
            .parse::<usize>()
            .map(Device::cuda)
            .map_err(|_| Error::Invalid(format!("bad device '{other}': expected cuda:N"))),
        other if other.starts_with("cuda") => Err(Error::Invalid(format!(
            "device '{other}' needs a build with the cuda feature (cargo build --release --features cuda)"
        ))),
        other => Err(Error::Invalid(format!(
            "unknown device '{other}': expected cpu or cuda[:N]"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_and_unknown_names_say_what_exists() {
        assert_eq!(device_named("cpu").unwrap(), Device::flex());
        let unknown = device_named("tpu").unwrap_err().to_string();
        assert!(
            unknown.contains("'tpu'") && unknown.contains("cpu or cuda"),
            "{unknown}"
        );
        #[cfg(not(feature = "cuda"))]
        {
            let cuda = device_named("cuda:1").unwrap_err().to_string();
            assert!(cuda.contains("--features cuda"), "{cuda}");
        }
    }
}
