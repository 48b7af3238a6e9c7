//! Choosing a device at run time in a build without the `vulkan` feature: the CPU works, and
//! asking for Vulkan names the missing feature.

#![cfg(not(feature = "vulkan"))]

use ncsn::{Device, Tensor};

#[test]
fn cpu_is_the_default_and_vulkan_names_the_missing_feature() {
    assert_eq!(
        Device::from_args(Vec::<String>::new()).unwrap(),
        Device::Cpu
    );
    let args = ["prog", "--device", "cpu"].map(String::from);
    assert_eq!(Device::from_args(args).unwrap(), Device::Cpu);
    let err = Device::parse("vulkan").unwrap_err().to_string();
    assert!(err.contains("--features vulkan"), "{err}");
    let err = Device::from_args(["--device".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a value"), "{err}");
    let x = Tensor::ones(&[3]);
    assert_eq!(x.device(), Device::Cpu);
    assert_eq!(x.to(&Device::Cpu).to_vec(), vec![1.0; 3]);
}
