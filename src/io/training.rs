//! Saving and restoring a model's parameters ([`ParamStore::save`], [`ParamStore::load`]), and a
//! whole training state — parameters, Adam's moments and the step count ([`save_training`],
//! [`load_training`]) — as safetensors files through [`crate::io::checkpoint`].
//!
//! # Layout of a training checkpoint
//!
//! | entry | content |
//! |---|---|
//! | tensor `<param>` | each parameter under its `state_dict()` name, e.g. `res2.0.conv2.conv.weight` |
//! | tensor `optimizer.<param>.exp_avg`, `….exp_avg_sq` | Adam's first and second moments |
//! | tensor `optimizer.<param>.max_exp_avg_sq` | with AMSGrad only: the running maximum of the second moment |
//! | metadata `optimizer.<param>.step` | Adam's per-parameter step count |
//! | metadata `step` | the training step |
//! | metadata `ncsn.crc32` | a CRC-32 of all tensor data and the other metadata ([`checkpoint::CHECKSUM_KEY`]; [`crate::io::load`] checks it and leaves it out of the metadata) |
//! | metadata `ncsn.format` | `1`: the file was written here and must have its checksum ([`checkpoint::FORMAT_KEY`]; also left out) |
//!
//! A parameters-only file (the first row alone) is what [`ParamStore::save`] writes and what a
//! converted reference checkpoint looks like; [`ParamStore::load`] reads it.
//!
//! # Validation before mutation
//!
//! Loading reads and checks the whole file first — format and dtype ([`crate::io::load`]), then
//! every name and shape against the model, then the optimizer state — and only then copies values
//! into the parameters. Any fault is an error naming the file and the tensor or key, and leaves the
//! model and the optimizer exactly as they were.

use super::checkpoint::{self, Checkpoint, Metadata, Tensors};
use crate::nn::ParamStore;
use crate::optim::Adam;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix of optimizer entries in a training checkpoint.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

fn with_path(path: &Path, e: Error) -> Error {
    match e {
        Error::Invalid(msg) => Error::Invalid(format!("{}: {msg}", path.display())),
        other => other,
    }
}

impl ParamStore {
    /// The parameters as named arrays (copies), in registration order.
    pub fn state_dict(&self) -> Vec<(String, ndarray::ArrayD<f32>)> {
        self.named_params()
            .into_iter()
            .map(|(n, t)| (n, t.to_array()))
            .collect()
    }

    /// Checks that `tensors` holds exactly this store's names with its shapes (every fault listed
    /// by name), then copies them in. Nothing is changed on error.
    pub fn load_state_dict(&self, tensors: &Tensors) -> Result<()> {
        let params = self.named_params();
        checkpoint::check_shapes(
            tensors,
            params.iter().map(|(n, t)| (n.as_str(), t.shape().to_vec())),
        )?;
        for (name, p) in &params {
            p.set_data(tensors[name].clone());
        }
        Ok(())
    }

    /// Writes the parameters to a safetensors file (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let params = self.named_params();
        let arrays: Vec<_> = params
            .iter()
            .map(|(n, t)| (n.clone(), t.storage()))
            .collect();
        checkpoint::save(
            path,
            arrays.iter().map(|(n, a)| (n.as_str(), a.view())),
            &Metadata::new(),
        )
    }

    /// Reads parameters written by [`ParamStore::save`] (or converted from a PyTorch
    /// `state_dict()`). A missing, extra or mis-shaped tensor, another dtype or a corrupt file is
    /// an error naming it; the parameters are untouched unless everything matches.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ckpt = checkpoint::load(path)?;
        self.load_state_dict(&ckpt.tensors)
            .map_err(|e| with_path(path, e))
    }
}

// ANCHOR: save_training
/// Writes parameters, Adam's state and the training `step` to one safetensors file, atomically:
/// an interrupted write leaves the previous checkpoint whole.
pub fn save_training(
    path: impl AsRef<Path>,
    store: &ParamStore,
    adam: &Adam,
    step: u64,
) -> Result<()> {
    let mut ckpt = Checkpoint::new().with_metadata("step", step);
    for (name, t) in store.named_params() {
        ckpt.tensors.insert(name, t.to_array());
    }
    let (moments, meta) = adam.state_dict();
    for (name, a) in moments {
        ckpt.tensors.insert(format!("{OPTIMIZER_PREFIX}{name}"), a);
    }
    for (key, value) in meta {
        ckpt.metadata
            .insert(format!("{OPTIMIZER_PREFIX}{key}"), value);
    }
    ckpt.save(path)
}
// ANCHOR_END: save_training

/// Restores a file written by [`save_training`] into `store` and `adam` and returns the step.
/// Everything is validated before anything changes: on any error (unreadable or corrupt file,
/// wrong dtype, missing, extra or mis-shaped parameter or optimizer tensor, bad step count) the
/// parameters and the optimizer are left as they were.
pub fn load_training(path: impl AsRef<Path>, store: &ParamStore, adam: &mut Adam) -> Result<u64> {
    let path = path.as_ref();
    let ckpt = checkpoint::load(path)?;
    let step: u64 = ckpt
        .metadata_as("step")
        .map_err(|e| with_path(path, e))?
        .ok_or_else(|| Error::format(path, "metadata `step` is missing"))?;

    // Split the file into parameters and optimizer state.
    let (mut params, mut moments) = (Tensors::new(), BTreeMap::new());
    for (name, a) in ckpt.tensors {
        match name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(rest) => moments.insert(rest.to_string(), a),
            None => params.insert(name, a),
        };
    }
    let opt_meta: BTreeMap<String, String> = ckpt
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(OPTIMIZER_PREFIX)?.to_string(), v.clone())))
        .collect();

    // 1. parameters: names and shapes
    let named = store.named_params();
    checkpoint::check_shapes(
        &params,
        named.iter().map(|(n, t)| (n.as_str(), t.shape().to_vec())),
    )
    .map_err(|e| with_path(path, e))?;
    // 2. optimizer state: Adam checks it all (nothing that belongs to no parameter) and changes
    //    nothing on error
    adam.load_state_dict(&moments, &opt_meta)
        .map_err(|e| with_path(path, e))?;
    // 3. only now touch the parameters
    for (name, p) in &named {
        p.set_data(params[name].clone());
    }
    Ok(step)
}
