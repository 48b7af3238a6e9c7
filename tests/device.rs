//! Choosing a device at run time in a build without the `vulkan` feature: the CPU works, and
//! asking for Vulkan names the missing feature.

#![cfg(not(feature = "vulkan"))]

use ncsn::{Device, Error, Tensor};

#[test]
fn cpu_is_the_default_and_vulkan_names_the_missing_feature() {
    assert_eq!(
        Device::from_args(Vec::<String>::new()).unwrap(),
        Device::Cpu
    );
    let args = ["prog", "--device", "cpu"].map(String::from);
    assert_eq!(Device::from_args(args).unwrap(), Device::Cpu);
    match Device::parse("vulkan") {
        Err(Error::Device(msg)) => assert!(msg.contains("--features vulkan"), "{msg}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // From the command line, in both spellings: the value is read, not replaced by the default
    // (which is what `--device cpu` alone could not tell apart).
    for args in [
        vec!["prog", "--device", "vulkan"],
        vec!["prog", "--device=vulkan"],
    ] {
        match Device::from_args(args.iter().map(|a| a.to_string())) {
            Err(Error::Device(msg)) => assert!(msg.contains("--features vulkan"), "{msg}"),
            other => panic!("{args:?}: expected a device error, got {other:?}"),
        }
    }
    match Device::from_args(["prog", "--device=gpu"].map(String::from)) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("gpu"), "{msg}"),
        other => panic!("--device=gpu: expected an invalid-argument error, got {other:?}"),
    }
    // A malformed command line is the caller's fault, not the device's.
    match Device::from_args(["--device".to_string()]) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("needs a value"), "{msg}"),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
    let x = Tensor::ones(&[3]);
    assert_eq!(x.device(), Device::Cpu);
    assert_eq!(x.to(&Device::Cpu).to_vec(), vec![1.0; 3]);
}

/// `to` the device a tensor is on already is the tensor itself, graph and all (its docs): a
/// gradient flows back through the move, d/dw Σw² = 2w (exact in f32).
#[test]
fn to_the_same_device_keeps_the_graph() {
    let w = Tensor::from_vec(vec![0.5, -1.5, 2.0], &[3]).requires_grad_();
    let y = w.square().to(&Device::Cpu);
    assert!(y.requires_grad(), "the move dropped the graph");
    let g = ncsn::grad(&[&y.sum_all()], &[&w], false);
    assert_eq!(g[0].to_vec(), vec![1.0, -3.0, 4.0]);
}
