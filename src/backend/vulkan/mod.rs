//! A Vulkan compute layer: device buffers of `f32` and the kernels the model needs, behind the
//! `vulkan` cargo feature.
//!
//! This module is the device layer: it does not use the crate's `Tensor` or autograd, which sit
//! on top of it (`tensor::vulkan` records these kernels for the tensor ops; the device's Adam
//! kernel borrows `optim::AdamWeights`). The pieces:
//!
//! - [`VulkanContext`]: instance, device (discrete GPUs first), one compute queue, the memory,
//!   command-buffer and descriptor-set allocators, and one cached compute pipeline per shader.
//!   [`KernelVariant`] says which of each shader's two compiled variants it loads (the one that
//!   keeps NaN and ±∞ by the specification's guarantee, or the plain one).
//! - [`DeviceBuffer`]: `f32` data resident in device memory, with a row-major shape.
//!   [`VulkanContext::upload`] and [`VulkanContext::download`] move data across.
//! - [`Recorder`]: records kernels into one command buffer. Nothing runs until the recorder is
//!   submitted, and vulkano inserts the barriers between kernels that read what another wrote,
//!   so a whole Langevin loop or training step can be one submission with no host round trip.
//!   [`VulkanContext::run`] records with a closure, submits, and waits.
//! - Counters, for measuring: [`VulkanContext::transfers`] (host↔device copies),
//!   [`VulkanContext::activity`] (dispatches, submissions, time waiting for the device),
//!   [`VulkanContext::memory_use`] (the bytes buffers hold, now and at the peak) and, with
//!   [`VulkanContext::set_profiling`], the device time of each kernel from timestamp queries
//!   ([`VulkanContext::take_profile`]).
//!
//! ```no_run
//! # fn main() -> ncsn::Result<()> {
//! use ncsn::backend::vulkan::{UnaryOp, VulkanContext};
//! let ctx = VulkanContext::new()?;
//! let a = ctx.upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let b = ctx.upload(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
//! let c = ctx.run(|r| {
//!     let c = r.matmul(&a, &b, false, false)?; // 2 x 2
//!     r.unary(UnaryOp::Relu, &c)
//! })?;
//! assert_eq!(ctx.download(&c)?, vec![4.0, 5.0, 10.0, 11.0]);
//! # Ok(()) }
//! ```
//!
//! Shaders are GLSL in `shaders/`, compiled to SPIR-V by `build.rs` with `glslc` and embedded in
//! the binary. Errors: a missing Vulkan loader or device, a buffer larger than the device can
//! address, or a failed Vulkan call, is an [`Error::Device`](crate::Error::Device) whose message
//! starts with `vulkan:` and says what was being done (a value of `NCSN_VULKAN_KERNELS` that names
//! no [`KernelVariant`] is an [`Error::Invalid`](crate::Error::Invalid)); shape mismatches
//! are programmer errors and panic, naming the op and the shapes (the crate's policy).

mod context;
mod memory;
mod ops;
mod shaders;

pub use context::{
    Activity, DeviceBuffer, DeviceIndices, KernelTime, KernelVariant, RECORD_FLUSH_BYTES, Recorder,
    Transfers, VulkanContext,
};
pub use memory::MemoryUse;
pub use ops::{
    AdamConfig, BinaryOp, Conv2dParams, ReduceOp, Strided, UnaryOp, broadcast_shape,
    contiguous_strides,
};
