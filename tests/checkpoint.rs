//! Model-level checkpoints: parameters, Adam's state and the step survive a round trip bit for
//! bit, and every kind of bad file is refused with an error that names the fault while leaving
//! the model and the optimizer exactly as they were.

use ncsn::io::{Checkpoint, load_training, save_training};
use ncsn::nn::{CondRefineNetDilated, ParamStore, RefineNetConfig};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::{Error, Tensor};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A fresh file path in the temp dir (removed when dropped).
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!(
            "ncsn-ckpt-{tag}-{}-{n}.safetensors",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn small() -> RefineNetConfig {
    RefineNetConfig {
        ngf: 4,
        ..RefineNetConfig::mnist()
    }
}

/// A model and an Adam optimizer that has taken two steps (so that it has state), from `seed`.
fn trained(seed: u64) -> (CondRefineNetDilated, Adam) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = CondRefineNetDilated::new(small(), &mut rng);
    let mut adam = Adam::new(model.store.named_params(), AdamConfig::default());
    for _ in 0..2 {
        let x = Tensor::rand(&[2, 1, 28, 28], &mut rng);
        let loss = model.forward(&x, &[1, 8]).square().mean_all();
        adam.step(&loss.backward());
    }
    (model, adam)
}

/// Everything a load could change, as bits.
#[derive(PartialEq, Debug)]
struct Snapshot {
    params: Vec<(String, Vec<u32>)>,
    moments: Vec<(String, Vec<u32>)>,
    meta: BTreeMap<String, String>,
}

fn snapshot(store: &ParamStore, adam: &Adam) -> Snapshot {
    let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let (moments, meta) = adam.state_dict();
    Snapshot {
        params: store
            .state_dict()
            .iter()
            .map(|(n, a)| (n.clone(), bits(a)))
            .collect(),
        moments: moments.iter().map(|(n, a)| (n.clone(), bits(a))).collect(),
        meta,
    }
}

#[test]
fn training_checkpoint_round_trip_is_bit_exact() {
    let (model, adam) = trained(1);
    let file = TempFile::new("roundtrip");
    save_training(&file.0, &model.store, &adam, 42).unwrap();

    let (other, mut other_adam) = trained(2);
    assert_ne!(
        snapshot(&model.store, &adam),
        snapshot(&other.store, &other_adam)
    );
    let step = load_training(&file.0, &other.store, &mut other_adam).unwrap();
    assert_eq!(step, 42);
    assert_eq!(
        snapshot(&model.store, &adam),
        snapshot(&other.store, &other_adam)
    );
    // The restored optimizer continues exactly as the original would.
    let mut adam = adam;
    let x = Tensor::rand(&[2, 1, 28, 28], &mut ChaCha8Rng::seed_from_u64(9));
    for (m, a) in [(&model, &mut adam), (&other, &mut other_adam)] {
        let loss = m.forward(&x, &[3, 4]).square().mean_all();
        a.step(&loss.backward());
    }
    assert_eq!(
        snapshot(&model.store, &adam),
        snapshot(&other.store, &other_adam)
    );
    // Every step count a u64 holds comes back, the largest too (not cut to 32 bits or fewer).
    save_training(&file.0, &model.store, &adam, u64::MAX).unwrap();
    let step = load_training(&file.0, &other.store, &mut other_adam).unwrap();
    assert_eq!(step, u64::MAX);
}

#[test]
fn parameters_round_trip_is_bit_exact() {
    let (model, _) = trained(3);
    let file = TempFile::new("params");
    model.store.save(&file.0).unwrap();
    let (other, _) = trained(4);
    other.store.load(&file.0).unwrap();
    let bits = |s: &ParamStore| {
        s.state_dict()
            .into_iter()
            .map(|(n, a)| (n, a.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&model.store), bits(&other.store));
}

/// Writes a variant of a valid training checkpoint, tries to load it into a trained model, and
/// checks that the load fails with a message containing every one of `expect` and leaves the
/// model and optimizer untouched.
fn refused(tag: &str, edit: impl FnOnce(&mut Checkpoint), expect: &[&str]) {
    let (model, adam) = trained(5);
    let good = TempFile::new(tag);
    save_training(&good.0, &model.store, &adam, 7).unwrap();
    let mut ckpt = Checkpoint::load(&good.0).unwrap();
    edit(&mut ckpt);
    let bad = TempFile::new(tag);
    ckpt.save(&bad.0).unwrap();
    refused_file(&bad.0, expect);
}

fn refused_file(path: &std::path::Path, expect: &[&str]) -> Error {
    let (victim, mut victim_adam) = trained(6);
    let before = snapshot(&victim.store, &victim_adam);
    let err = load_training(path, &victim.store, &mut victim_adam).unwrap_err();
    let msg = err.to_string();
    for e in expect {
        assert!(msg.contains(e), "error `{msg}` does not mention `{e}`");
    }
    assert_eq!(
        before,
        snapshot(&victim.store, &victim_adam),
        "a failed load changed the model or optimizer"
    );
    err
}

#[test]
fn missing_parameter_is_named() {
    refused(
        "missing",
        |c| {
            c.tensors.remove("res1.0.conv1.weight");
        },
        &["missing", "res1.0.conv1.weight"],
    );
}

#[test]
fn extra_parameter_is_named() {
    refused(
        "extra",
        |c| {
            c.tensors
                .insert("res1.0.conv9.weight".into(), ArrayD::zeros(IxDyn(&[2, 2])));
        },
        &["extra", "res1.0.conv9.weight"],
    );
}

#[test]
fn misshaped_parameter_is_named() {
    refused(
        "shape",
        |c| {
            c.tensors
                .insert("begin_conv.bias".into(), ArrayD::zeros(IxDyn(&[3])));
        },
        &["wrong shape", "begin_conv.bias", "[3]", "[4]"],
    );
}

#[test]
fn missing_optimizer_state_is_named() {
    refused(
        "opt-missing",
        |c| {
            c.tensors.remove("optimizer.end_conv.weight.exp_avg_sq");
        },
        &["end_conv.weight.exp_avg_sq"],
    );
}

#[test]
fn misshaped_optimizer_state_is_named() {
    refused(
        "opt-shape",
        |c| {
            c.tensors.insert(
                "optimizer.end_conv.bias.exp_avg".into(),
                ArrayD::zeros(IxDyn(&[2])),
            );
        },
        &["end_conv.bias.exp_avg", "shape"],
    );
}

#[test]
fn extra_optimizer_state_is_named() {
    refused(
        "opt-extra",
        |c| {
            c.tensors.insert(
                "optimizer.nothing.exp_avg".into(),
                ArrayD::zeros(IxDyn(&[1])),
            );
        },
        &[
            "optimizer state",
            "`nothing.exp_avg`",
            "belongs to no parameter",
        ],
    );
}

/// A step count under a name that matches no parameter (a renamed parameter, an edited file) is
/// refused, naming it: dropped, it would leave that parameter's moments to restart without a word.
#[test]
fn a_step_count_of_no_parameter_is_named() {
    refused(
        "opt-extra-step",
        |c| {
            c.metadata
                .insert("optimizer.nothing.step".into(), "2".into());
        },
        &[
            "optimizer state",
            "`nothing.step`",
            "step count of no parameter",
        ],
    );
}

/// Adam's moments under a name whose step count is gone (a damaged or edited file) would restart
/// that parameter's optimisation from zero if they were ignored: refused, naming them.
#[test]
fn optimizer_moments_without_a_step_count_are_named() {
    refused(
        "opt-no-step",
        |c| {
            let key = c
                .metadata
                .keys()
                .find(|k| k.starts_with("optimizer.") && k.ends_with(".step"))
                .unwrap()
                .clone();
            c.metadata.remove(&key);
        },
        &[
            "optimizer state",
            ".exp_avg",
            "no parameter with a step count",
        ],
    );
}

/// A step count of zero, or one so large that adding 1 wraps, is not a count Adam can go on from.
#[test]
fn impossible_adam_step_counts_are_refused() {
    for count in ["0", "18446744073709551615"] {
        refused(
            "opt-count",
            |c| {
                for (k, v) in c.metadata.iter_mut() {
                    if k.starts_with("optimizer.") && k.ends_with(".step") {
                        *v = count.to_string();
                    }
                }
            },
            &["bad step count", count],
        );
    }
}

#[test]
fn bad_step_counts_are_refused() {
    refused(
        "step",
        |c| {
            c.metadata.insert("step".into(), "forty-two".into());
        },
        &["step", "forty-two"],
    );
    refused(
        "nostep",
        |c| {
            c.metadata.remove("step");
        },
        &["step", "missing"],
    );
    refused(
        "optstep",
        |c| {
            c.metadata
                .insert("optimizer.end_conv.bias.step".into(), "-1".into());
        },
        &["end_conv.bias", "-1"],
    );
}

/// A valid file with the dtype of one tensor changed in the header from F32 to I32 (same size, so
/// the file stays well-formed): the loader must refuse it by name, not reinterpret the bits.
#[test]
fn wrong_dtype_is_named() {
    let (model, adam) = trained(7);
    let file = TempFile::new("dtype");
    save_training(&file.0, &model.store, &adam, 1).unwrap();
    let mut bytes = std::fs::read(&file.0).unwrap();
    let find = |needle: &[u8], from: usize| {
        from + bytes[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("in the header")
    };
    let entry = find(br#""begin_conv.bias":{"#, 0);
    let dtype = br#""dtype":"F32""#;
    let f = find(dtype, entry) + dtype.len() - 4; // the `F32"` of this entry
    assert!(f < find(b"}", entry), "within the entry");
    bytes[f..f + 3].copy_from_slice(b"I32");
    std::fs::write(&file.0, &bytes).unwrap();
    let err = refused_file(&file.0, &["begin_conv.bias", "I32"]);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
}

#[test]
fn corrupt_files_are_refused() {
    let (model, adam) = trained(8);
    let file = TempFile::new("corrupt");
    save_training(&file.0, &model.store, &adam, 1).unwrap();
    let bytes = std::fs::read(&file.0).unwrap();
    // Truncated: the byte ranges in the header run past the end.
    let cut = TempFile::new("truncated");
    std::fs::write(&cut.0, &bytes[..bytes.len() - 100]).unwrap();
    let err = refused_file(&cut.0, &["not a valid safetensors file"]);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    // A header length far beyond the file.
    let mut garbage = bytes.clone();
    garbage[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let bad = TempFile::new("header");
    std::fs::write(&bad.0, &garbage).unwrap();
    let err = refused_file(&bad.0, &[]);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    // Not JSON at all.
    let mut junk = bytes;
    junk[8..16].copy_from_slice(b"\xff\xfe#!junk");
    let bad = TempFile::new("json");
    std::fs::write(&bad.0, &junk).unwrap();
    let err = refused_file(&bad.0, &[]);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    // No file.
    let err = refused_file(std::path::Path::new("/nonexistent/ncsn.safetensors"), &[]);
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

/// What the audit did to a run's checkpoint: 400 bytes of tensor data XOR-ed, the file otherwise
/// intact. Both loaders refuse it, name the file and the checksum, and change nothing.
#[test]
fn damaged_tensor_data_is_refused() {
    let (model, adam) = trained(11);
    let file = TempFile::new("damaged");
    save_training(&file.0, &model.store, &adam, 3).unwrap();
    let mut bytes = std::fs::read(&file.0).unwrap();
    let data = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mid = (data + bytes.len()) / 2;
    for b in &mut bytes[mid..mid + 400] {
        *b ^= 0x5a;
    }
    std::fs::write(&file.0, &bytes).unwrap();
    let name = file.0.display().to_string();
    let expect = [name.as_str(), "do not match their checksum", "damaged"];
    let err = refused_file(&file.0, &expect);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    // The parameters-only loader reads through the same check.
    let (victim, _) = trained(12);
    let before = victim.store.state_dict();
    let msg = victim.store.load(&file.0).unwrap_err().to_string();
    for e in expect {
        assert!(msg.contains(e), "error `{msg}` does not mention `{e}`");
    }
    assert_eq!(before, victim.store.state_dict());
}

#[test]
fn parameter_only_load_validates_first() {
    let (model, _) = trained(9);
    let file = TempFile::new("p-missing");
    let mut ckpt = Checkpoint::new();
    for (name, a) in model.store.state_dict() {
        if name != "normalizer.embed.weight" {
            ckpt.tensors.insert(name, a);
        }
    }
    ckpt.save(&file.0).unwrap();
    let (victim, _) = trained(10);
    let before = victim.store.state_dict();
    let msg = victim.store.load(&file.0).unwrap_err().to_string();
    assert!(
        msg.contains("normalizer.embed.weight") && msg.contains("missing"),
        "{msg}"
    );
    assert!(
        msg.contains(&file.0.display().to_string()),
        "error names the file: {msg}"
    );
    assert_eq!(before, victim.store.state_dict());
}
