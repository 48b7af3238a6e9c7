//! The device paths of the tensor ops: each op's public method checks first whether an input
//! lives on a Vulkan device and, if so, records the matching kernel of
//! [`crate::backend::vulkan`] here instead of running its CPU kernel. The op is recorded for
//! autograd exactly as on the CPU, and its VJP is made of tensor ops that again run on the
//! device, so gradients of any order stay device-resident.
//!
//! Kernels are queued on the context's shared recording ([`VulkanContext::record`]) and run when
//! a result is downloaded (or every few hundred ops): an op costs one dispatch and no host round
//! trip. Every device buffer is contiguous (row-major), so movement ops that are views on the CPU
//! (permute, narrow, broadcast) are strided copies here; reshape alone shares the buffer.
//!
//! Device faults (out of memory, a lost device) panic with the Vulkan error: tensor ops return
//! no `Result`, and such a fault is not something a caller can recover from mid-graph.

use super::{Data, Tensor, UnaryOp};
use crate::backend::vulkan::{
    self as vk, BinaryOp, DeviceBuffer, DeviceIndices, Recorder, ReduceOp, Strided, VulkanContext,
};
use ndarray::{ArrayD, IxDyn};
use std::sync::{Arc, Mutex, Weak};

/// A tensor's data on a Vulkan device: a buffer shared between the tensors that view it with
/// different shapes (reshape, detach), and the shape this tensor sees.
#[derive(Clone)]
pub(crate) struct DeviceData {
    pub(crate) ctx: Arc<VulkanContext>,
    pub(crate) buf: Arc<DeviceBuffer>,
    pub(crate) shape: Vec<usize>,
}

impl DeviceData {
    /// A handle to the buffer with this tensor's shape (no copy).
    pub(crate) fn buffer(&self) -> DeviceBuffer {
        self.buf.view(&self.shape)
    }

    /// Downloads the data (one counted device-to-host copy).
    pub(crate) fn download(&self) -> ArrayD<f32> {
        let v = self
            .ctx
            .download(&self.buffer())
            .unwrap_or_else(|e| panic!("downloading a tensor of shape {:?}: {e}", self.shape));
        ArrayD::from_shape_vec(IxDyn(&self.shape), v).expect("shape")
    }
}

/// Wraps a fresh kernel output as tensor data.
fn wrap(ctx: &Arc<VulkanContext>, buf: DeviceBuffer) -> Data {
    Data::Vulkan(owned(ctx, buf))
}

/// A fresh kernel output as device data of its own shape.
fn owned(ctx: &Arc<VulkanContext>, buf: DeviceBuffer) -> DeviceData {
    DeviceData {
        ctx: ctx.clone(),
        shape: buf.shape().to_vec(),
        buf: Arc::new(buf),
    }
}

/// Uploads an array to `ctx` (one counted host-to-device copy).
pub(crate) fn upload_data(ctx: &Arc<VulkanContext>, a: &ArrayD<f32>) -> DeviceData {
    let a = a.as_standard_layout();
    let buf = ctx
        .upload(a.as_slice().expect("standard layout"), a.shape())
        .unwrap_or_else(|e| panic!("uploading a tensor of shape {:?}: {e}", a.shape()));
    owned(ctx, buf)
}

/// [`upload_data`] as tensor data.
pub(crate) fn upload(ctx: &Arc<VulkanContext>, a: &ArrayD<f32>) -> Data {
    Data::Vulkan(upload_data(ctx, a))
}

/// Records with `f` on the shared recording, panicking with the op's name on a device fault.
fn record<T>(
    ctx: &VulkanContext,
    op: &str,
    f: impl FnOnce(&mut Recorder<'_>) -> crate::Result<T>,
) -> T {
    ctx.record(f)
        .unwrap_or_else(|e| panic!("{op} on the Vulkan device: {e}"))
}

/// The device of the inputs, if any input lives on one; `None` sends the op down its CPU path.
///
/// # Panics
/// If inputs live on two different devices, naming the op and both devices. A CPU input with one
/// element is a constant and may join a device op (see [`super::Device`]).
pub(crate) fn context(op: &str, xs: &[&Tensor]) -> Option<Arc<VulkanContext>> {
    let mut ctx: Option<Arc<VulkanContext>> = None;
    for x in xs {
        if let Data::Vulkan(d) = &*x.read() {
            match &ctx {
                None => ctx = Some(d.ctx.clone()),
                Some(c) if Arc::ptr_eq(c, &d.ctx) => {}
                Some(c) => panic!(
                    "{op}: inputs on different devices: vulkan({}) and another vulkan({})",
                    c.device_name(),
                    d.ctx.device_name()
                ),
            }
        }
    }
    let ctx = ctx?;
    for x in xs {
        if x.device().is_cpu() && x.numel() != 1 {
            panic!(
                "{op}: inputs on different devices: a tensor of shape {:?} on cpu and one on \
                 vulkan({}); move it with `.to(&device)` first",
                x.shape(),
                ctx.device_name()
            );
        }
    }
    Some(ctx)
}

/// The input as a device buffer: its own on the device, or a filled constant for a one-element
/// CPU tensor (see [`context`]).
fn operand(r: &mut Recorder<'_>, x: &Tensor) -> crate::Result<DeviceBuffer> {
    match &*x.read() {
        Data::Vulkan(d) => Ok(d.buffer()),
        Data::Cpu(s) => r.fill(x.shape(), *s.iter().next().expect("one element")),
    }
}

/// `x`'s device data: its own, or for a one-element CPU tensor, which [`context`] lets join a
/// device op as a constant, that constant filled on `ctx` (a fill command, no copy). Panics for a
/// larger CPU tensor, which [`context`] has refused already.
fn device_data(ctx: &Arc<VulkanContext>, x: &Tensor, op: &str) -> DeviceData {
    let one = match &*x.read() {
        Data::Vulkan(d) => return d.clone(),
        Data::Cpu(a) if a.len() == 1 => a.iter().next().copied().unwrap_or_default(),
        Data::Cpu(_) => panic!("{op}: expected a tensor on the Vulkan device"),
    };
    owned(ctx, record(ctx, op, |r| r.fill(x.shape(), one)))
}

// ---------------------------------------------------------------- elementwise

/// The Vulkan layer's code for one of the crate's unary ops.
fn unary_code(kind: UnaryOp) -> vk::UnaryOp {
    use UnaryOp::*;
    match kind {
        Neg => vk::UnaryOp::Neg,
        Exp => vk::UnaryOp::Exp,
        Log => vk::UnaryOp::Log,
        Sqrt => vk::UnaryOp::Sqrt,
        Square => vk::UnaryOp::Square,
        Powf(p) => vk::UnaryOp::Powf(p),
        Abs => vk::UnaryOp::Abs,
        Sigmoid => vk::UnaryOp::Sigmoid,
        Tanh => vk::UnaryOp::Tanh,
        Relu => vk::UnaryOp::Relu,
        Softplus => vk::UnaryOp::Softplus,
        Elu(a) => vk::UnaryOp::Elu(a),
        AddScalar(c) => vk::UnaryOp::AddScalar(c),
        MulScalar(c) => vk::UnaryOp::MulScalar(c),
        DivScalar(c) => vk::UnaryOp::DivScalar(c),
    }
}

/// `kind(x)` elementwise.
pub(crate) fn unary(kind: UnaryOp, x: &Tensor) -> Option<Data> {
    let ctx = context(kind.name(), &[x])?;
    let xb = device_data(&ctx, x, kind.name()).buffer();
    let out = record(&ctx, kind.name(), |r| r.unary(unary_code(kind), &xb));
    Some(wrap(&ctx, out))
}

/// `a (op) b` with broadcasting; also the comparisons, which give masks of 0.0 and 1.0.
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, name: &str) -> Option<Data> {
    let ctx = context(name, &[a, b])?;
    // The CPU path's shape check, with its message, before anything is recorded.
    super::binary::broadcast_shape(a.shape(), b.shape(), name);
    let out = record(&ctx, name, |r| {
        let (x, y) = (operand(r, a)?, operand(r, b)?);
        r.binary(op, &x, &y)
    });
    Some(wrap(&ctx, out))
}

/// `mask ≠ 0 ? a : b` with broadcasting.
pub(crate) fn select(mask: &Tensor, a: &Tensor, b: &Tensor) -> Option<Data> {
    let ctx = context("where", &[mask, a, b])?;
    // The shapes are checked here, so that a mismatch reads as on the CPU ("where: shapes ...").
    let ma = super::binary::broadcast_shape(mask.shape(), a.shape(), "where");
    super::binary::broadcast_shape(&ma, b.shape(), "where");
    let out = record(&ctx, "where", |r| {
        let (m, x, y) = (operand(r, mask)?, operand(r, a)?, operand(r, b)?);
        r.select(&m, &x, &y)
    });
    Some(wrap(&ctx, out))
}

/// The sign of each element, as `[x > 0] − [x < 0]`.
pub(crate) fn sign(x: &Tensor) -> Option<Data> {
    let ctx = context("sign", &[x])?;
    let xb = device_data(&ctx, x, "sign").buffer();
    let out = record(&ctx, "sign", |r| {
        let zero = r.fill(&[], 0.0)?;
        let pos = r.binary(BinaryOp::Gt, &xb, &zero)?;
        let neg = r.binary(BinaryOp::Lt, &xb, &zero)?;
        r.binary(BinaryOp::Sub, &pos, &neg)
    });
    Some(wrap(&ctx, out))
}

// ---------------------------------------------------------------- reductions

/// Sum or maximum over `axes` (sorted, unique), keeping them as size 1 when `keepdim`.
pub(crate) fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], keepdim: bool) -> Option<Data> {
    let name = if op == ReduceOp::Max { "max" } else { "sum" };
    let ctx = context(name, &[x])?;
    let xb = device_data(&ctx, x, name).buffer();
    let out = record(&ctx, name, |r| {
        if axes.is_empty() {
            r.copy(&xb)
        } else {
            r.reduce(op, &xb, axes, keepdim)
        }
    });
    Some(wrap(&ctx, out))
}

// ---------------------------------------------------------------- movement

/// The same buffer seen with a new shape (no copy: device buffers are always contiguous).
pub(crate) fn reshape(x: &Tensor, shape: &[usize]) -> Option<Data> {
    let ctx = context("reshape", &[x])?;
    let mut d = device_data(&ctx, x, "reshape");
    d.shape = shape.to_vec();
    Some(Data::Vulkan(d))
}

/// Copies `x` through a strided read into a new contiguous buffer of `shape`.
fn gather(x: &Tensor, name: &str, src: Strided, shape: &[usize]) -> Option<Data> {
    let ctx = context(name, &[x])?;
    let xb = device_data(&ctx, x, name).buffer();
    let out = record(&ctx, name, |r| {
        let out = r.output(shape)?;
        r.strided_copy(&xb, &src, &out, &Strided::contiguous(shape), shape)?;
        Ok(out)
    });
    Some(wrap(&ctx, out))
}

/// Axes reordered: output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(x: &Tensor, perm: &[usize]) -> Option<Data> {
    let st = vk::contiguous_strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let src = Strided {
        offset: 0,
        strides: perm.iter().map(|&p| st[p]).collect(),
    };
    gather(x, "permute", src, &shape)
}

/// Repeated along new leading axes and axes of size 1.
pub(crate) fn broadcast_to(x: &Tensor, shape: &[usize]) -> Option<Data> {
    let st = vk::contiguous_strides(x.shape());
    let lead = shape.len() - x.ndim();
    let strides = (0..shape.len())
        .map(|i| {
            if i < lead || (x.shape()[i - lead] == 1 && shape[i] != 1) {
                0
            } else {
                st[i - lead]
            }
        })
        .collect();
    gather(x, "broadcast_to", Strided { offset: 0, strides }, shape)
}

/// `len` entries of `axis` from `start`.
pub(crate) fn narrow(x: &Tensor, axis: usize, start: usize, len: usize) -> Option<Data> {
    let st = vk::contiguous_strides(x.shape());
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let src = Strided {
        offset: start * st[axis],
        strides: st,
    };
    gather(x, "narrow", src, &shape)
}

/// Zeros before and after along `axis`.
pub(crate) fn pad(x: &Tensor, axis: usize, before: usize, after: usize) -> Option<Data> {
    let ctx = context("pad", &[x])?;
    let xb = device_data(&ctx, x, "pad").buffer();
    let mut shape = x.shape().to_vec();
    shape[axis] += before + after;
    let out = record(&ctx, "pad", |r| {
        let out = r.zeros(&shape)?;
        let st = vk::contiguous_strides(&shape);
        let dst = Strided {
            offset: before * st[axis],
            strides: st,
        };
        r.strided_copy(
            &xb,
            &Strided::contiguous(xb.shape()),
            &out,
            &dst,
            xb.shape(),
        )?;
        Ok(out)
    });
    Some(wrap(&ctx, out))
}

/// Tensors joined along `axis` (shapes already checked to agree off the axis).
pub(crate) fn concat(xs: &[Tensor], axis: usize, shape: &[usize]) -> Option<Data> {
    let refs: Vec<&Tensor> = xs.iter().collect();
    let ctx = context("concat", &refs)?;
    let out = record(&ctx, "concat", |r| {
        let out = r.output(shape)?;
        let st = vk::contiguous_strides(shape);
        let mut start = 0;
        for x in xs {
            let xb = operand(r, x)?;
            let dst = Strided {
                offset: start * st[axis],
                strides: st.clone(),
            };
            r.strided_copy(&xb, &Strided::contiguous(x.shape()), &out, &dst, x.shape())?;
            start += x.shape()[axis];
        }
        Ok(out)
    });
    Some(wrap(&ctx, out))
}

/// Index lists recently uploaded, by content, so that the lookups of one batch's labels (one per
/// CondInstanceNorm++ layer, and the index_add of each VJP) upload them once.
#[allow(clippy::type_complexity)]
static INDEX_CACHE: Mutex<Vec<(Vec<usize>, Weak<VulkanContext>, Arc<DeviceIndices>)>> =
    Mutex::new(Vec::new());

fn device_indices(ctx: &Arc<VulkanContext>, indices: &[usize]) -> Arc<DeviceIndices> {
    let mut cache = INDEX_CACHE.lock().expect("index cache poisoned");
    cache.retain(|(_, c, _)| c.strong_count() > 0);
    if let Some(k) = cache.iter().position(|(i, c, _)| {
        i.as_slice() == indices && c.upgrade().is_some_and(|c| Arc::ptr_eq(&c, ctx))
    }) {
        let hit = cache.remove(k); // the most recently used go last
        let d = hit.2.clone();
        cache.push(hit);
        return d;
    }
    let words: Vec<u32> = indices
        .iter()
        .map(|&i| u32::try_from(i).expect("index fits u32"))
        .collect();
    let d = Arc::new(
        ctx.upload_indices(&words)
            .unwrap_or_else(|e| panic!("uploading indices: {e}")),
    );
    if cache.len() >= 16 {
        cache.remove(0);
    }
    cache.push((indices.to_vec(), Arc::downgrade(ctx), d.clone()));
    d
}

/// Entries `indices` of `axis` (indices already checked).
pub(crate) fn index_select(x: &Tensor, axis: usize, indices: &Arc<Vec<usize>>) -> Option<Data> {
    let ctx = context("index_select", &[x])?;
    let xb = device_data(&ctx, x, "index_select").buffer();
    let idx = device_indices(&ctx, indices);
    let out = record(&ctx, "index_select", |r| r.index_select(&xb, axis, &idx));
    Some(wrap(&ctx, out))
}

/// The adjoint of [`index_select`]: `size` entries along `axis` accumulating `src`'s entries.
pub(crate) fn index_add(
    src: &Tensor,
    size: usize,
    axis: usize,
    indices: &Arc<Vec<usize>>,
) -> Option<Data> {
    let ctx = context("index_add", &[src])?;
    let sb = device_data(&ctx, src, "index_add").buffer();
    let idx = device_indices(&ctx, indices);
    let out = record(&ctx, "index_add", |r| r.index_add(&sb, axis, &idx, size));
    Some(wrap(&ctx, out))
}

// ---------------------------------------------------------------- matmul

/// The matrix product of the last two axes, broadcasting the leading ones.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Option<Data> {
    let ctx = context("matmul", &[a, b])?;
    let (batch, m, k, n) = super::matmul::matmul_dims(a.shape(), b.shape());
    let batches: usize = batch.iter().product();
    // Each operand as a matrix (reused for every batch entry) or a [batches, rows, cols] stack,
    // broadcast first where its batch axes are not the full batch.
    let as_operand = |t: &Tensor, rows: usize, cols: usize| -> Tensor {
        let own: usize = t.shape()[..t.ndim() - 2].iter().product();
        if own == 1 {
            t.detach().reshape(&[rows, cols])
        } else {
            let full: Vec<usize> = batch.iter().copied().chain([rows, cols]).collect();
            t.detach()
                .broadcast_to(&full)
                .reshape(&[batches, rows, cols])
        }
    };
    let (a3, b3) = (as_operand(a, m, k), as_operand(b, k, n));
    let (ab, bb) = (
        device_data(&ctx, &a3, "matmul").buffer(),
        device_data(&ctx, &b3, "matmul").buffer(),
    );
    let out = record(&ctx, "matmul", |r| r.matmul(&ab, &bb, false, false));
    let shape: Vec<usize> = batch.iter().copied().chain([m, n]).collect();
    let out = out.reshape(&shape);
    Some(wrap(&ctx, out))
}

// ---------------------------------------------------------------- creation and updates

/// A tensor of `shape` filled with `v` on `ctx` (a fill command, no copy).
pub(crate) fn full(ctx: &Arc<VulkanContext>, shape: &[usize], v: f32) -> Data {
    let out = record(ctx, "full", |r| r.fill(shape, v));
    wrap(ctx, out)
}

/// Standard normals from Philox keyed by `seed` at `counter`, drawn on the device.
pub(crate) fn randn(ctx: &Arc<VulkanContext>, shape: &[usize], seed: u64, counter: u64) -> Data {
    let out = record(ctx, "randn", |r| r.randn(shape, seed, counter));
    wrap(ctx, out)
}

/// `x + (α/2)·score + √α·z` with `z = randn(seed, step)`: a copy of `x` updated by the fused
/// Langevin kernel.
pub(crate) fn langevin_step(
    x: &Tensor,
    score: &Tensor,
    alpha: f32,
    seed: u64,
    step: u64,
) -> Option<Data> {
    let ctx = context("langevin_step", &[x, score])?;
    let xb = device_data(&ctx, x, "langevin_step").buffer();
    let sb = device_data(&ctx, score, "langevin_step").buffer();
    let out = record(&ctx, "langevin_step", |r| {
        let out = r.copy(&xb)?;
        r.langevin_step(&out, &sb, alpha, seed, step)?;
        Ok(out)
    });
    Some(wrap(&ctx, out))
}

/// This tensor's buffer, for an in-place update: copied first (on the device) if another tensor
/// shares it, so that an update never shows through a detached view — the device's
/// copy-on-write, as `ArcArray` gives the CPU path.
pub(crate) fn unshared_buffer(t: &Tensor, op: &str) -> (Arc<VulkanContext>, DeviceBuffer) {
    let mut guard = t.0.data.write().expect("tensor lock poisoned");
    let Data::Vulkan(d) = &mut *guard else {
        panic!("{op}: expected a tensor on the Vulkan device")
    };
    if Arc::strong_count(&d.buf) > 1 {
        let src = d.buffer();
        let copy = record(&d.ctx, op, |r| r.copy(&src));
        d.buf = Arc::new(copy);
    }
    (d.ctx.clone(), d.buffer())
}

impl Tensor {
    /// One Adam step in place on the device (`shaders/adam.comp`): `self` is the parameter, `m`
    /// and `v` its moments (device tensors of its shape, zeros before the first step), `vmax` the
    /// running maximum of `v` with AMSGrad (`shaders/adam_amsgrad.comp`), `g` its gradient;
    /// `step` counts from 1. Records one dispatch, copies nothing to the host.
    pub(crate) fn adam_step_on_device(
        &self,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        vmax: Option<&Tensor>,
        cfg: vk::AdamConfig,
        step: u64,
    ) {
        context("adam", &[self, g, m, v]).expect("a parameter on the device");
        let (ctx, pb) = unshared_buffer(self, "adam");
        let (_, mb) = unshared_buffer(m, "adam");
        let (_, vb) = unshared_buffer(v, "adam");
        let gb = device_data(&ctx, g, "adam").buffer();
        match vmax {
            None => record(&ctx, "adam", |r| r.adam_step(&pb, &gb, &mb, &vb, cfg, step)),
            Some(vmax) => {
                context("adam", &[self, vmax]).expect("vmax on the parameter's device");
                let (_, xb) = unshared_buffer(vmax, "adam");
                record(&ctx, "adam", |r| {
                    r.adam_amsgrad_step(&pb, &gb, &mb, &vb, &xb, cfg, step)
                })
            }
        }
    }
}

// ---------------------------------------------------------------- convolution and pooling

/// The layer's parameters for a convolution configured as the Tensor API does (the same stride,
/// padding and dilation along both axes).
fn conv_params(cfg: super::Conv2dConfig) -> vk::Conv2dParams {
    vk::Conv2dParams {
        stride: (cfg.stride, cfg.stride),
        padding: (cfg.padding, cfg.padding),
        dilation: (cfg.dilation, cfg.dilation),
    }
}

/// 2-D convolution with an optional bias (`shaders/conv2d.comp`, an implicit GEMM).
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: super::Conv2dConfig,
) -> Option<Data> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let ctx = context("conv2d", &inputs)?;
    let (xb, wb) = (
        device_data(&ctx, x, "conv2d").buffer(),
        device_data(&ctx, w, "conv2d").buffer(),
    );
    let bb = b.map(|b| device_data(&ctx, b, "conv2d").buffer());
    let out = record(&ctx, "conv2d", |r| {
        r.conv2d(&xb, &wb, bb.as_ref(), conv_params(cfg))
    });
    Some(wrap(&ctx, out))
}

/// The input gradient of a convolution (`shaders/conv2d_input_grad.comp`).
pub(crate) fn conv2d_input_grad(
    gy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    cfg: super::Conv2dConfig,
) -> Option<Data> {
    let ctx = context("conv2d_input_grad", &[gy, w])?;
    let gb = device_data(&ctx, gy, "conv2d_input_grad").buffer();
    let wb = device_data(&ctx, w, "conv2d_input_grad").buffer();
    let out = record(&ctx, "conv2d_input_grad", |r| {
        r.conv2d_input_grad(&gb, &wb, input_hw, conv_params(cfg))
    });
    Some(wrap(&ctx, out))
}

/// The weight gradient of a convolution (`shaders/conv2d_weight_grad.comp`).
pub(crate) fn conv2d_weight_grad(
    x: &Tensor,
    gy: &Tensor,
    kernel_hw: (usize, usize),
    cfg: super::Conv2dConfig,
) -> Option<Data> {
    let ctx = context("conv2d_weight_grad", &[x, gy])?;
    let xb = device_data(&ctx, x, "conv2d_weight_grad").buffer();
    let gb = device_data(&ctx, gy, "conv2d_weight_grad").buffer();
    let out = record(&ctx, "conv2d_weight_grad", |r| {
        r.conv2d_weight_grad(&xb, &gb, kernel_hw, conv_params(cfg))
    });
    Some(wrap(&ctx, out))
}

/// Average pooling (`shaders/avg_pool2d.comp`).
pub(crate) fn avg_pool2d(x: &Tensor, cfg: super::Pool2dConfig) -> Option<Data> {
    let ctx = context("avg_pool2d", &[x])?;
    let xb = device_data(&ctx, x, "avg_pool2d").buffer();
    let (k, s, p) = (cfg.kernel, cfg.stride, cfg.padding);
    let out = record(&ctx, "avg_pool2d", |r| {
        r.avg_pool2d(&xb, (k, k), (s, s), (p, p))
    });
    Some(wrap(&ctx, out))
}

/// The adjoint of average pooling (`shaders/avg_pool2d_adjoint.comp`).
pub(crate) fn avg_pool2d_adjoint(
    g: &Tensor,
    cfg: super::Pool2dConfig,
    input_hw: (usize, usize),
) -> Option<Data> {
    let ctx = context("avg_pool2d_adjoint", &[g])?;
    let gb = device_data(&ctx, g, "avg_pool2d_adjoint").buffer();
    let (k, s, p) = (cfg.kernel, cfg.stride, cfg.padding);
    let out = record(&ctx, "avg_pool2d_adjoint", |r| {
        r.avg_pool2d_adjoint(&gb, input_hw, (k, k), (s, s), (p, p))
    });
    Some(wrap(&ctx, out))
}

/// Bilinear resizing with aligned corners (`shaders/resize_bilinear.comp`).
pub(crate) fn resize_bilinear(x: &Tensor, size: (usize, usize)) -> Option<Data> {
    let ctx = context("resize_bilinear", &[x])?;
    let xb = device_data(&ctx, x, "resize_bilinear").buffer();
    let out = record(&ctx, "resize_bilinear", |r| r.resize_bilinear(&xb, size));
    Some(wrap(&ctx, out))
}

/// The adjoint of bilinear resizing (`shaders/resize_bilinear_adjoint.comp`).
pub(crate) fn resize_bilinear_adjoint(g: &Tensor, input_hw: (usize, usize)) -> Option<Data> {
    let ctx = context("resize_bilinear_adjoint", &[g])?;
    let gb = device_data(&ctx, g, "resize_bilinear_adjoint").buffer();
    let out = record(&ctx, "resize_bilinear_adjoint", |r| {
        r.resize_bilinear_adjoint(&gb, input_hw)
    });
    Some(wrap(&ctx, out))
}

// ---------------------------------------------------------------- the pieces of CondInstanceNorm++

/// Instance normalisation `(x − μ)/√(σ² + eps)` per (n, c) plane, with two-pass moments and the
/// biased variance, as `InstanceNorm2d` (`shaders/instance_norm.comp`).
pub(crate) fn instance_norm(x: &Tensor, eps: f32) -> Option<Data> {
    let ctx = context("instance_norm", &[x])?;
    let xb = device_data(&ctx, x, "instance_norm").buffer();
    let out = record(&ctx, "instance_norm", |r| r.instance_norm(&xb, eps));
    Some(wrap(&ctx, out))
}

/// The first-order gradient of [`instance_norm`] at `x` with output `out`, for the output
/// gradient `g`, in one kernel; `None` unless the tensors are on a Vulkan device.
pub(crate) fn instance_norm_backward(
    x: &Tensor,
    out: &Tensor,
    g: &Tensor,
    eps: f32,
) -> Option<Data> {
    let ctx = context("instance_norm backward", &[x, out, g])?;
    let [xb, yb] = [x, out].map(|t| device_data(&ctx, t, "instance_norm backward").buffer());
    let dx = record(&ctx, "instance_norm backward", |r| {
        let gb = operand(r, g)?;
        r.instance_norm_backward(&xb, &yb, &gb, eps)
    });
    Some(wrap(&ctx, dx))
}

/// CondInstanceNorm++ of `x` with per-sample parameters `e` (N, 3C) in three kernels; returns
/// the output and the plane statistics (N, C, 2) the backward takes.
pub(crate) fn cond_instance_norm_plus(x: &Tensor, e: &Tensor, eps: f32) -> Option<(Data, Data)> {
    let ctx = context("cond_instance_norm_plus", &[x, e])?;
    let (y, stats) = record(&ctx, "cond_instance_norm_plus", |r| {
        let (xb, eb) = (operand(r, x)?, operand(r, e)?);
        r.cond_instance_norm_plus(&xb, &eb, eps)
    });
    Some((wrap(&ctx, y), wrap(&ctx, stats)))
}

/// The first-order gradient of [`cond_instance_norm_plus`] for the output gradient `g`, in three
/// kernels: (∂x, ∂e).
pub(crate) fn cond_instance_norm_plus_backward(
    x: &Tensor,
    e: &Tensor,
    stats: &Tensor,
    g: &Tensor,
    eps: f32,
) -> Option<(Data, Data)> {
    let ctx = context("cond_instance_norm_plus backward", &[x, e, stats, g])?;
    let (dx, de) = record(&ctx, "cond_instance_norm_plus backward", |r| {
        let [xb, eb, sb, gb] = [x, e, stats, g].map(|t| operand(r, t));
        r.cond_instance_norm_plus_backward(&xb?, &eb?, &sb?, &gb?, eps)
    });
    Some((wrap(&ctx, dx), wrap(&ctx, de)))
}

/// `x·a + b` with `a`, `b` of shape (N, C) scaling and shifting the planes of x (N, C, H, W).
pub(crate) fn channel_affine(x: &Tensor, a: &Tensor, b: Option<&Tensor>) -> Option<Data> {
    let mut inputs = vec![x, a];
    inputs.extend(b);
    let ctx = context("channel_affine", &inputs)?;
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let out = record(&ctx, "channel_affine", |r| {
        let xb = operand(r, x)?;
        let ab = operand(r, a)?.reshape(&[n, c, 1, 1]);
        let y = r.binary(BinaryOp::Mul, &xb, &ab)?;
        match b {
            Some(b) => {
                let bb = operand(r, b)?.reshape(&[n, c, 1, 1]);
                r.binary(BinaryOp::Add, &y, &bb)
            }
            None => Ok(y),
        }
    });
    Some(wrap(&ctx, out))
}

/// The per-plane inner product of two (N, C, H, W) tensors, of shape (N, C).
pub(crate) fn channel_dot(x: &Tensor, y: &Tensor) -> Option<Data> {
    let ctx = context("channel_dot", &[x, y])?;
    let out = record(&ctx, "channel_dot", |r| {
        let (xb, yb) = (operand(r, x)?, operand(r, y)?);
        let p = r.binary(BinaryOp::Mul, &xb, &yb)?;
        r.reduce(ReduceOp::Sum, &p, &[2, 3], false)
    });
    Some(wrap(&ctx, out))
}
