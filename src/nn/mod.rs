//! Layers and the store that names their parameters.
//!
//! Parameters live in a [`ParamStore`] under hierarchical names (`res2.0.conv2.conv.weight`), the
//! names checkpoints use and the names PyTorch's `state_dict()` gives the same module, so that a
//! reader can hold the two side by side. A layer is built from a [`Path`] into the store:
//! `Linear::new(&root.sub("fc1"), 2, 128, &mut rng)` registers `fc1.weight` and `fc1.bias`.
//! Initialisation draws from an explicit RNG: the same seed gives bit-identical weights.

mod conv;
pub mod init;
mod linear;
mod mlp;
mod norm;
pub mod refinenet;

pub use conv::{Conv2d, ConvMeanPool};
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use norm::{CondInstanceNorm2dPlus, NORM_EPS};
pub use refinenet::{CondRefineNetDilated, RefineNetConfig};

use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A layer with one input and one output.
pub trait Module {
    /// Applies the layer.
    fn forward(&self, x: &Tensor) -> Tensor;
}

#[derive(Default)]
struct StoreInner {
    /// Parameters in registration order (the order of PyTorch's `state_dict()` for the same model).
    params: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

/// Named parameters: leaves that require gradients, updated in place by optimizers. Cloning the
/// store clones a handle to the same parameters.
#[derive(Clone, Default)]
pub struct ParamStore(Arc<Mutex<StoreInner>>);

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The path with no prefix.
    pub fn root(&self) -> Path {
        Path {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    /// Registers `value` as a trainable parameter named `name`. Panics if the name is taken: two
    /// layers registered at the same path is a bug in the model's construction.
    pub fn register(&self, name: String, value: Tensor) -> Tensor {
        let t = value.detach().requires_grad_();
        let mut inner = self.0.lock().expect("param store lock");
        assert!(
            !inner.index.contains_key(&name),
            "parameter `{name}` registered twice"
        );
        let i = inner.params.len();
        inner.index.insert(name.clone(), i);
        inner.params.push((name, t.clone()));
        t
    }

    /// The parameter named `name`.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        let inner = self.0.lock().expect("param store lock");
        inner.index.get(name).map(|&i| inner.params[i].1.clone())
    }

    /// All parameters with their names, in registration order.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        self.0.lock().expect("param store lock").params.clone()
    }

    /// All parameters, in registration order.
    pub fn params(&self) -> Vec<Tensor> {
        self.named_params().into_iter().map(|(_, t)| t).collect()
    }

    /// The number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.0.lock().expect("param store lock").params.len()
    }

    /// Whether the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every parameter to `device` in place (layers and optimizers hold the same
    /// handles, so they follow): `store.to_device(&Device::parse("vulkan")?)`.
    pub fn to_device(&self, device: &crate::tensor::Device) {
        for (_, p) in self.named_params() {
            p.move_to(device);
        }
    }

    /// The total number of scalar parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn num_scalars(&self) -> usize {
        self.named_params().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// A position in a [`ParamStore`]'s name hierarchy.
#[derive(Clone)]
pub struct Path {
    store: ParamStore,
    prefix: String,
}

impl Path {
    /// The child path `self.name`.
    pub fn sub(&self, name: impl std::fmt::Display) -> Path {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Path {
            store: self.store.clone(),
            prefix,
        }
    }

    /// The full name of a parameter `name` at this path.
    pub fn name_of(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Registers a parameter `name` under this path with the given initial value.
    pub fn param(&self, name: &str, value: Tensor) -> Tensor {
        self.store.register(self.name_of(name), value)
    }

    /// The store this path points into.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }
}
