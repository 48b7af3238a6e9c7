//! The Vulkan context, device buffers, and the command recorder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::command_buffer::allocator::StandardCommandBufferAllocator;
use vulkano::command_buffer::{
    AutoCommandBufferBuilder, CommandBufferExecError, CommandBufferExecFuture, CommandBufferUsage,
    CopyBufferInfo, PrimaryAutoCommandBuffer,
};
use vulkano::descriptor_set::allocator::StandardDescriptorSetAllocator;
use vulkano::descriptor_set::{DescriptorSet, WriteDescriptorSet};
use vulkano::device::physical::{PhysicalDevice, PhysicalDeviceType};
use vulkano::device::{
    Device, DeviceCreateInfo, DeviceExtensions, Queue, QueueCreateInfo, QueueFlags,
};
use vulkano::instance::{Instance, InstanceCreateInfo};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter};
use vulkano::pipeline::compute::ComputePipelineCreateInfo;
use vulkano::pipeline::layout::{
    IntoPipelineLayoutCreateInfoError, PipelineDescriptorSetLayoutCreateInfo,
};
use vulkano::pipeline::{
    ComputePipeline, Pipeline, PipelineBindPoint, PipelineLayout, PipelineShaderStageCreateInfo,
};
use vulkano::query::{QueryPool, QueryPoolCreateInfo, QueryResultFlags, QueryType};
use vulkano::shader::{ShaderModule, ShaderModuleCreateInfo};
use vulkano::sync::future::{FenceSignalFuture, NowFuture};
use vulkano::sync::{self, GpuFuture, HostAccessError, PipelineStage};
use vulkano::{Validated, ValidationError, Version, VulkanError, VulkanLibrary};

use super::memory::{CountingAllocator, MemoryUse};
use super::shaders::Kernel;
use crate::{Error, Result};

/// Wraps a vulkano error as an [`Error::Device`] that says what was being done.
macro_rules! vk {
    ($e:expr, $what:expr) => {
        $e.map_err(|e| Error::Device(format!("vulkan: {}: {}", $what, Describe::describe(&e))))
    };
}

/// An error's message. For `Validated` errors this is the inner error's message: vulkano's own
/// `Display` only says "a non-validation error occurred".
trait Describe {
    fn describe(&self) -> String;
}

impl<E: std::fmt::Display> Describe for Validated<E> {
    fn describe(&self) -> String {
        match self {
            Validated::Error(e) => e.to_string(),
            Validated::ValidationError(e) => e.to_string(),
        }
    }
}

macro_rules! describe_by_display {
    ($($t:ty),*) => {
        $(impl Describe for $t {
            fn describe(&self) -> String {
                self.to_string()
            }
        })*
    };
}
describe_by_display!(
    VulkanError,
    Box<ValidationError>,
    HostAccessError,
    CommandBufferExecError,
    IntoPipelineLayoutCreateInfoError
);

/// A Vulkan device ready for compute: queue, allocators and cached pipelines.
///
/// Create one per process and share it by reference; it is `Send + Sync`. Pipelines are built on
/// first use of each kernel and kept.
pub struct VulkanContext {
    device: Arc<Device>,
    queue: Arc<Queue>,
    memory: Arc<CountingAllocator>,
    command_buffers: Arc<StandardCommandBufferAllocator>,
    descriptor_sets: Arc<StandardDescriptorSetAllocator>,
    pipelines: Mutex<HashMap<Kernel, Arc<ComputePipeline>>>,
    /// Whether the kernels are the variants that declare SignedZeroInfNanPreserve (see
    /// [`VulkanContext::preserves_nan`]).
    preserve_nan: bool,
    /// A process-unique id, the key of this context's recordings in [`PENDING`].
    id: u64,
    transfers: [AtomicU64; 4],
    /// Dispatches recorded, command buffers submitted, nanoseconds spent submitting and waiting.
    activity: [AtomicU64; 3],
    /// Whether recordings started now write timestamps (see [`VulkanContext::set_profiling`]).
    profiling: AtomicBool,
    /// The device time measured per kernel so far.
    profile: Mutex<Vec<ProfileEntry>>,
    /// The command buffer submitted without waiting, if it may still be running (see
    /// [`VulkanContext::record`]).
    in_flight: Mutex<Option<InFlight>>,
}

impl Drop for VulkanContext {
    /// Waits for the command buffer still in flight, if any, before the buffers it uses and the
    /// device go. vulkano's fence future waits when it is dropped, but not while the thread is
    /// panicking, and a context dropped as a panic unwinds would then free memory the device is
    /// still reading and writing (on lavapipe: "corrupted double-linked list", and an abort).
    fn drop(&mut self) {
        let slot = self.in_flight.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = slot.take() {
            // An error here (a lost device) leaves nothing to wait for.
            let _ = f.done.wait(None);
        }
    }
}

/// A submitted command buffer not yet waited for, with the timestamps it writes if profiled.
struct InFlight {
    done: FenceSignalFuture<CommandBufferExecFuture<NowFuture>>,
    stamps: Option<Stamps>,
}

/// A recording of [`VulkanContext::record`] not yet submitted: the command buffer being filled
/// and how many calls it holds.
struct Pending {
    ctx: u64,
    builder: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
    stamps: Option<Stamps>,
    calls: usize,
    /// The allocator's running total of bytes when the recording began.
    start_bytes: u64,
}

/// Puts a recording back as this thread's pending one for its context when dropped: after a
/// call of [`VulkanContext::record`] returns, and also when the closure recording into it
/// panics, so that the kernels recorded before the panic still run when the recording is
/// submitted (their output buffers may already be held by tensors).
struct Requeue<'a> {
    recording: Option<Recorder<'a>>,
    calls: usize,
    start_bytes: u64,
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.recording.take() {
            let pending = Pending {
                ctx: r.ctx.id,
                builder: r.builder,
                stamps: r.stamps,
                calls: self.calls,
                start_bytes: self.start_bytes,
            };
            // During the thread's own teardown the list is gone, and so is every handle that
            // could read those buffers.
            let _ = PENDING.try_with(|p| p.borrow_mut().push(pending));
        }
    }
}

/// Timestamp queries per query pool of a profiled recording.
const STAMPS_PER_POOL: u32 = 1024;

/// The timestamps a profiled recording writes: the first when the command buffer starts, then
/// one after each command, whose label (kernel and bytes moved) is `labels[i − 1]` for timestamp
/// `i`. The device time of a command is the time between the timestamp before it and its own,
/// so it includes the barrier that waits for the command's inputs.
struct Stamps {
    pools: Vec<Arc<QueryPool>>,
    labels: Vec<(&'static str, u64)>,
}

/// One kernel's running totals in a profile: commands, nanoseconds, bytes moved.
struct ProfileEntry {
    kernel: &'static str,
    count: u64,
    nanos: f64,
    bytes: u64,
}

/// The device time one kernel took in a profile (see [`VulkanContext::take_profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The shader (`conv2d`, `binary`, ...), or `fill` and `copy` for buffer commands.
    pub kernel: &'static str,
    /// How many times it ran.
    pub count: u64,
    /// Its total device time.
    pub time: Duration,
    /// The bytes its commands read and wrote at least once, summed: each input counted once and
    /// each output once (an in-place update both), from the sizes of what the command touches.
    /// For elementwise kernels, reductions, norms and copies that is the memory traffic they
    /// cannot avoid; tiled products (`gemm`, the convolutions) read their operands more than
    /// once, through the caches, so for them it is a lower bound.
    pub bytes: u64,
}

impl KernelTime {
    /// [`bytes`](Self::bytes) over [`time`](Self::time), in bytes per second: the memory
    /// bandwidth the kernel used at least, to hold against the device's peak.
    pub fn bandwidth(&self) -> f64 {
        self.bytes as f64 / self.time.as_secs_f64()
    }
}

thread_local! {
    /// Each thread's recordings, one per context. vulkano's command-buffer allocator keeps a
    /// pool per thread, so a command buffer is recorded and submitted on the thread that began it.
    static PENDING: std::cell::RefCell<Vec<Pending>> = const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(0);

/// How many host↔device copies a [`VulkanContext`] has made, and how many bytes they moved
/// (see [`VulkanContext::transfers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Copies from the host to the device ([`VulkanContext::upload`],
    /// [`VulkanContext::upload_indices`]).
    pub uploads: u64,
    /// Bytes uploaded.
    pub upload_bytes: u64,
    /// Copies from the device to the host ([`VulkanContext::download`] and
    /// [`VulkanContext::download_bits`]).
    pub downloads: u64,
    /// Bytes downloaded.
    pub download_bytes: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    /// The copies made between two readings.
    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
        }
    }
}

/// What a [`VulkanContext`] has asked of its device, and how long the host waited for it (see
/// [`VulkanContext::activity`]). The host's own share of a piece of work — recording kernels,
/// allocating, autograd's bookkeeping — is its wall time minus [`waiting`](Self::waiting). The
/// device runs one command buffer while the host records the next (see
/// [`VulkanContext::record`]), so part of that host time is hidden behind device work; with
/// waiting close to the wall time the device is the bottleneck.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Compute dispatches recorded (one per kernel launch).
    pub dispatches: u64,
    /// Command buffers submitted.
    pub submissions: u64,
    /// Time the host spent submitting command buffers and blocked waiting for the device.
    pub waiting: Duration,
}

impl std::ops::Sub for Activity {
    type Output = Activity;
    /// The activity between two readings.
    fn sub(self, earlier: Activity) -> Activity {
        Activity {
            dispatches: self.dispatches - earlier.dispatches,
            submissions: self.submissions - earlier.submissions,
            waiting: self.waiting - earlier.waiting,
        }
    }
}

/// Calls of [`VulkanContext::record`] after which the shared recording is submitted, so that
/// the intermediates it keeps alive stay bounded — at most two recordings' worth, the one in
/// flight and the one being recorded (see the memory note on [`Recorder`]).
const RECORD_FLUSH_EVERY: usize = 256;

/// Bytes of buffers a recording of [`VulkanContext::record`] may allocate before it is
/// submitted, whatever its number of calls: the bound on what a recording keeps alive when the
/// tensors are large. The CIFAR-10 network at batch 128 makes a 64 MiB tensor per convolution,
/// and 256 calls' worth of them, twice, would hold tens of GiB that nothing uses any more; with
/// this bound the recordings hold at most twice this much (plus one call's), and a submission
/// still carries several milliseconds of work.
pub const RECORD_FLUSH_BYTES: u64 = 256 << 20;

/// `f32` data in device memory with a row-major (C-order) shape.
///
/// Not `Clone`: several kernels update a buffer in place, and a silent alias would make that
/// surprising. Copy explicitly with [`Recorder::copy`].
pub struct DeviceBuffer {
    pub(crate) buf: Subbuffer<[f32]>,
    shape: Vec<usize>,
}

/// `u32` indices in device memory (for [`Recorder::embedding`]).
pub struct DeviceIndices {
    pub(crate) buf: Subbuffer<[u32]>,
    len: usize,
    /// One past the largest index (0 for none), kept from the upload so that the kernels that
    /// take indices can refuse out-of-range ones on the host: on a GPU an index past a buffer
    /// reads or writes whatever memory is there.
    end: usize,
}

/// Records kernels into one command buffer; nothing runs until [`Recorder::submit`].
///
/// Kernels run in recording order as far as the results can tell: vulkano tracks which buffers
/// each dispatch reads and writes and inserts the pipeline barriers. Output buffers are allocated
/// at recording time, so their handles can be passed to later kernels in the same recording,
/// but their contents are only defined after submission.
///
/// Memory: a command buffer keeps every buffer it uses alive until it has finished, including
/// intermediates whose handles were dropped during recording. A very long recording (thousands
/// of network evaluations) should therefore call [`Recorder::flush`] now and then.
pub struct Recorder<'a> {
    pub(crate) ctx: &'a VulkanContext,
    builder: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
    stamps: Option<Stamps>,
}

/// Whether kernels on `device` may declare the SignedZeroInfNanPreserve execution mode for f32,
/// and whether that needs the device extension `VK_KHR_shader_float_controls` enabled (it is
/// core from Vulkan 1.2): the device must report `shaderSignedZeroInfNanPreserveFloat32`.
fn float_controls(device: &PhysicalDevice) -> (bool, bool) {
    float_controls_of(
        device.api_version(),
        device.supported_extensions().khr_shader_float_controls,
        device
            .properties()
            .shader_signed_zero_inf_nan_preserve_float32
            == Some(true),
    )
}

/// [`float_controls`] from what a device reports: its Vulkan version, whether it offers
/// `VK_KHR_shader_float_controls`, and whether it reports `shaderSignedZeroInfNanPreserveFloat32`.
fn float_controls_of(api: Version, offers_extension: bool, reports: bool) -> (bool, bool) {
    let core = api >= Version::V1_2;
    let extension = !core && offers_extension;
    (reports && (core || extension), reports && extension)
}

/// Which compiled variant of the kernels a [`VulkanContext`] loads. `build.rs` compiles every
/// shader twice: as written, and with the SignedZeroInfNanPreserve execution mode declared for
/// f32, which obliges the driver to keep NaN, ±∞ and −0 through the arithmetic (see
/// [`VulkanContext::preserves_nan`]).
///
/// [`VulkanContext::new`] takes the choice from the environment variable `NCSN_VULKAN_KERNELS`
/// (`auto`, `plain` or `nan-preserving`; unset means `auto`), so that a test suite, an example or
/// a benchmark can be run on either variant without a change to its code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelVariant {
    /// The NaN-preserving variants where the device reports
    /// `shaderSignedZeroInfNanPreserveFloat32`, the plain ones elsewhere.
    #[default]
    Auto,
    /// The plain variants, on any device: what a device without the property runs, and the
    /// variant to compare against when asking what the declaration costs.
    Plain,
    /// The NaN-preserving variants; opening a device without the property fails.
    NanPreserving,
}

impl KernelVariant {
    /// The environment variable [`KernelVariant::from_env`] reads.
    pub const ENV: &'static str = "NCSN_VULKAN_KERNELS";

    /// The variant `NCSN_VULKAN_KERNELS` names: [`Auto`](Self::Auto) when it is unset or empty;
    /// any value other than `auto`, `plain` or `nan-preserving` is an [`Error::Invalid`] naming
    /// the variable and the value.
    pub fn from_env() -> Result<Self> {
        Self::from_var(std::env::var(Self::ENV))
    }

    /// [`from_env`](Self::from_env) for the value `std::env::var` read.
    fn from_var(value: std::result::Result<String, std::env::VarError>) -> Result<Self> {
        match value {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::Invalid(format!(
                "{}={v:?} is not valid UTF-8; expected auto, plain or nan-preserving",
                Self::ENV
            ))),
            Ok(v) if v.is_empty() => Ok(Self::Auto),
            Ok(v) => v.parse(),
        }
    }
}

impl std::str::FromStr for KernelVariant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "plain" => Ok(Self::Plain),
            "nan-preserving" => Ok(Self::NanPreserving),
            _ => Err(Error::Invalid(format!(
                "{}={s:?}: expected auto, plain or nan-preserving",
                Self::ENV
            ))),
        }
    }
}

/// Ranks device types: discrete GPUs first, CPU implementations (lavapipe) last.
fn device_rank(kind: PhysicalDeviceType) -> u32 {
    match kind {
        PhysicalDeviceType::DiscreteGpu => 0,
        PhysicalDeviceType::IntegratedGpu => 1,
        PhysicalDeviceType::VirtualGpu => 2,
        PhysicalDeviceType::Cpu => 3,
        _ => 4,
    }
}

/// The device to open among `devices`, each given with its type and the index of a queue family
/// with compute, if it has one: the best-ranked type among those with a compute queue, and the
/// first of equals (the loader's order).
fn choose_device<D>(
    devices: impl IntoIterator<Item = (D, PhysicalDeviceType, Option<u32>)>,
) -> Option<(D, u32)> {
    devices
        .into_iter()
        .filter_map(|(d, kind, family)| Some((d, kind, family?)))
        .min_by_key(|(_, kind, _)| device_rank(*kind))
        .map(|(d, _, family)| (d, family))
}

/// Refuses a device that binds fewer storage buffers per shader stage than the widest kernel
/// (Vulkan promises 4; `cin_plus.comp` binds 7), naming the device.
fn check_storage_buffers(device_name: &str, storage: u32) -> Result<()> {
    if storage < super::shaders::STORAGE_BUFFERS_NEEDED {
        return Err(Error::Device(format!(
            "vulkan: {device_name} allows {storage} storage buffers per shader stage, and the \
             kernels bind up to {}",
            super::shaders::STORAGE_BUFFERS_NEEDED
        )));
    }
    Ok(())
}

fn compute_family(device: &PhysicalDevice) -> Option<u32> {
    first_compute_family(
        device
            .queue_family_properties()
            .iter()
            .map(|q| q.queue_flags),
    )
}

/// The index of the first queue family, given by its flags, that can run compute work.
fn first_compute_family(families: impl IntoIterator<Item = QueueFlags>) -> Option<u32> {
    families
        .into_iter()
        .position(|flags| flags.intersects(QueueFlags::COMPUTE))
        .map(|i| i as u32)
}

impl VulkanContext {
    /// Opens the best Vulkan device with a compute queue: a discrete GPU if there is one, then
    /// integrated, virtual, and CPU (lavapipe) devices.
    ///
    /// Fails with a message naming what is missing: no Vulkan loader (`libvulkan1`), no driver
    /// (`mesa-vulkan-drivers` provides lavapipe, a CPU implementation), or no compute queue.
    ///
    /// The kernels are the variant that `NCSN_VULKAN_KERNELS` names, [`KernelVariant::Auto`]
    /// when it is unset (see [`KernelVariant::from_env`]); a value it does not know is an error.
    pub fn new() -> Result<Self> {
        Self::with_kernels(KernelVariant::from_env()?)
    }

    /// Opens the best Vulkan device, as [`new`](Self::new) does, with the kernels of `variant`
    /// whatever the environment says. [`KernelVariant::NanPreserving`] fails on a device that
    /// does not report `shaderSignedZeroInfNanPreserveFloat32`.
    pub fn with_kernels(variant: KernelVariant) -> Result<Self> {
        let library = VulkanLibrary::new().map_err(|e| {
            Error::Device(format!(
                "vulkan: cannot load the Vulkan loader ({e}); install it (Debian/Ubuntu: \
                 `apt-get install libvulkan1`) and a driver (e.g. `mesa-vulkan-drivers`)"
            ))
        })?;
        let instance = Instance::new(library, InstanceCreateInfo::default()).map_err(|e| {
            Error::Device(format!(
                "vulkan: cannot create an instance ({}); is a Vulkan driver installed \
                 (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers` for lavapipe)?",
                e.describe()
            ))
        })?;
        let devices = vk!(
            instance.enumerate_physical_devices(),
            "enumerating physical devices"
        )?
        .map(|d| {
            let kind = d.properties().device_type;
            let family = compute_family(&d);
            (d, kind, family)
        });
        let (physical, family) = choose_device(devices).ok_or_else(|| {
            Error::Device(
                "vulkan: no Vulkan device with a compute queue was found; install a driver \
                 (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers` provides lavapipe, a CPU \
                 implementation) or check `vulkaninfo --summary`"
                    .into(),
            )
        })?;
        check_storage_buffers(
            &physical.properties().device_name,
            physical
                .properties()
                .max_per_stage_descriptor_storage_buffers,
        )?;
        let (supported, extension) = float_controls(&physical);
        let preserve_nan = match variant {
            KernelVariant::Auto => supported,
            KernelVariant::Plain => false,
            KernelVariant::NanPreserving if supported => true,
            KernelVariant::NanPreserving => {
                return Err(Error::Device(format!(
                    "vulkan: {} does not report shaderSignedZeroInfNanPreserveFloat32, so the \
                     NaN-preserving kernels cannot run on it; use the plain ones ({}=plain or \
                     auto)",
                    physical.properties().device_name,
                    KernelVariant::ENV
                )));
            }
        };
        let float_controls_extension = preserve_nan && extension;
        let (device, mut queues) = vk!(
            Device::new(
                physical,
                DeviceCreateInfo {
                    queue_create_infos: vec![QueueCreateInfo {
                        queue_family_index: family,
                        ..Default::default()
                    }],
                    enabled_extensions: DeviceExtensions {
                        khr_shader_float_controls: float_controls_extension,
                        ..DeviceExtensions::empty()
                    },
                    ..Default::default()
                },
            ),
            "creating the logical device"
        )?;
        let queue = queues.next().expect("one queue was requested");
        Ok(VulkanContext {
            memory: Arc::new(CountingAllocator::new(device.clone())),
            command_buffers: Arc::new(StandardCommandBufferAllocator::new(
                device.clone(),
                Default::default(),
            )),
            descriptor_sets: Arc::new(StandardDescriptorSetAllocator::new(
                device.clone(),
                Default::default(),
            )),
            device,
            queue,
            pipelines: Mutex::new(HashMap::new()),
            preserve_nan,
            id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
            transfers: Default::default(),
            activity: Default::default(),
            profiling: AtomicBool::new(false),
            profile: Mutex::new(Vec::new()),
            in_flight: Mutex::new(None),
        })
    }

    /// Turns per-kernel timing on the device on or off, for the recordings that start from now
    /// on (this thread's running recording is submitted first). While on, every command a
    /// recording holds is followed by a timestamp query, and after the device has run it the time
    /// between consecutive timestamps is added to that command's kernel in the profile that
    /// [`take_profile`](Self::take_profile) returns. The queries cost a little device time of
    /// their own, so profiled runs are for finding where time goes, not for the headline figure.
    ///
    /// Fails if the device's compute queue has no timestamps.
    pub fn set_profiling(&self, on: bool) -> Result<()> {
        if on && self.timestamp_bits().is_none() {
            return Err(Error::Device(format!(
                "vulkan: {} has no timestamps on its compute queue; profiling is unavailable",
                self.device_name()
            )));
        }
        self.flush()?;
        self.profiling.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The device time per kernel measured since the last call (see
    /// [`set_profiling`](Self::set_profiling)), most expensive first; work still recorded but
    /// not yet submitted is not in it (call [`flush`](Self::flush) first).
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let entries = std::mem::take(&mut *self.profile.lock().expect("profile poisoned"));
        let mut out: Vec<KernelTime> = entries
            .into_iter()
            .map(|e| KernelTime {
                kernel: e.kernel,
                count: e.count,
                time: Duration::from_nanos(e.nanos.round() as u64),
                bytes: e.bytes,
            })
            .collect();
        out.sort_by(|a, b| b.time.cmp(&a.time).then(a.kernel.cmp(b.kernel)));
        out
    }

    /// The valid bits of the compute queue's timestamps, if it has any.
    fn timestamp_bits(&self) -> Option<u32> {
        let family = self.queue.queue_family_index() as usize;
        self.device.physical_device().queue_family_properties()[family].timestamp_valid_bits
    }

    /// Adds a submitted recording's timestamps to the profile (after the device has run it).
    fn add_to_profile(&self, stamps: &Stamps) -> Result<()> {
        let n = stamps.labels.len() + 1;
        if n < 2 {
            return Ok(());
        }
        let mut ticks = vec![0u64; n];
        for (chunk, pool) in ticks
            .chunks_mut(STAMPS_PER_POOL as usize)
            .zip(&stamps.pools)
        {
            vk!(
                pool.get_results(0..chunk.len() as u32, chunk, QueryResultFlags::WAIT),
                "reading timestamps"
            )?;
        }
        let bits = self.timestamp_bits().unwrap_or(64);
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let period = self.device.physical_device().properties().timestamp_period as f64;
        let mut profile = self.profile.lock().expect("profile poisoned");
        for (i, &(kernel, bytes)) in stamps.labels.iter().enumerate() {
            let nanos = (ticks[i + 1].wrapping_sub(ticks[i]) & mask) as f64 * period;
            match profile.iter_mut().find(|e| e.kernel == kernel) {
                Some(e) => {
                    e.count += 1;
                    e.nanos += nanos;
                    e.bytes += bytes;
                }
                None => profile.push(ProfileEntry {
                    kernel,
                    count: 1,
                    nanos,
                    bytes,
                }),
            }
        }
        Ok(())
    }

    /// The dispatches and submissions this context has made so far, and the time spent waiting
    /// for them. Subtract two readings to see a piece of work's.
    pub fn activity(&self) -> Activity {
        let a = |i: usize| self.activity[i].load(Ordering::Relaxed);
        Activity {
            dispatches: a(0),
            submissions: a(1),
            waiting: Duration::from_nanos(a(2)),
        }
    }

    /// The device memory this context's buffers hold now, and the most they held at once since
    /// the context was made or [`reset_peak_memory`](Self::reset_peak_memory). A buffer counts
    /// until it is dropped and no submitted work uses it any more.
    pub fn memory_use(&self) -> MemoryUse {
        self.memory.usage()
    }

    /// Starts a new peak for [`memory_use`](Self::memory_use) from what is alive now, to measure
    /// the peak of one piece of work.
    pub fn reset_peak_memory(&self) {
        self.memory.reset_peak();
    }

    /// The host↔device copies this context has made so far. Subtract two readings to count the
    /// copies of a piece of work.
    pub fn transfers(&self) -> Transfers {
        let t = |i: usize| self.transfers[i].load(Ordering::Relaxed);
        Transfers {
            uploads: t(0),
            upload_bytes: t(1),
            downloads: t(2),
            download_bytes: t(3),
        }
    }

    fn count_transfer(&self, download: bool, bytes: usize) {
        let i = if download { 2 } else { 0 };
        self.transfers[i].fetch_add(1, Ordering::Relaxed);
        self.transfers[i + 1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    // ANCHOR: record
    /// Records kernels with `f` into this thread's running recording for this context, without
    /// submitting: the way the Tensor API queues one op after another. The recording is submitted
    /// by [`flush`](Self::flush), before any download, before [`run`](Self::run), and every few
    /// hundred calls; the device runs it in recording order. Output buffers can be used by later
    /// calls at once; their contents are defined once the recording has been submitted.
    ///
    /// It is also submitted once its calls have allocated [`RECORD_FLUSH_BYTES`], so that large
    /// tensors do not pile up in it.
    ///
    /// A submission made this way does not wait: the device runs that command buffer
    /// while the host records the next, and the next submission first waits for it. So at most
    /// one command buffer is in flight, the host's recording overlaps the device's work, and
    /// every submission starts after the previous one has finished (a fence wait). The next one
    /// sees the previous one's writes because vulkano's builder puts a full barrier (all stages,
    /// all memory accesses) before each buffer's first use in a primary command buffer, and a
    /// barrier's first scope covers everything submitted to the queue before it.
    ///
    /// Recordings are per thread (vulkano's command pools are): work recorded on one thread is
    /// not submitted by another thread's download. A thread that hands device buffers it computed
    /// to another thread calls [`flush`](Self::flush) first.
    pub fn record<T>(&self, f: impl FnOnce(&mut Recorder<'_>) -> Result<T>) -> Result<T> {
        let taken = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|q| q.ctx == self.id)?;
            Some(p.swap_remove(i))
        });
        let (r, calls, start_bytes) = match taken {
            Some(q) => {
                let r = Recorder {
                    ctx: self,
                    builder: q.builder,
                    stamps: q.stamps,
                };
                (r, q.calls, q.start_bytes)
            }
            None => (self.recorder()?, 0, self.memory.total()),
        };
        let mut guard = Requeue {
            recording: Some(r),
            calls: calls + 1,
            start_bytes,
        };
        let out = f(guard.recording.as_mut().expect("just set"));
        let allocated = self.memory.total() - start_bytes;
        if calls + 1 >= RECORD_FLUSH_EVERY || allocated >= RECORD_FLUSH_BYTES {
            let r = guard.recording.take().expect("still held");
            submit(self, r.builder, r.stamps, false)?;
        }
        out
    }
    // ANCHOR_END: record

    /// Submits this thread's running recording for this context (see [`record`](Self::record)),
    /// if any, and waits for the device to finish it and everything submitted before.
    pub fn flush(&self) -> Result<()> {
        let taken = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|q| q.ctx == self.id)?;
            Some(p.swap_remove(i))
        });
        match taken {
            Some(q) => submit(self, q.builder, q.stamps, true),
            None => self.wait_in_flight(),
        }
    }

    /// Waits for the command buffer in flight, if any. The lock is held while waiting, so that
    /// no other thread submits before it has finished.
    fn wait_in_flight(&self) -> Result<()> {
        let mut slot = self.in_flight.lock().expect("in-flight lock poisoned");
        slot.take().map_or(Ok(()), |f| self.finish(f))
    }

    /// Blocks until a submitted command buffer has run (counted as waiting), then adds its
    /// timestamps, if it was profiled, to the profile.
    fn finish(&self, f: InFlight) -> Result<()> {
        let start = std::time::Instant::now();
        let done = vk!(f.done.wait(None), "waiting for the device");
        let nanos = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.activity[2].fetch_add(nanos, Ordering::Relaxed);
        done?;
        match f.stamps {
            Some(stamps) => self.add_to_profile(&stamps),
            None => Ok(()),
        }
    }

    /// The device's name as the driver reports it (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub fn device_name(&self) -> String {
        self.device
            .physical_device()
            .properties()
            .device_name
            .clone()
    }

    /// The device's type (discrete GPU, CPU, ...).
    pub fn device_type(&self) -> PhysicalDeviceType {
        self.device.physical_device().properties().device_type
    }

    /// Whether the kernels keep NaN, ±∞ and −0 by the Vulkan specification's guarantee: they are
    /// the variants that declare the SignedZeroInfNanPreserve execution mode for f32, which this
    /// context loads where the device reports `shaderSignedZeroInfNanPreserveFloat32` (lavapipe
    /// does) unless it was opened with [`KernelVariant::Plain`]. Where the plain variants run, a
    /// driver may compile them as if no value were NaN or infinite, so a NaN reaching a kernel
    /// need not reach the loss.
    pub fn preserves_nan(&self) -> bool {
        self.preserve_nan
    }

    /// The compute pipeline for `kernel`, built on first use.
    pub(crate) fn pipeline(&self, kernel: Kernel) -> Result<Arc<ComputePipeline>> {
        let mut cache = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(p) = cache.get(&kernel) {
            return Ok(p.clone());
        }
        let what = format!("building the `{}` pipeline", kernel.name());
        let words = kernel.words(self.preserve_nan);
        // SAFETY: the words are SPIR-V produced by glslc from our own shaders at build time.
        let module = vk!(
            unsafe { ShaderModule::new(self.device.clone(), ShaderModuleCreateInfo::new(&words)) },
            &what
        )?;
        let entry = module
            .entry_point("main")
            .ok_or_else(|| Error::Device(format!("vulkan: {what}: no `main` entry point")))?;
        let stage = PipelineShaderStageCreateInfo::new(entry);
        let layout_info = vk!(
            PipelineDescriptorSetLayoutCreateInfo::from_stages([&stage])
                .into_pipeline_layout_create_info(self.device.clone()),
            &what
        )?;
        let layout = vk!(PipelineLayout::new(self.device.clone(), layout_info), &what)?;
        let pipeline = vk!(
            ComputePipeline::new(
                self.device.clone(),
                None,
                ComputePipelineCreateInfo::stage_layout(stage, layout),
            ),
            &what
        )?;
        cache.insert(kernel, pipeline.clone());
        Ok(pipeline)
    }

    /// The most `f32` elements one device buffer may hold: the device's `maxStorageBufferRange`
    /// (the largest range a kernel can address through one storage-buffer binding) over 4.
    /// Vulkan guarantees 2²⁷ bytes (32 Mi elements); lavapipe offers exactly that, NVIDIA's
    /// drivers 4 GiB. A tensor is one buffer, so this bounds the batch.
    pub fn max_buffer_len(&self) -> usize {
        self.max_buffer_bytes() as usize / 4
    }

    fn max_buffer_bytes(&self) -> u64 {
        self.device
            .physical_device()
            .properties()
            .max_storage_buffer_range as u64
    }

    /// Allocates an uninitialised device buffer of `len` elements of `T` (at least one: Vulkan
    /// has no empty buffers), described by `what` in the error if it is larger than a kernel can
    /// address (see [`max_buffer_len`](Self::max_buffer_len)): bound anyway, the part past the
    /// limit would be undefined behaviour, not an error.
    fn alloc_raw<T: vulkano::buffer::BufferContents>(
        &self,
        len: usize,
        what: impl FnOnce() -> String,
    ) -> Result<Subbuffer<[T]>> {
        let bytes = len.max(1) as u64 * std::mem::size_of::<T>() as u64;
        let limit = self.max_buffer_bytes();
        if bytes > limit {
            return Err(Error::Device(format!(
                "vulkan: {} needs {bytes} bytes, more than the {limit} bytes \
                 (maxStorageBufferRange) a kernel can address in one buffer on {}; use a smaller \
                 batch",
                what(),
                self.device_name()
            )));
        }
        vk!(
            Buffer::new_slice::<T>(
                self.memory.clone(),
                BufferCreateInfo {
                    usage: BufferUsage::STORAGE_BUFFER
                        | BufferUsage::TRANSFER_SRC
                        | BufferUsage::TRANSFER_DST,
                    ..Default::default()
                },
                AllocationCreateInfo {
                    memory_type_filter: MemoryTypeFilter::PREFER_DEVICE,
                    ..Default::default()
                },
                len.max(1) as u64,
            ),
            "allocating a device buffer"
        )
    }

    /// An uninitialised device buffer of the given shape. Its contents are unspecified until a
    /// kernel writes them.
    pub fn alloc(&self, shape: &[usize]) -> Result<DeviceBuffer> {
        let len = shape.iter().product();
        Ok(DeviceBuffer {
            buf: self.alloc_raw(len, || format!("a tensor of shape {shape:?}"))?,
            shape: shape.to_vec(),
        })
    }

    /// A host-visible staging buffer holding `data`.
    fn staging_from<T: vulkano::buffer::BufferContents + Copy>(
        &self,
        data: &[T],
    ) -> Result<Subbuffer<[T]>> {
        let zero_len_pad = if data.is_empty() { 1 } else { 0 };
        let staging = vk!(
            Buffer::new_slice::<T>(
                self.memory.clone(),
                BufferCreateInfo {
                    usage: BufferUsage::TRANSFER_SRC,
                    ..Default::default()
                },
                AllocationCreateInfo {
                    memory_type_filter: MemoryTypeFilter::PREFER_HOST
                        | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
                    ..Default::default()
                },
                (data.len() + zero_len_pad) as u64,
            ),
            "allocating a staging buffer"
        )?;
        vk!(staging.write(), "mapping a staging buffer")?[..data.len()].copy_from_slice(data);
        Ok(staging)
    }

    /// Copies `data` into a new device buffer with `shape`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<DeviceBuffer> {
        let len: usize = shape.iter().product();
        assert_eq!(
            data.len(),
            len,
            "upload: {} values for shape {shape:?}",
            data.len()
        );
        let out = self.alloc(shape)?;
        self.count_transfer(false, std::mem::size_of_val(data));
        let staging = self.staging_from(data)?;
        let mut r = self.recorder()?;
        vk!(
            r.builder
                .copy_buffer(CopyBufferInfo::buffers(staging, out.buf.clone())),
            "recording an upload"
        )?;
        r.submit()?;
        Ok(out)
    }

    /// Copies `u32` indices into device memory.
    pub fn upload_indices(&self, idx: &[u32]) -> Result<DeviceIndices> {
        let buf = self.alloc_raw::<u32>(idx.len(), || format!("{} indices", idx.len()))?;
        self.count_transfer(false, std::mem::size_of_val(idx));
        let staging = self.staging_from(idx)?;
        let mut r = self.recorder()?;
        vk!(
            r.builder
                .copy_buffer(CopyBufferInfo::buffers(staging, buf.clone())),
            "recording an upload"
        )?;
        r.submit()?;
        Ok(DeviceIndices {
            buf,
            len: idx.len(),
            end: idx.iter().max().map_or(0, |&m| m as usize + 1),
        })
    }

    /// Reads a buffer's words back through a host-visible staging buffer.
    fn download_words(&self, buf: &DeviceBuffer) -> Result<Vec<u32>> {
        self.flush()?;
        let n = buf.len();
        self.count_transfer(true, 4 * n);
        let staging = vk!(
            Buffer::new_slice::<u32>(
                self.memory.clone(),
                BufferCreateInfo {
                    usage: BufferUsage::TRANSFER_DST,
                    ..Default::default()
                },
                AllocationCreateInfo {
                    memory_type_filter: MemoryTypeFilter::PREFER_HOST
                        | MemoryTypeFilter::HOST_RANDOM_ACCESS,
                    ..Default::default()
                },
                n.max(1) as u64,
            ),
            "allocating a staging buffer"
        )?;
        let mut r = self.recorder()?;
        vk!(
            r.builder.copy_buffer(CopyBufferInfo::buffers(
                buf.buf.clone().reinterpret::<[u32]>(),
                staging.clone()
            )),
            "recording a download"
        )?;
        r.submit()?;
        let words = vk!(staging.read(), "mapping a staging buffer")?[..n].to_vec();
        Ok(words)
    }

    /// Copies a device buffer back to the host (waits for all work submitted before it).
    pub fn download(&self, buf: &DeviceBuffer) -> Result<Vec<f32>> {
        Ok(self
            .download_words(buf)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }

    /// Copies a device buffer back as raw 32-bit words, for buffers that hold integers (the
    /// output of [`Recorder::philox_bits`]).
    pub fn download_bits(&self, buf: &DeviceBuffer) -> Result<Vec<u32>> {
        self.download_words(buf)
    }

    /// Starts recording kernels into a new command buffer.
    pub fn recorder(&self) -> Result<Recorder<'_>> {
        let builder = vk!(
            AutoCommandBufferBuilder::primary(
                self.command_buffers.clone(),
                self.queue.queue_family_index(),
                CommandBufferUsage::OneTimeSubmit,
            ),
            "starting a command buffer"
        )?;
        let profiled = self.profiling.load(Ordering::Relaxed);
        let mut r = Recorder {
            ctx: self,
            builder,
            stamps: profiled.then(|| Stamps {
                pools: Vec::new(),
                labels: Vec::new(),
            }),
        };
        r.stamp(None)?; // the start
        Ok(r)
    }

    /// Records kernels with `f`, submits them as one command buffer, and waits until they finish.
    /// Returns what `f` returned (typically output buffers, now filled).
    pub fn run<T>(&self, f: impl FnOnce(&mut Recorder<'_>) -> Result<T>) -> Result<T> {
        self.flush()?;
        let mut r = self.recorder()?;
        let out = f(&mut r)?;
        r.submit()?;
        Ok(out)
    }
}

impl DeviceBuffer {
    /// The row-major shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The number of elements (the product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The same storage seen with another shape of the same size (shares memory, like a view).
    ///
    /// # Panics
    /// If the sizes differ.
    pub fn reshape(self, shape: &[usize]) -> DeviceBuffer {
        let len: usize = shape.iter().product();
        assert_eq!(len, self.len(), "reshape: {:?} -> {shape:?}", self.shape);
        DeviceBuffer {
            buf: self.buf,
            shape: shape.to_vec(),
        }
    }
    /// The same storage seen with another shape of the same size, without giving up this handle.
    pub(crate) fn view(&self, shape: &[usize]) -> DeviceBuffer {
        let len: usize = shape.iter().product();
        assert_eq!(len, self.len(), "view: {:?} -> {shape:?}", self.shape);
        DeviceBuffer {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        }
    }
    pub(crate) fn bytes(&self) -> Subbuffer<[u8]> {
        self.buf.as_bytes().clone()
    }
    /// The size of the contents in bytes (4 per element).
    pub(crate) fn size_bytes(&self) -> u64 {
        4 * self.len() as u64
    }
}

impl DeviceIndices {
    /// The number of indices.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there are no indices.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The size of the indices in bytes (4 per index).
    pub(crate) fn size_bytes(&self) -> u64 {
        4 * self.len as u64
    }

    /// Panics unless every index is below `extent` (`op` and `what` name the caller and the axis).
    pub(crate) fn assert_below(&self, extent: usize, op: &str, what: &dyn std::fmt::Display) {
        assert!(
            self.end <= extent,
            "{op}: index {} out of range for {what} of {extent}",
            self.end.saturating_sub(1)
        );
    }
}

/// Workgroups for a grid-stride loop over `n` items with `local` threads per group: enough to
/// cover `n` once, capped at 65535 (the minimum `maxComputeWorkGroupCount` Vulkan guarantees).
pub(crate) fn groups_1d(n: usize, local: usize) -> u32 {
    n.div_ceil(local).clamp(1, 65535) as u32
}

impl Recorder<'_> {
    /// Records one dispatch of `kernel` with the given buffers at bindings 0, 1, ... and the push
    /// constants as 32-bit words (f32 values pushed as their bits). `bytes` is what the kernel
    /// reads and writes at least once, for the profile (see [`KernelTime::bytes`]): the caller
    /// knows which bindings a mode leaves unread, which part of a buffer a strided copy touches,
    /// and which buffers are updated in place.
    pub(crate) fn dispatch<const N: usize>(
        &mut self,
        kernel: Kernel,
        buffers: &[Subbuffer<[u8]>],
        push: [u32; N],
        groups: [u32; 3],
        bytes: u64,
    ) -> Result<()> {
        let what = format!("recording `{}`", kernel.name());
        let pipeline = self.ctx.pipeline(kernel)?;
        let layout = pipeline.layout().clone();
        let set = vk!(
            DescriptorSet::new(
                self.ctx.descriptor_sets.clone(),
                layout.set_layouts()[0].clone(),
                buffers
                    .iter()
                    .enumerate()
                    .map(|(i, b)| WriteDescriptorSet::buffer(i as u32, b.clone())),
                [],
            ),
            &what
        )?;
        vk!(self.builder.bind_pipeline_compute(pipeline), &what)?;
        vk!(
            self.builder
                .bind_descriptor_sets(PipelineBindPoint::Compute, layout.clone(), 0, set),
            &what
        )?;
        vk!(self.builder.push_constants(layout, 0, push), &what)?;
        // SAFETY: every shader bounds-checks its indices against the sizes in its push constants,
        // and the op wrappers check that those sizes match the bound buffers' shapes.
        vk!(unsafe { self.builder.dispatch(groups) }, &what)?;
        self.ctx.activity[0].fetch_add(1, Ordering::Relaxed);
        self.stamp(Some((kernel.name(), bytes)))
    }

    /// When profiling, records a timestamp after the last command, which `label` names with the
    /// bytes it moved (`None` for the start of the command buffer).
    fn stamp(&mut self, label: Option<(&'static str, u64)>) -> Result<()> {
        let Some(stamps) = self.stamps.as_mut() else {
            return Ok(());
        };
        let q = stamps.labels.len() as u32 + u32::from(label.is_some());
        let (pool, index) = ((q / STAMPS_PER_POOL) as usize, q % STAMPS_PER_POOL);
        if pool == stamps.pools.len() {
            let new = vk!(
                QueryPool::new(
                    self.ctx.device.clone(),
                    QueryPoolCreateInfo {
                        query_count: STAMPS_PER_POOL,
                        ..QueryPoolCreateInfo::query_type(QueryType::Timestamp)
                    },
                ),
                "creating a timestamp query pool"
            )?;
            // SAFETY: the pool is new and used by this command buffer only.
            vk!(
                unsafe {
                    self.builder
                        .reset_query_pool(new.clone(), 0..STAMPS_PER_POOL)
                },
                "resetting timestamp queries"
            )?;
            stamps.pools.push(new);
        }
        // SAFETY: each query of the pool is written once, after the reset above.
        vk!(
            unsafe {
                self.builder.write_timestamp(
                    stamps.pools[pool].clone(),
                    index,
                    PipelineStage::BottomOfPipe,
                )
            },
            "writing a timestamp"
        )?;
        if let Some(label) = label {
            stamps.labels.push(label);
        }
        Ok(())
    }

    /// A new, uninitialised output buffer (see [`VulkanContext::alloc`]).
    pub(crate) fn output(&self, shape: &[usize]) -> Result<DeviceBuffer> {
        self.ctx.alloc(shape)
    }

    /// Records a zero-filled buffer of `shape`.
    pub fn zeros(&mut self, shape: &[usize]) -> Result<DeviceBuffer> {
        let out = self.output(shape)?;
        vk!(
            self.builder
                .fill_buffer(out.buf.clone().reinterpret::<[u32]>(), 0),
            "recording a fill"
        )?;
        self.stamp(Some(("fill", out.size_bytes())))?;
        Ok(out)
    }

    /// Records filling `out` with the 32-bit word `word`.
    pub(crate) fn fill_words(&mut self, out: &DeviceBuffer, word: u32) -> Result<()> {
        vk!(
            self.builder
                .fill_buffer(out.buf.clone().reinterpret::<[u32]>(), word),
            "recording a fill"
        )?;
        self.stamp(Some(("fill", out.size_bytes())))
    }

    /// Records a copy of `src` into a new buffer of the same shape.
    pub fn copy(&mut self, src: &DeviceBuffer) -> Result<DeviceBuffer> {
        let out = self.output(src.shape())?;
        vk!(
            self.builder
                .copy_buffer(CopyBufferInfo::buffers(src.buf.clone(), out.buf.clone())),
            "recording a copy"
        )?;
        self.stamp(Some(("copy", 2 * out.size_bytes())))?;
        Ok(out)
    }

    /// Submits everything recorded and waits for the device to finish.
    pub fn submit(self) -> Result<()> {
        submit(self.ctx, self.builder, self.stamps, true)
    }

    /// Submits what has been recorded so far, waits for it, and goes on recording into a fresh
    /// command buffer. Buffers that only the finished commands used are freed once their last
    /// handle drops, so a long loop that calls this every few hundred steps keeps its memory
    /// bounded (see the memory note on [`Recorder`]).
    pub fn flush(&mut self) -> Result<()> {
        let fresh = self.ctx.recorder()?;
        let done = std::mem::replace(&mut self.builder, fresh.builder);
        let stamps = std::mem::replace(&mut self.stamps, fresh.stamps);
        submit(self.ctx, done, stamps, true)
    }
}

// ANCHOR: submit
/// Ends `builder` and submits it to the context's queue, after waiting for the command buffer
/// still in flight, if any (so the device runs them one after the other, each seeing the other's
/// writes). With `wait` it then waits for this one too; without, it leaves it in flight, to be
/// waited for by the next submission, [`VulkanContext::flush`] or a download.
fn submit(
    ctx: &VulkanContext,
    builder: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
    stamps: Option<Stamps>,
    wait: bool,
) -> Result<()> {
    let cb = vk!(builder.build(), "finishing a command buffer")?;
    let mut slot = ctx.in_flight.lock().expect("in-flight lock poisoned");
    if let Some(prev) = slot.take() {
        ctx.finish(prev)?;
    }
    let start = std::time::Instant::now();
    let what = "submitting a command buffer";
    let submitted = vk!(
        sync::now(ctx.device.clone()).then_execute(ctx.queue.clone(), cb),
        what
    )
    .and_then(|f| vk!(f.then_signal_fence_and_flush(), what));
    ctx.activity[1].fetch_add(1, Ordering::Relaxed);
    let nanos = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    ctx.activity[2].fetch_add(nanos, Ordering::Relaxed);
    let f = InFlight {
        done: submitted?,
        stamps,
    };
    if wait {
        ctx.finish(f)
    } else {
        *slot = Some(f);
        Ok(())
    }
}
// ANCHOR_END: submit

#[cfg(test)]
mod tests {
    use super::KernelVariant;
    use vulkano::Version;
    use vulkano::device::physical::PhysicalDeviceType as Type;

    // The choices below matter where lavapipe cannot show them: a machine with a GPU and
    // lavapipe both installed (the GPU must win), a device whose first queue family lacks
    // compute, a Vulkan 1.2 device, and one that binds too few storage buffers. So they are
    // pure functions of what the devices report, tested here on made-up reports.

    /// The device opened is the best-ranked type among those with a compute queue: a discrete
    /// GPU over an integrated, virtual or CPU one in whatever order the loader lists them, never
    /// one without compute, and of two alike the first listed.
    #[test]
    fn the_best_device_with_a_compute_queue_is_chosen() {
        let choose = |devices: &[(&'static str, Type, Option<u32>)]| {
            super::choose_device(devices.iter().copied())
        };
        let all = [
            ("llvmpipe", Type::Cpu, Some(0)),
            ("virtio", Type::VirtualGpu, Some(0)),
            ("nvidia", Type::DiscreteGpu, Some(2)),
            ("intel", Type::IntegratedGpu, Some(1)),
        ];
        assert_eq!(choose(&all), Some(("nvidia", 2)));
        // Take the winner away, one after another: the ranking, whatever the listing order.
        let mut rest = all.to_vec();
        for (drop, want) in [
            ("nvidia", "intel"),
            ("intel", "virtio"),
            ("virtio", "llvmpipe"),
        ] {
            rest.retain(|d| d.0 != drop);
            let mut reversed = rest.clone();
            reversed.reverse();
            for list in [&rest, &reversed] {
                let got = choose(list).map(|(name, _)| name);
                assert_eq!(got, Some(want), "without {drop}: {list:?}");
            }
        }
        assert_eq!(
            choose(&[
                ("gpu", Type::DiscreteGpu, None),
                ("cpu", Type::Cpu, Some(3))
            ]),
            Some(("cpu", 3)),
            "a device without a compute queue is passed over"
        );
        assert_eq!(
            choose(&[
                ("a", Type::DiscreteGpu, Some(0)),
                ("b", Type::DiscreteGpu, Some(1))
            ]),
            Some(("a", 0))
        );
        assert_eq!(choose(&[("gpu", Type::DiscreteGpu, None)]), None);
        assert_eq!(choose(&[]), None);
    }

    /// The queue family is the first that can run compute work, whatever else it can or cannot
    /// do (a GPU's first family is often graphics and compute, and some list a graphics-only one
    /// first).
    #[test]
    fn the_first_queue_family_with_compute_is_used() {
        use vulkano::device::QueueFlags as F;
        let first = |f: &[F]| super::first_compute_family(f.iter().copied());
        assert_eq!(first(&[F::GRAPHICS, F::COMPUTE | F::TRANSFER]), Some(1));
        assert_eq!(first(&[F::GRAPHICS | F::COMPUTE, F::COMPUTE]), Some(0));
        assert_eq!(first(&[F::TRANSFER, F::GRAPHICS, F::COMPUTE]), Some(2));
        assert_eq!(first(&[F::GRAPHICS, F::TRANSFER]), None);
        assert_eq!(first(&[]), None);
    }

    /// SignedZeroInfNanPreserve is core from Vulkan 1.2 and an extension before: (usable, needs
    /// the extension enabled) for each version, offer and report.
    #[test]
    fn float_controls_are_core_from_vulkan_1_2_and_an_extension_before() {
        let cases = [
            (Version::V1_3, false, true, (true, false)),
            (Version::V1_2, false, true, (true, false)),
            (Version::V1_2, true, true, (true, false)),
            (Version::V1_1, true, true, (true, true)),
            (Version::V1_1, false, true, (false, false)),
            (Version::V1_3, true, false, (false, false)),
            (Version::V1_1, true, false, (false, false)),
        ];
        for (api, offers, reports, want) in cases {
            assert_eq!(
                super::float_controls_of(api, offers, reports),
                want,
                "Vulkan {api}, extension offered {offers}, property reported {reports}"
            );
        }
    }

    /// A device must bind as many storage buffers per stage as the widest kernel; Vulkan's
    /// guaranteed 4 is not enough, and the refusal names the device and both numbers.
    #[test]
    fn a_device_with_too_few_storage_buffers_is_refused_by_name() {
        let needed = crate::backend::vulkan::shaders::STORAGE_BUFFERS_NEEDED;
        assert!(super::check_storage_buffers("gpu", needed).is_ok());
        assert!(super::check_storage_buffers("gpu", 1 << 20).is_ok());
        for storage in [4, needed - 1] {
            let msg = super::check_storage_buffers("Small GPU", storage)
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("Small GPU")
                    && msg.contains(&format!("allows {storage} "))
                    && msg.contains(&format!("up to {needed}")),
                "{msg}"
            );
        }
    }

    /// `NCSN_VULKAN_KERNELS` unset or set but empty (`NCSN_VULKAN_KERNELS= cargo test`) means
    /// `auto`; a name is parsed; anything else, including a value that is not UTF-8, is an error
    /// that names the variable.
    #[test]
    fn kernel_variant_from_the_environment_variable() {
        use std::env::VarError;
        let from = |v: Result<String, VarError>| KernelVariant::from_var(v);
        assert_eq!(
            from(Err(VarError::NotPresent)).unwrap(),
            KernelVariant::Auto
        );
        assert_eq!(from(Ok(String::new())).unwrap(), KernelVariant::Auto);
        assert_eq!(from(Ok("plain".into())).unwrap(), KernelVariant::Plain);
        // What `std::env::var` returns for a value that is not UTF-8 (the bytes do not matter).
        let not_utf8 = std::ffi::OsString::from("plain");
        for bad in [Ok(" ".to_string()), Err(VarError::NotUnicode(not_utf8))] {
            let msg = from(bad).unwrap_err().to_string();
            assert!(msg.contains(KernelVariant::ENV), "{msg}");
        }
    }

    #[test]
    fn kernel_variants_parse_by_name_and_unknown_names_are_errors() {
        let parse = |s: &str| s.parse::<KernelVariant>();
        assert_eq!(parse("auto").unwrap(), KernelVariant::Auto);
        assert_eq!(parse("plain").unwrap(), KernelVariant::Plain);
        assert_eq!(
            parse("nan-preserving").unwrap(),
            KernelVariant::NanPreserving
        );
        assert_eq!(KernelVariant::default(), KernelVariant::Auto);
        for bad in ["Plain", "nan", " plain", "fast"] {
            let msg = parse(bad).unwrap_err().to_string();
            assert!(
                msg.contains("NCSN_VULKAN_KERNELS") && msg.contains(&format!("{bad:?}")),
                "{bad}: {msg}"
            );
        }
    }
}
