//! The [`Tensor`]: an n-dimensional f32 array that remembers how it was made.
//!
//! A tensor is a cheap handle (`Arc`) to its data and, when it was computed from other tensors while
//! gradients are being recorded, to the op (`Op`, crate-private) that made it. That record is all that reverse-mode
//! automatic differentiation needs (see [`crate::autograd`]). The op families live in their own
//! files, each with its forward kernel and its vector-Jacobian product side by side:
//!
//! | file | ops |
//! |---|---|
//! | `unary.rs` | neg, exp, log, sqrt, square, powf, abs, sigmoid, tanh, relu, softplus, elu, scalar add/mul |
//! | `binary.rs` | add, sub, mul, div, maximum, minimum with NumPy broadcasting; comparisons; `where_` |
//! | `reduce.rs` | sum, mean, var, max, logsumexp |
//! | `shape.rs` | reshape, permute, broadcast_to, narrow, pad_axis, concat, stack, index_select, index_add_into |
//! | `matmul.rs` | 2-D and batched matrix products through `matrixmultiply`; thin products as dot products; small ones, with AVX-512, through `small_gemm.rs`; `linear` (x·wᵀ + b) as one op |
//! | `conv.rs` | conv2d, its input gradient (the transposed convolution) and its weight gradient |
//! | `pool.rs` | avg_pool2d (`count_include_pad`), bilinear resizing (`align_corners`), their adjoints |
//! | `norm.rs` | instance_norm, channel_affine, channel_dot, and CondInstanceNorm++ fused |
//!
//! # Devices
//! A tensor's data lives on a [`Device`]: the CPU, or with the `vulkan` feature a Vulkan device
//! (`tensor.to(&device)`, `tensor.device()`). Each op begins with a device branch: when an input
//! lives on a Vulkan device the op records the matching kernel there (`vulkan.rs`), otherwise it
//! runs the CPU kernel below, untouched. The op is recorded for autograd the same way on both, so
//! gradients of any order stay on the device. [`Tensor::storage`] always returns a CPU array,
//! downloading a device tensor's data.
//!
//! # Errors
//! Shape mismatches are programmer errors: every op panics with its name and the shapes involved,
//! as ndarray does. Nothing that depends on input bytes panics; that code returns [`crate::Result`].

#[cfg(target_arch = "x86_64")]
mod avx512;
mod binary;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_same;
mod device;
pub mod fastmath;
mod matmul;
mod norm;
mod op;
pub mod philox;
mod pool;
mod reduce;
mod shape;
#[cfg(target_arch = "x86_64")]
mod small_gemm;
mod unary;
#[cfg(feature = "vulkan")]
mod vulkan;

pub use conv::Conv2dConfig;
pub use device::Device;
pub(crate) use op::Op;
pub use pool::Pool2dConfig;
pub use unary::UnaryOp;

use ndarray::{ArcArray, ArrayD, IxDyn};
use ndarray_rand::RandomExt;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The storage of a tensor: a reference-counted, copy-on-write ndarray, so that reshapes, permutes
/// and broadcasts share memory with their input.
pub type Storage = ArcArray<f32, IxDyn>;

/// Where a tensor's data lives: host memory, or a buffer on a Vulkan device.
// ANCHOR: data_enum
#[derive(Clone)]
pub(crate) enum Data {
    /// On the CPU: the ndarray the CPU kernels read.
    Cpu(Storage),
    /// On a Vulkan device: a contiguous device buffer (see `vulkan.rs`).
    #[cfg(feature = "vulkan")]
    Vulkan(vulkan::DeviceData),
}
// ANCHOR_END: data_enum

impl Data {
    fn shape(&self) -> &[usize] {
        match self {
            Data::Cpu(s) => s.shape(),
            #[cfg(feature = "vulkan")]
            Data::Vulkan(d) => &d.shape,
        }
    }
}

impl From<Storage> for Data {
    fn from(s: Storage) -> Data {
        Data::Cpu(s)
    }
}

impl From<ArrayD<f32>> for Data {
    fn from(a: ArrayD<f32>) -> Data {
        Data::Cpu(a.into_shared())
    }
}

/// The elements of `s` in row-major order as a slice: borrowed when the storage is already
/// contiguous (the common case), copied otherwise.
pub(crate) fn contiguous(s: &Storage) -> std::borrow::Cow<'_, [f32]> {
    match s.as_slice() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(s.iter().copied().collect()),
    }
}

/// A vector of `n` floats written by `init`, which receives them uninitialised and must write
/// every one — what an output buffer needs, without first zeroing memory that is about to be
/// overwritten (for an elementwise op, a pass over memory as long as the op itself).
///
/// Its callers write every element: through [`fastmath::map_into`], [`fastmath::zip_into`] or
/// [`fastmath::zip3_into`] (which write every element of the slice they are given), through sgemm
/// with β = 0 (which writes every element of C), through [`zeroed`], or in a loop over the whole
/// buffer.
pub(crate) fn filled(n: usize, init: impl FnOnce(&mut [std::mem::MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    init(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `init` wrote all n elements (the contract above), so they are initialised.
    unsafe { v.set_len(n) };
    v
}

/// Writes zeros into `buf` and returns it as initialised floats: for a part of a [`filled`]
/// buffer that a kernel accumulates into, zeroed by the thread that owns that part (rather than
/// by one thread for the whole buffer before the parallel loop starts).
pub(crate) fn zeroed(buf: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    for v in buf.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every element was just written, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(buf as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// Calls `f(i, j)` for every entry of an m × n matrix, in 32 × 32 tiles, so that a loop that
/// reads one matrix by rows and another by columns finds both in cache.
#[inline(always)]
pub(crate) fn for_each_tiled(m: usize, n: usize, mut f: impl FnMut(usize, usize)) {
    const TILE: usize = 32;
    for i0 in (0..m).step_by(TILE) {
        for j0 in (0..n).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for j in j0..(j0 + TILE).min(n) {
                    f(i, j);
                }
            }
        }
    }
}

/// A unique identifier of a tensor, used as the key of [`crate::autograd::Gradients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

// ANCHOR: id_hasher
/// A hasher for maps keyed by [`TensorId`]: ids are distinct integers, so one multiplication by
/// an odd constant (Fibonacci hashing) spreads them over the table; SipHash, the standard
/// library's default, guards against adversarial keys that cannot occur here and costs several
/// times more on the backward pass's hot path.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
// ANCHOR_END: id_hasher

/// A hash map keyed by tensor id.
pub(crate) type IdMap<V> =
    std::collections::HashMap<TensorId, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A hash set of tensor ids.
pub(crate) type IdSet =
    std::collections::HashSet<TensorId, std::hash::BuildHasherDefault<IdHasher>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// An n-dimensional array of f32 with an optional record of the op that produced it.
///
/// Cloning is cheap (one reference count). The graph of ops is freed when the last handle to its
/// output drops.
// ANCHOR: tensor_struct
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: TensorId,
    shape: Vec<usize>,
    data: RwLock<Data>,
    op: Option<Op>,
    requires_grad: bool,
}
// ANCHOR_END: tensor_struct

impl Drop for Inner {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // Free long chains of ops iteratively rather than by recursion, so that dropping a deep
        // graph (thousands of ops) cannot overflow the stack.
        // The inputs are moved to a stack (cloning a handle, then dropping the op releases the
        // original), and a node whose last handle is on the stack is taken apart in turn.
        let inputs = |op: Op| -> Vec<Tensor> { op.inputs().iter().cloned().collect() };
        let mut stack: Vec<Tensor> = self.op.take().map(inputs).unwrap_or_default();
        while let Some(t) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(t.0)
                && let Some(op) = inner.op.take()
            {
                stack.extend(inputs(op));
            }
        }
    }
}

// ANCHOR: keep_freed_memory
/// Asks the C allocator to keep the memory of freed tensors for reuse instead of handing it back
/// to the kernel, and returns whether it could (only with glibc, on Linux; elsewhere it does
/// nothing and returns false). Call it once at the start of a long training or sampling run.
///
/// A training step allocates and frees the same large activations every step — at batch 128 an
/// MNIST feature map of 64 channels is 25.7 MB. glibc serves blocks that large with `mmap` and
/// returns them with `munmap` (or trims the top of its heap), so every step the kernel maps the
/// pages in again, one page fault and one zeroed 4 KiB page at a time: 3.3 million page faults in
/// three training steps and two forward passes of `examples/refinenet_step` at batch 128, about
/// 7 s of system time. With the thresholds raised (mmap only above 32 MiB, the most `mallopt`
/// accepts; never trim; grow the heap 64 MiB at a time) the first step faults the memory in
/// and later steps reuse it: 1.36 million faults in the same run, nearly all in step 0. The
/// cost is that the process keeps its peak memory until it exits.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MIB: libc::c_int = 1 << 20;
        // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * MIB) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 * MIB) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
// ANCHOR_END: keep_freed_memory

/// The number of tensors alive in this process: a diagnostic for tests that a training loop does
/// not leak graph nodes from one step to the next.
pub fn live_tensors() -> usize {
    LIVE.load(Ordering::Relaxed)
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph that gradients need.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with gradient recording switched on or off, restoring the previous mode afterwards
/// (also when `f` panics).
pub fn with_grad_mode<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(enabled)));
    f()
}

/// Runs `f` without recording any graph: like `with torch.no_grad():`. Samplers and evaluation use
/// it, so that a thousand Langevin steps build no graph at all.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(false, f)
}

impl Tensor {
    fn make(data: Data, op: Option<Op>, requires_grad: bool) -> Tensor {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Tensor(Arc::new(Inner {
            id: TensorId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            shape: data.shape().to_vec(),
            data: RwLock::new(data),
            op,
            requires_grad,
        }))
    }

    /// The result of `op`: the op is recorded only when gradients are enabled and one of its inputs
    /// requires a gradient; otherwise the result is a plain leaf and the inputs can be freed.
    // ANCHOR: from_op
    pub(crate) fn from_op(data: impl Into<Data>, op: Op) -> Tensor {
        let record = is_grad_enabled() && op.inputs().iter().any(|t| t.requires_grad());
        if record {
            Tensor::make(data.into(), Some(op), true)
        } else {
            Tensor::make(data.into(), None, false)
        }
    }
    // ANCHOR_END: from_op

    // ---------------------------------------------------------------- creation

    /// A leaf tensor that owns `data`.
    pub fn from_array(data: impl Into<Storage>) -> Tensor {
        Tensor::make(Data::Cpu(data.into()), None, false)
    }

    /// A leaf tensor of the given shape from row-major values. Panics if the length does not match.
    pub fn from_vec(values: Vec<f32>, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            values.len(),
            n,
            "from_vec: {} values for shape {:?}",
            values.len(),
            shape
        );
        Tensor::from_array(ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape checked"))
    }

    /// A 0-dimensional tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::from_array(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A tensor of the given shape filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::from_array(ArrayD::from_elem(IxDyn(shape), v))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A tensor of `shape` filled with `v` on `device` (on a Vulkan device a fill command: no
    /// host-to-device copy).
    pub fn full_on(shape: &[usize], v: f32, device: &Device) -> Tensor {
        match device {
            Device::Cpu => Tensor::full(shape, v),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(ctx) => Tensor::make(vulkan::full(ctx, shape, v), None, false),
        }
    }

    /// `v` with the shape and on the device of `self`.
    pub fn full_like(&self, v: f32) -> Tensor {
        Tensor::full_on(self.shape(), v, &self.device())
    }

    /// Zeros with the shape and on the device of `self`.
    pub fn zeros_like(&self) -> Tensor {
        self.full_like(0.0)
    }

    /// Ones with the shape and on the device of `self` (the seed of a backward pass).
    pub fn ones_like(&self) -> Tensor {
        self.full_like(1.0)
    }

    /// Draws from any distribution over f32 with an explicit, seeded RNG, one element after
    /// another in row-major order (`ndarray-rand`'s `random_using`), so the same seed gives the
    /// same bits.
    pub fn sample<D: Distribution<f32>>(shape: &[usize], dist: D, rng: &mut impl Rng) -> Tensor {
        Tensor::from_array(ArrayD::random_using(IxDyn(shape), dist, rng))
    }

    /// Standard normal draws, N(0, 1).
    pub fn randn(shape: &[usize], rng: &mut impl Rng) -> Tensor {
        Tensor::sample(shape, StandardNormal, rng)
    }

    /// Uniform draws on [0, 1).
    pub fn rand(shape: &[usize], rng: &mut impl Rng) -> Tensor {
        Tensor::uniform(shape, 0.0, 1.0, rng)
    }

    /// Uniform draws on [lo, hi). Panics unless lo < hi, both finite.
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor {
        assert!(
            lo < hi && lo.is_finite() && hi.is_finite(),
            "uniform: need finite lo < hi, got [{lo}, {hi})"
        );
        Tensor::sample(shape, Uniform::new(lo, hi).expect("lo < hi"), rng)
    }

    /// `start, start + step, …` up to but excluding `end`, as a 1-D tensor. As `torch.arange`,
    /// the length ⌈(end − start)/step⌉ and each value start + i·step are computed in `f64` and
    /// the values then rounded to `f32`. Panics, naming the arguments, on a step of 0 or of the
    /// wrong sign, on a bound or step that is not finite, and on a length that cannot be stored.
    pub fn arange(start: f32, end: f32, step: f32) -> Tensor {
        let (a, b, s) = (start as f64, end as f64, step as f64);
        assert!(
            a.is_finite() && b.is_finite() && s.is_finite() && s != 0.0,
            "arange: need a finite start and end and a finite, non-zero step, got \
             ({start}, {end}, {step})"
        );
        assert!(
            (b - a) * s >= 0.0,
            "arange: step {step} points away from {end} (start {start})"
        );
        let n = ((b - a) / s).ceil();
        assert!(
            n <= (isize::MAX as usize / 4) as f64,
            "arange: ({start}, {end}, {step}) would have {n} elements"
        );
        let n = n as usize;
        Tensor::from_vec((0..n).map(|i| (a + i as f64 * s) as f32).collect(), &[n])
    }

    /// `n` evenly spaced points from `start` to `end` inclusive, as a 1-D tensor. As
    /// `torch.linspace`, the first half counts up from `start` and the second half down from
    /// `end` in steps of (end − start)/(n − 1), so both ends are exact.
    pub fn linspace(start: f32, end: f32, n: usize) -> Tensor {
        let values = match n {
            0 => vec![],
            1 => vec![start],
            _ => {
                let step = (end - start) / (n - 1) as f32;
                (0..n)
                    .map(|i| {
                        if i < n / 2 {
                            start + step * i as f32
                        } else {
                            end - step * (n - 1 - i) as f32
                        }
                    })
                    .collect()
            }
        };
        Tensor::from_vec(values, &[n])
    }

    // ---------------------------------------------------------------- autograd flags

    /// This tensor as a leaf that gradients flow to (the data is shared, not copied). Use it for
    /// parameters and for inputs whose gradient you want, e.g. `x.detach().requires_grad_()` to
    /// take ∇ₓ of a network.
    pub fn requires_grad_(self) -> Tensor {
        Tensor::make(self.read().clone(), None, true)
    }

    /// A leaf sharing this tensor's data, cut from the graph: no gradient flows through it.
    pub fn detach(&self) -> Tensor {
        Tensor::make(self.read().clone(), None, false)
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// Whether this tensor was made directly (not computed by a recorded op).
    pub fn is_leaf(&self) -> bool {
        self.0.op.is_none()
    }

    /// This tensor's unique id.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }

    // ---------------------------------------------------------------- data access

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// The size of dimension `axis`; negative values count from the end.
    pub fn dim(&self, axis: isize) -> usize {
        self.0.shape[self.axis(axis)]
    }

    /// Resolves a possibly negative axis. Panics if out of range.
    pub(crate) fn axis(&self, axis: isize) -> usize {
        let n = self.ndim() as isize;
        let a = if axis < 0 { axis + n } else { axis };
        assert!(
            (0..n).contains(&a),
            "axis {axis} out of range for shape {:?}",
            self.shape()
        );
        a as usize
    }

    fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.0.data.read().expect("tensor lock poisoned")
    }

    /// The data as a CPU array (a cheap shared handle; copy-on-write). For a tensor on a Vulkan
    /// device this downloads the data (one counted copy, which waits for the device): correct
    /// everywhere, fast only on the CPU.
    pub fn storage(&self) -> Storage {
        match &*self.read() {
            Data::Cpu(s) => s.clone(),
            #[cfg(feature = "vulkan")]
            Data::Vulkan(d) => d.download().into_shared(),
        }
    }

    /// Whether the data is a CPU matrix stored column by column (the transpose of a row-major
    /// matrix, such as `w.t()`).
    pub(crate) fn is_column_major(&self) -> bool {
        match &*self.read() {
            Data::Cpu(s) => {
                let &[m, n] = s.shape() else { return false };
                m > 1 && n > 1 && s.strides() == [1, m as isize]
            }
            #[cfg(feature = "vulkan")]
            Data::Vulkan(_) => false,
        }
    }

    /// The device the data lives on.
    pub fn device(&self) -> Device {
        match &*self.read() {
            Data::Cpu(_) => Device::Cpu,
            #[cfg(feature = "vulkan")]
            Data::Vulkan(d) => Device::Vulkan(d.ctx.clone()),
        }
    }

    /// This tensor's data on `device`: a new leaf when the data moves — one copy, requiring a
    /// gradient if `self` does, with no gradient flowing back through the move — and a clone of
    /// `self` itself, graph and all, when it is on `device` already.
    // ANCHOR: to_device
    pub fn to(&self, device: &Device) -> Tensor {
        if self.device() == *device {
            return self.clone();
        }
        let data = match device {
            Device::Cpu => Data::Cpu(self.storage()),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(ctx) => vulkan::upload(ctx, &self.storage().into_owned()),
        };
        Tensor::make(data, None, self.requires_grad())
    }
    // ANCHOR_END: to_device

    /// Moves this tensor's data to `device` in place, keeping its identity: how a model's
    /// parameters, which layers and optimizers hold by handle, move to a device
    /// ([`crate::nn::ParamStore::to_device`]).
    pub fn move_to(&self, device: &Device) {
        if self.device() == *device {
            return;
        }
        let data = self.to(device).read().clone();
        *self.0.data.write().expect("tensor lock poisoned") = data;
    }

    /// A copy of the data as an owned array in standard (row-major) layout.
    pub fn to_array(&self) -> ArrayD<f32> {
        self.storage().as_standard_layout().into_owned()
    }

    /// The data as a row-major `Vec`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.storage().iter().copied().collect()
    }

    /// The value of a tensor with one element. Panics otherwise.
    pub fn item(&self) -> f32 {
        assert_eq!(
            self.numel(),
            1,
            "item: tensor of shape {:?} has {} elements",
            self.shape(),
            self.numel()
        );
        *self.storage().iter().next().expect("one element")
    }

    /// Replaces the data in place, keeping the tensor's identity (how optimizers update
    /// parameters). Panics if the shape changes. Tensors computed from the old data, views
    /// included, keep it (the storage is copy-on-write), but a recorded graph holds this tensor
    /// by its handle: a backward pass run afterwards reads the new data (there is no version
    /// check, as PyTorch has), so take gradients before updating.
    pub fn set_data(&self, data: impl Into<Storage>) {
        let data = data.into();
        assert_eq!(
            data.shape(),
            self.shape(),
            "set_data: shape {:?} into tensor of shape {:?}",
            data.shape(),
            self.shape()
        );
        let mut guard = self.0.data.write().expect("tensor lock poisoned");
        *guard = match &*guard {
            Data::Cpu(_) => Data::Cpu(data),
            // Stays on its device: one upload.
            #[cfg(feature = "vulkan")]
            Data::Vulkan(d) => vulkan::upload(&d.ctx, &data.into_owned()),
        };
    }

    /// Replaces the data in place with `src`'s, keeping this tensor's identity, as
    /// [`Tensor::set_data`] does, but from a tensor on the same device: nothing passes through the
    /// host. The two share the storage until either is written in place (copy-on-write on both
    /// devices). Panics if the shapes or the devices differ.
    pub fn set_data_from(&self, src: &Tensor) {
        assert_eq!(
            src.shape(),
            self.shape(),
            "set_data_from: shape {:?} into tensor of shape {:?}",
            src.shape(),
            self.shape()
        );
        assert!(
            src.device() == self.device(),
            "set_data_from: data on {:?} into a tensor on {:?}",
            src.device(),
            self.device()
        );
        let data = src.read().clone();
        *self.0.data.write().expect("tensor lock poisoned") = data;
    }

    /// Updates the data in place through `f` (copying first only if the storage is shared). On
    /// a Vulkan device the data makes a round trip through the host (a download and an upload).
    pub fn update_data(&self, f: impl FnOnce(&mut ndarray::ArrayViewMutD<f32>)) {
        let mut guard = self.0.data.write().expect("tensor lock poisoned");
        match &mut *guard {
            Data::Cpu(s) => f(&mut s.view_mut()),
            #[cfg(feature = "vulkan")]
            Data::Vulkan(d) => {
                let mut a = d.download();
                f(&mut a.view_mut());
                *d = vulkan::upload_data(&d.ctx, &a);
            }
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.op().map(|o| o.name()).unwrap_or("leaf");
        write!(
            f,
            "Tensor(shape={:?}, op={}, requires_grad={}",
            self.shape(),
            op,
            self.requires_grad()
        )?;
        if !self.device().is_cpu() {
            write!(f, ", device={}", self.device())?;
        }
        write!(f, ")")?;
        if self.numel() <= 16 {
            write!(f, " {:?}", self.to_vec())?;
        }
        Ok(())
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.storage())
    }
}
