//! Compute backends. The CPU kernels live with the tensor ops; the Vulkan device layer lives in
//! `backend::vulkan`, behind the `vulkan` cargo feature (off by default).

#[cfg(feature = "vulkan")]
pub mod vulkan;
