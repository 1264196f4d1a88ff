//! Named weights shared by every model that holds their layer, materialized on first use.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// How a variable gets its first value when no weights were loaded into it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    /// All zeros (biases, beta, moving mean).
    Zeros,
    /// All ones (gamma, moving variance).
    Ones,
    /// Keras' default kernel initializer: uniform in `±sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform { fan_in: usize, fan_out: usize },
}

/// A weight tensor with a Keras-style path (`"dense/kernel"`) and shape.
///
/// Cloning a `Variable` shares it: models built from another model's layers see the same
/// values. The value is stored flat and created lazily, so a model can be built and summarized
/// (even VGG16's 138M parameters) without allocating anything.
#[derive(Clone)]
pub struct Variable(Arc<State>);

struct State {
    id: u64,
    path: String,
    shape: Vec<usize>,
    trainable: bool,
    initializer: Initializer,
    value: RwLock<Option<Tensor<1>>>,
    /// What [`Variable::derived`] computed from the current value, and under which tag.
    derived: Mutex<Option<(u64, Arc<dyn Any + Send + Sync>)>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Variable {
    /// A new variable; `trainable` is false for statistics such as BatchNorm's moving mean.
    pub fn new(path: String, shape: Vec<usize>, trainable: bool, initializer: Initializer) -> Self {
        Variable(Arc::new(State {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            shape,
            trainable,
            initializer,
            value: RwLock::new(None),
            derived: Mutex::new(None),
        }))
    }

    /// Unique identity (shared clones have the same id).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Keras-style path, `"layer_name/weight_name"`.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// Shape of the tensor (conv kernels are `[out, in/groups, kh, kw]`, dense kernels `[in, out]`).
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// Whether an optimizer may change it (when its layer is trainable too).
    pub fn is_trainable_kind(&self) -> bool {
        self.0.trainable
    }

    /// Give the variable its initial value if it has none yet, drawn from a generator seeded by
    /// `seed` and the variable's path (so the same model and seed always start the same way,
    /// whatever else runs in the process).
    pub fn initialize(&self, seed: u64, device: &Device) {
        let mut slot = self.0.value.write().expect("variable lock");
        if slot.is_none() {
            *slot = Some(self.initial_value(seed, device));
        }
    }

    /// The flat value on `device`, initializing it (seed 0) on first use.
    pub fn value(&self, device: &Device) -> Tensor<1> {
        if let Some(v) = self.0.value.read().expect("variable lock").as_ref() {
            if &v.device() == device {
                return v.clone();
            }
        }
        let mut slot = self.0.value.write().expect("variable lock");
        let value = match slot.take() {
            Some(v) => v.to_device(device),
            None => self.initial_value(0, device),
        };
        *slot = Some(value.clone());
        value
    }

    /// The value reshaped to its real rank.
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let dims: [usize; D] = self.0.shape.clone().try_into().unwrap_or_else(|_| {
            panic!(
                "variable '{}' has rank {}, not {D}",
                self.path(),
                self.0.shape.len()
            )
        });
        self.value(device).reshape(dims)
    }

    /// Replace the value (any shape with the same number of scalars; stored flat, detached).
    pub fn assign(&self, value: Tensor<1>) {
        assert_eq!(
            value.dims()[0],
            self.numel(),
            "assigning to variable '{}'",
            self.path()
        );
        *self.0.value.write().expect("variable lock") = Some(value.without_autodiff().detach());
        // After the new value is in: a `derived` running now finishes first, then is dropped.
        *self.0.derived.lock().expect("variable lock") = None;
    }

    /// What `derive` computes from the value (such as a kernel transformed or packed for a
    /// faster convolution), computed once and kept until the value is assigned again or a
    /// derivation with another `tag` (say, for another precision) or type replaces it.
    pub fn derived<T: Send + Sync + 'static>(
        &self,
        device: &Device,
        tag: u64,
        derive: impl FnOnce(&[f32]) -> T,
    ) -> Arc<T> {
        let mut slot = self.0.derived.lock().expect("variable lock");
        if let Some((done_tag, done)) = slot.as_ref() {
            if *done_tag == tag {
                if let Ok(done) = done.clone().downcast::<T>() {
                    return done;
                }
            }
        }
        let done = Arc::new(derive(&self.to_vec(device)));
        *slot = Some((tag, done.clone()));
        done
    }

    /// Replace the value from host data (already checked for its element count).
    pub fn assign_data(&self, values: Vec<f32>, device: &Device) {
        let n = values.len();
        self.assign(Tensor::from_data(TensorData::new(values, [n]), device));
    }

    /// Copy the value to the host.
    pub fn to_vec(&self, device: &Device) -> Vec<f32> {
        self.value(device)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data")
    }

    fn initial_value(&self, seed: u64, device: &Device) -> Tensor<1> {
        let n = self.numel();
        match self.0.initializer {
            Initializer::Zeros => Tensor::zeros([n], device),
            Initializer::Ones => Tensor::ones([n], device),
            Initializer::GlorotUniform { fan_in, fan_out } => {
                let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                (seed, self.path()).hash(&mut hasher);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(hasher.finish());
                let values: Vec<f32> = (0..n).map(|_| rng.random_range(-limit..limit)).collect();
                Tensor::from_data(TensorData::new(values, [n]), device)
            }
        }
    }
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "('{}', {:?})", self.path(), self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_kept_until_the_value_is_assigned() {
        let device = Device::flex();
        let variable = Variable::new("conv/kernel".into(), vec![3], true, Initializer::Ones);
        let calls = std::cell::Cell::new(0);
        let doubled = |values: &[f32]| {
            calls.set(calls.get() + 1);
            values.iter().map(|v| v * 2.0).collect::<Vec<f32>>()
        };
        assert_eq!(*variable.derived(&device, 0, doubled), vec![2.0; 3]);
        assert_eq!(*variable.derived(&device, 0, doubled), vec![2.0; 3]);
        assert_eq!(calls.get(), 1, "computed once while the value stands");
        // An optimizer step or a weights file assigns: the next use sees the new value.
        variable.assign_data(vec![1.0, 2.0, 3.0], &device);
        assert_eq!(*variable.derived(&device, 0, doubled), vec![2.0, 4.0, 6.0]);
        assert_eq!(calls.get(), 2);
        // Another tag derives anew, and replaces the kept array.
        assert_eq!(*variable.derived(&device, 1, doubled), vec![2.0, 4.0, 6.0]);
        assert_eq!(calls.get(), 3);
        variable.derived(&device, 0, doubled);
        assert_eq!(calls.get(), 4);
        // The same tag asked for another type derives anew.
        assert_eq!(*variable.derived(&device, 0, |v| v.len()), 3);
        assert_eq!(*variable.derived(&device, 0, doubled), vec![2.0, 4.0, 6.0]);
        assert_eq!(calls.get(), 5);
    }
}
