//! Where a tensor's data lives: [`Device::Cpu`] (an ndarray in host memory) or, with the `vulkan`
//! feature, `Device::Vulkan` (a buffer in a Vulkan device's memory). The device is chosen at run
//! time, e.g. from `--device cpu|vulkan` with [`Device::from_args`].

use crate::{Error, Result};
#[cfg(feature = "vulkan")]
use std::sync::{Arc, OnceLock};

#[cfg(feature = "vulkan")]
use crate::backend::vulkan::VulkanContext;

/// A place where tensors live and ops run.
///
/// Ops run where their inputs are: an op on tensors of one device gives a tensor on that device.
/// Inputs on two different devices are a programmer error, and the op panics naming itself and
/// both devices — with one exception: a CPU tensor with a single element (a constant such as
/// `Tensor::scalar(0.5)`) joins a device tensor as a constant, filled on the device from its value
/// (it travels in the command buffer like a push constant; no copy is counted).
#[derive(Clone)]
pub enum Device {
    /// Host memory; the kernels are the crate's CPU kernels (ndarray, matrixmultiply, rayon).
    Cpu,
    /// A Vulkan device (behind the `vulkan` feature): data in device buffers, ops recorded as
    /// compute dispatches. Two handles are the same device when they share the context.
    #[cfg(feature = "vulkan")]
    Vulkan(Arc<VulkanContext>),
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            #[cfg(feature = "vulkan")]
            (Device::Vulkan(a), Device::Vulkan(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "vulkan")]
            _ => false,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(ctx) => write!(f, "vulkan({})", ctx.device_name()),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The message of a build without the `vulkan` feature.
#[cfg(not(feature = "vulkan"))]
const NO_VULKAN_FEATURE: &str = "vulkan: this build has no Vulkan support; rebuild with \
     `--features vulkan` (and the system packages that .ci/vulkan-deps installs: glslc, \
     libvulkan1, mesa-vulkan-drivers)";

impl Device {
    /// The process's shared Vulkan device: opened on first use (a discrete GPU first, then
    /// integrated, virtual and CPU devices such as lavapipe) and reused after, so that every
    /// caller's tensors can meet in one op.
    ///
    /// Errors name what is missing: a build without the `vulkan` feature, no Vulkan loader
    /// (`libvulkan1`), or no device with a compute queue (no driver), as an [`Error::Device`]; a
    /// value of `NCSN_VULKAN_KERNELS` that names no kernel variant is an [`Error::Invalid`]
    /// naming the variable.
    pub fn vulkan() -> Result<Device> {
        #[cfg(feature = "vulkan")]
        {
            static SHARED: OnceLock<Result<Arc<VulkanContext>>> = OnceLock::new();
            match SHARED.get_or_init(|| VulkanContext::new().map(Arc::new)) {
                Ok(ctx) => Ok(Device::Vulkan(ctx.clone())),
                Err(e) => Err(reissue(e)),
            }
        }
        #[cfg(not(feature = "vulkan"))]
        {
            Err(Error::Device(NO_VULKAN_FEATURE.into()))
        }
    }

    /// A device by name: `cpu` or `vulkan` (see [`Device::vulkan`] for its errors).
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "vulkan" => Device::vulkan(),
            other => Err(Error::Invalid(format!(
                "unknown device `{other}`: expected `cpu` or `vulkan`"
            ))),
        }
    }

    /// The device a command line asks for with `--device cpu|vulkan` (or `--device=…`); the CPU
    /// when it names none. Pass `std::env::args()`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Device> {
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            if a == "--device" {
                let name = args.next().ok_or_else(|| {
                    Error::Invalid("--device needs a value: `cpu` or `vulkan`".into())
                })?;
                return Device::parse(&name);
            }
            if let Some(name) = a.strip_prefix("--device=") {
                return Device::parse(name);
            }
        }
        Ok(Device::Cpu)
    }

    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Waits until the device has finished all the work queued on it (nothing to do on the CPU).
    /// Downloads wait by themselves; this is for timing.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(ctx) => ctx.flush(),
        }
    }
}

/// The error of the shared device's failed opening, for each caller that asks (`Error` is not
/// `Clone`): a bad `NCSN_VULKAN_KERNELS` stays a bad argument, anything else is the device's.
#[cfg(feature = "vulkan")]
fn reissue(e: &Error) -> Error {
    match e {
        Error::Invalid(msg) => Error::Invalid(msg.clone()),
        e => Error::Device(e.to_string()),
    }
}

#[cfg(all(test, feature = "vulkan"))]
mod tests {
    use super::*;

    #[test]
    fn a_failed_opening_keeps_its_kind_and_message_for_every_caller() {
        let bad = "NCSN_VULKAN_KERNELS=\"bogus\": expected auto, plain or nan-preserving";
        match reissue(&Error::Invalid(bad.into())) {
            Error::Invalid(m) => assert_eq!(m, bad),
            e => panic!("a bad variable became {e:?}"),
        }
        let missing = "vulkan: no Vulkan device with a compute queue was found";
        match reissue(&Error::Device(missing.into())) {
            Error::Device(m) => assert_eq!(m, missing),
            e => panic!("a missing device became {e:?}"),
        }
    }
}
