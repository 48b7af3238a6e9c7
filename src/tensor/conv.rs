//! 2-D convolution and the two ops its gradient needs, each the others' adjoint.
//!
//! For an input x of shape (N, C, H, W) and a weight w of shape (O, C, kh, kw), PyTorch's
//! `F.conv2d` (a cross-correlation) is
//!
//! ```text
//! y[n, o, i, j] = b[o] + Σ_{c, u, v} w[o, c, u, v] · x[n, c, i·s − p + u·d, j·s − p + v·d]
//! ```
//!
//! with stride s, zero padding p and dilation d. It is linear in x and in w, so its VJP is two
//! more bilinear maps of the same sum:
//!
//! * [`Tensor::conv2d_input_grad`] (the *transposed convolution*): ∂L/∂x from ∂L/∂y and w;
//! * [`Tensor::conv2d_weight_grad`]: ∂L/∂w from x and ∂L/∂y.
//!
//! All three are the one trilinear form ⟨y, conv(x, w)⟩ read with a different argument left out,
//! so the VJP of each is written with the other two (see [`conv2d_vjp`]): gradients of every
//! order stay inside this family.
//!
//! # Kernel
//! Per image, `im2col` copies the receptive fields into a matrix of shape (C·kh·kw, Ho·Wo), and
//! sgemm (matrixmultiply, single-threaded) multiplies the (O, C·kh·kw) weight by it, writing
//! straight into the image's (O, Ho·Wo) block of the NCHW output. The input gradient is
//! the transposed GEMM followed by `col2im`, the adjoint of `im2col`; the weight gradient
//! accumulates g·colᵀ over the images. A 1×1 convolution with stride 1 needs no `im2col`: the
//! image itself is the column matrix. `im2col` copies whole rows (`copy_from_slice`) when the
//! stride is 1.
//!
//! The batch is split into [`CONV_TASKS`] contiguous ranges of images, which rayon hands to
//! whichever thread is free; each rayon job keeps one column buffer for all the images it runs,
//! and the forward pass fills it a block of channels at a time ([`channel_blocks`]) so that it is
//! still in the core's L2 cache when sgemm reads it.
//!
//! On x86-64 CPUs with AVX-512, stride-1 convolutions whose output has the input's size (every
//! convolution of the NCSN RefineNet) take a faster road, [`conv_same`]: no column matrix at all,
//! the receptive fields read straight from the image with masked vector loads into a small panel,
//! and a register-blocked micro-kernel; the input gradient becomes a convolution of ∂L/∂y with the
//! flipped weight (no `col2im`), and the weight gradient of a 3 × 3 kernel sums along the pixels.
//! The im2col kernels above stay the road for everything else and for other CPUs.

#[cfg(target_arch = "x86_64")]
use super::conv_same;
use super::unary::PAR_CHUNK;
use super::{Op, Storage, Tensor, contiguous};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Stride, zero padding and dilation of a 2-D convolution, the same along both spatial axes (as
/// every convolution of the NCSN models).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on each side of both spatial axes.
    pub padding: usize,
    /// Spacing between the taps of the kernel (1: a dense kernel).
    pub dilation: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

impl Conv2dConfig {
    /// A configuration with the given stride, padding and dilation.
    pub fn new(stride: usize, padding: usize, dilation: usize) -> Self {
        assert!(
            stride >= 1 && dilation >= 1,
            "conv2d: stride and dilation must be ≥ 1"
        );
        Conv2dConfig {
            stride,
            padding,
            dilation,
        }
    }

    /// The output length along an axis of length `input` for a kernel of length `kernel`:
    /// ⌊(input + 2p − d(k − 1) − 1) / s⌋ + 1, PyTorch's formula. Panics if the kernel does not fit.
    pub fn out_size(&self, input: usize, kernel: usize) -> usize {
        let span = self.dilation * (kernel - 1) + 1;
        let padded = input + 2 * self.padding;
        assert!(
            padded >= span,
            "conv2d: kernel span {span} larger than padded input {padded}"
        );
        (padded - span) / self.stride + 1
    }
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    cfg: Conv2dConfig,
}

impl Geom {
    fn new(x: [usize; 4], w: [usize; 4], cfg: Conv2dConfig) -> Geom {
        let [n, c, h, wd] = x;
        let [o, c2, kh, kw] = w;
        assert_eq!(
            c, c2,
            "conv2d: input has {c} channels but the weight expects {c2} (input {x:?}, weight {w:?})"
        );
        assert!(
            o >= 1 && c >= 1 && kh >= 1 && kw >= 1,
            "conv2d: the weight {w:?} needs at least one output and one input channel and a \
             kernel of at least 1×1"
        );
        Geom {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            ho: cfg.out_size(h, kh),
            wo: cfg.out_size(wd, kw),
            cfg,
        }
    }
    /// Rows of the column matrix: C·kh·kw.
    fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Columns of the column matrix: Ho·Wo.
    fn hwo(&self) -> usize {
        self.ho * self.wo
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// A 1×1 kernel with stride 1 and no padding: the image is its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.cfg.stride == 1 && self.cfg.padding == 0
    }
}

fn dims4(t: &[usize], what: &str) -> [usize; 4] {
    <[usize; 4]>::try_from(t)
        .unwrap_or_else(|_| panic!("{what}: expected 4-D (N, C, H, W), got {t:?}"))
}

/// For a kernel tap at offset `off` (= u·d − p) and stride s: the range of output positions whose
/// input index o·s + off lies in [0, len).
#[inline]
fn valid_range(off: isize, s: usize, len: usize, out: usize) -> (usize, usize) {
    let s = s as isize;
    // o·s + off ≥ 0  ⇔  o ≥ ⌈−off / s⌉
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    // o·s + off ≤ len − 1  ⇔  o ≤ ⌊(len − 1 − off) / s⌋
    let hi = if (len as isize - 1 - off) < 0 {
        0
    } else {
        (len as isize - 1 - off) / s + 1
    };
    let lo = (lo as usize).min(out);
    let hi = (hi as usize).clamp(lo, out);
    (lo, hi)
}

// ANCHOR: im2col
/// Copies the receptive fields of one channel `xc` (H·W) into its kh·kw rows of the column
/// matrix, `colc` (kh·kw × Ho·Wo). Entries whose tap falls on the padding are left as they are:
/// `colc` comes from [`col_buffer`], zeroed when it was made, and these entries are the same for
/// every image and channel of a convolution, so they are still zero.
fn im2col_channel(xc: &[f32], colc: &mut [f32], g: &Geom) {
    let (s, p, d) = (g.cfg.stride, g.cfg.padding as isize, g.cfg.dilation);
    let hwo = g.hwo();
    for u in 0..g.kh {
        let off_h = (u * d) as isize - p;
        let (oh_lo, oh_hi) = valid_range(off_h, s, g.h, g.ho);
        for v in 0..g.kw {
            let off_w = (v * d) as isize - p;
            let (ow_lo, ow_hi) = valid_range(off_w, s, g.w, g.wo);
            let row = &mut colc[(u * g.kw + v) * hwo..][..hwo];
            if let Some((a, b, shift)) = shifted_span(g, (oh_lo, oh_hi), off_h, off_w) {
                // Stride 1, same width: the whole tap is one shifted copy of the channel, which
                // also writes the columns whose source wrapped round into a neighbouring row;
                // they belong to the padding, so they get their zeros back.
                row[a..b].copy_from_slice(&xc[(a as isize + shift) as usize..][..b - a]);
                zero_wrapped_columns(row, (oh_lo, oh_hi), (ow_lo, ow_hi), g.wo);
                continue;
            }
            if ow_hi <= ow_lo {
                continue;
            }
            for oh in oh_lo..oh_hi {
                let ih = (oh * s) as isize + off_h;
                let xrow = &xc[ih as usize * g.w..][..g.w];
                let seg = &mut row[oh * g.wo + ow_lo..oh * g.wo + ow_hi];
                let start = ((ow_lo * s) as isize + off_w) as usize;
                if s == 1 {
                    seg.copy_from_slice(&xrow[start..start + seg.len()]);
                } else {
                    for (k, dst) in seg.iter_mut().enumerate() {
                        *dst = xrow[start + k * s];
                    }
                }
            }
        }
    }
}

/// For stride 1 and an output as wide as the input (the "same" padding of every 3 × 3
/// convolution in RefineNet), column entry (oh, ow) of tap (off_h, off_w) reads input entry
/// (oh + off_h, ow + off_w): flat index `oh·W + ow + shift` with shift = off_h·W + off_w, the same
/// for the whole tap. Returns the span [a, b) of the tap's column row over output rows
/// `oh_lo..oh_hi` whose source stays inside the channel, and the shift; `None` for other
/// geometries. Entries of the span outside the valid columns read a neighbouring row's edge
/// (they wrapped round) and must be zeroed by the caller.
#[inline]
fn shifted_span(
    g: &Geom,
    (oh_lo, oh_hi): (usize, usize),
    off_h: isize,
    off_w: isize,
) -> Option<(usize, usize, isize)> {
    if g.cfg.stride != 1 || g.w != g.wo || oh_hi <= oh_lo {
        return None;
    }
    let shift = off_h * g.w as isize + off_w;
    let (lo, hi) = (oh_lo * g.wo, oh_hi * g.wo);
    let a = lo.max((-shift).max(0) as usize).min(hi);
    let b = hi.min((g.hw() as isize - shift).max(0) as usize).max(a);
    Some((a, b, shift))
}

/// Zeroes, in each output row `oh_lo..oh_hi` of a column row, the columns outside
/// `ow_lo..ow_hi` (those whose tap falls on the padding: a few at each end of the row).
#[inline]
fn zero_wrapped_columns(
    row: &mut [f32],
    (oh_lo, oh_hi): (usize, usize),
    (ow_lo, ow_hi): (usize, usize),
    wo: usize,
) {
    if ow_lo == 0 && ow_hi == wo {
        return;
    }
    // Column by column, striding over the rows: a short fill per row would be a memset call
    // for one to four floats.
    let rows = &mut row[oh_lo * wo..oh_hi * wo];
    for j in (0..ow_lo).chain(ow_hi..wo) {
        rows[j..].iter_mut().step_by(wo).for_each(|v| *v = 0.0);
    }
}

/// The adjoint of [`im2col_channel`]: adds each entry of the column rows onto the input position
/// it was copied from (overlapping windows accumulate), so `xc` must start at zero. `colc` is
/// scratch: entries that belong to the padding may be overwritten with zeros.
fn col2im_channel(colc: &mut [f32], xc: &mut [f32], g: &Geom) {
    let (s, p, d) = (g.cfg.stride, g.cfg.padding as isize, g.cfg.dilation);
    let hwo = g.hwo();
    for u in 0..g.kh {
        let off_h = (u * d) as isize - p;
        let (oh_lo, oh_hi) = valid_range(off_h, s, g.h, g.ho);
        for v in 0..g.kw {
            let off_w = (v * d) as isize - p;
            let (ow_lo, ow_hi) = valid_range(off_w, s, g.w, g.wo);
            if ow_hi <= ow_lo {
                continue;
            }
            let row = &mut colc[(u * g.kw + v) * hwo..][..hwo];
            if let Some((a, b, shift)) = shifted_span(g, (oh_lo, oh_hi), off_h, off_w) {
                // Stride 1, same width: zero the entries that belong to the padding, then add
                // the tap's span back in one pass (the zeros land harmlessly on row edges).
                zero_wrapped_columns(row, (oh_lo, oh_hi), (ow_lo, ow_hi), g.wo);
                let dst = &mut xc[(a as isize + shift) as usize..][..b - a];
                for (d, &v) in dst.iter_mut().zip(&row[a..b]) {
                    *d += v;
                }
                continue;
            }
            let row = &*row;
            for oh in oh_lo..oh_hi {
                let ih = (oh * s) as isize + off_h;
                let xrow = &mut xc[ih as usize * g.w..][..g.w];
                let seg = &row[oh * g.wo + ow_lo..oh * g.wo + ow_hi];
                let start = ((ow_lo * s) as isize + off_w) as usize;
                if s == 1 {
                    for (dst, &v) in xrow[start..start + seg.len()].iter_mut().zip(seg) {
                        *dst += v;
                    }
                } else {
                    for (k, &v) in seg.iter().enumerate() {
                        xrow[start + k * s] += v;
                    }
                }
            }
        }
    }
}
// ANCHOR_END: im2col

/// `im2col` of the channels `ximg` (C', H, W) of one image into `col` (C'·kh·kw, Ho·Wo), part of a
/// buffer from [`col_buffer`] that only `im2col` has written since (its padding entries are zero).
fn im2col(ximg: &[f32], col: &mut [f32], g: &Geom) {
    let rows = g.kh * g.kw * g.hwo();
    let hw = g.hw();
    for (c, colc) in col.chunks_exact_mut(rows).enumerate() {
        im2col_channel(&ximg[c * hw..][..hw], colc, g);
    }
}

/// `col2im` of the column rows `col` (C'·kh·kw, Ho·Wo) into the gradient of the matching channels
/// (C', H, W) of one image, which must start at zero (`col` is scratch).
fn col2im(col: &mut [f32], ximg: &mut [f32], g: &Geom) {
    let rows = g.kh * g.kw * g.hwo();
    let hw = g.hw();
    for (c, xc) in ximg.chunks_exact_mut(hw).enumerate() {
        col2im_channel(&mut col[c * rows..][..rows], xc, g);
    }
}

/// C (m×n, row-major, leading dimension `ldc`) ← A·B + β·C through matrixmultiply, with A and
/// B given by pointers and (row, column) strides.
///
/// # Safety
/// The pointers must address m×k, k×n and m×n elements under the given strides.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    (rsa, csa): (usize, usize),
    b: *const f32,
    (rsb, csb): (usize, usize),
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            rsa as isize,
            csa as isize,
            b,
            rsb as isize,
            csb as isize,
            beta,
            c,
            ldc as isize,
            1,
        )
    }
}

/// Convolutions split the batch into this many tasks (fewer when the batch is smaller), whatever
/// the number of threads. Several tasks per thread let rayon balance the load when one core runs
/// slower than the other (a shared machine), and a count that does not depend on the thread count
/// keeps the weight gradient's summation order, and so its bits, the same on every machine.
const CONV_TASKS: usize = 16;

/// Images per task: the batch in at most [`CONV_TASKS`] contiguous ranges.
fn images_per_task(n: usize) -> usize {
    n.div_ceil(CONV_TASKS).max(1)
}

/// At most this many floats of the column matrix are built at a time in the forward pass (512 KiB).
const COL_BLOCK: usize = 128 * 1024;

/// The input channels a block at a time, for the forward pass. The column matrix of a 3 × 3
/// convolution at 28 × 28 with 64 channels is 1.8 MB, about the size of a core's L2 cache: built
/// whole and then read back by sgemm's packing, it would make the round trip through L3. A block's
/// rows (`im2col` of its channels, then the sgemm that adds their share to the output) are still
/// in L2 when the packing reads them. (The gradient kernels keep the whole matrix: there the
/// other operand, ∂L/∂y, would be packed again for every block, which costs more than it saves.)
fn channel_blocks(g: &Geom) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
    let per_channel = g.kh * g.kw * g.hwo();
    let cb = (COL_BLOCK / per_channel.max(1)).clamp(1, g.c.max(1));
    let c = g.c;
    (0..c).step_by(cb).map(move |c0| c0..(c0 + cb).min(c))
}

/// A column buffer with room for `channels` input channels, for one rayon job (`for_each_init`
/// / `map_init` make one per job, and a job runs many tasks): empty for a 1 × 1 convolution,
/// which reads its input in place, and zeroed otherwise — the zeros of the padding, which
/// [`im2col`] never writes again.
fn col_buffer(g: &Geom, channels: usize) -> Vec<f32> {
    if g.is_pointwise() {
        Vec::new()
    } else {
        vec![0.0f32; channels * g.kh * g.kw * g.hwo()]
    }
}

/// The geometry for the implicit-im2col kernels of [`conv_same`] when they apply: stride 1, an
/// output of the input's size (so p = d·(k − 1)/2), and a CPU with AVX-512.
#[cfg(target_arch = "x86_64")]
fn same_geometry(g: &Geom) -> Option<conv_same::Same> {
    let same = g.cfg.stride == 1 && g.ho == g.h && g.wo == g.w;
    (same && super::avx512::available()).then_some(conv_same::Same {
        c: g.c,
        h: g.h,
        w: g.w,
        kh: g.kh,
        kw: g.kw,
        d: g.cfg.dilation,
        p: g.cfg.padding,
    })
}

/// y = conv2d(x, w) + b, on the fastest kernel that applies.
fn conv2d_kernel(x: &Storage, w: &Storage, b: Option<&Storage>, g: &Geom) -> ArrayD<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = same_geometry(g) {
        return conv2d_same(x, w, b, g, &s);
    }
    conv2d_im2col(x, w, b, g)
}

/// [`conv_same::conv_image`] for each of the `n` images of `input` (each `s.c` × H × W), with
/// the packed weight `w` and `bias` (empty or one per output channel): an `n` × M × H × W
/// buffer. The batch is split into [`images_per_task`] tasks; each rayon job keeps one panel.
#[cfg(target_arch = "x86_64")]
fn same_conv_batch(
    n: usize,
    w: &conv_same::PackedWeights,
    s: &conv_same::Same,
    input: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let hw = s.h * s.w;
    let (in_len, out_len) = (s.c * hw, w.rows() * hw);
    let per = images_per_task(n);
    let taps = conv_same::Taps::new(*s);
    // Every element is written: conv_image stores every pixel of every output channel.
    super::filled(n * out_len, |out| {
        out.par_chunks_mut(per * out_len).enumerate().for_each_init(
            || super::avx512::Aligned::zeros(s.panel_len()),
            |panel, (t, out_t)| {
                for (i, y) in out_t.chunks_exact_mut(out_len).enumerate() {
                    let x = &input[(t * per + i) * in_len..][..in_len];
                    // SAFETY: available() was checked (same_geometry) before packing; x holds
                    // C·H·W floats, y M·H·W, and w is M × C·kh·kw.
                    unsafe {
                        conv_same::conv_image(
                            w,
                            &taps,
                            x.as_ptr(),
                            y.as_mut_ptr() as *mut f32,
                            bias,
                            panel,
                        );
                    }
                }
            },
        );
    })
}

/// y = conv2d(x, w) + b for a stride-1 "same" convolution: the weight packed once, then each
/// image through [`conv_same::conv_image`]; images in parallel.
#[cfg(target_arch = "x86_64")]
fn conv2d_same(
    x: &Storage,
    w: &Storage,
    b: Option<&Storage>,
    g: &Geom,
    s: &conv_same::Same,
) -> ArrayD<f32> {
    let (xs, ws) = (contiguous(x), contiguous(w));
    let bias = b.map(|b| contiguous(b).into_owned()).unwrap_or_default();
    let ck = g.ck();
    let packed = conv_same::PackedWeights::from_rows(g.o, ck, |o, row| {
        row.copy_from_slice(&ws[o * ck..(o + 1) * ck])
    });
    let out = same_conv_batch(g.n, &packed, s, &xs, &bias);
    ArrayD::from_shape_vec(IxDyn(&[g.n, g.o, g.ho, g.wo]), out).expect("shape")
}

// ANCHOR: conv2d_kernel
/// y = conv2d(x, w) + b: per image and block of input channels, `im2col` and an sgemm that adds
/// the block's share into the NCHW output; images in parallel.
fn conv2d_im2col(x: &Storage, w: &Storage, b: Option<&Storage>, g: &Geom) -> ArrayD<f32> {
    let (xs, ws) = (contiguous(x), contiguous(w));
    let bs = b.map(contiguous);
    let (ck, hw, hwo, taps) = (g.ck(), g.hw(), g.hwo(), g.kh * g.kw);
    let per = images_per_task(g.n);
    // Every element is written: by the first sgemm with β = 0, or by the bias fill that it adds
    // to.
    let out = super::filled(g.n * g.o * hwo, |out| {
        out.par_chunks_mut(per * g.o * hwo)
            .enumerate()
            .for_each_init(
                || col_buffer(g, channel_blocks(g).map(|b| b.len()).max().unwrap_or(0)),
                |col, (t, out_t)| {
                    for (i, out_n) in out_t.chunks_exact_mut(g.o * hwo).enumerate() {
                        let ximg = &xs[(t * per + i) * g.c * hw..][..g.c * hw];
                        // The bias is the initial value of C (β = 1): no extra pass.
                        let mut beta = match &bs {
                            Some(bv) => {
                                for (row, &bo) in out_n.chunks_exact_mut(hwo).zip(bv.iter()) {
                                    row.iter_mut().for_each(|v| _ = v.write(bo));
                                }
                                1.0
                            }
                            None => 0.0,
                        };
                        for cs in channel_blocks(g) {
                            let rows = cs.len() * taps;
                            let xblk = &ximg[cs.start * hw..cs.end * hw];
                            let colp = if g.is_pointwise() {
                                xblk.as_ptr()
                            } else {
                                im2col(xblk, &mut col[..rows * hwo], g);
                                col.as_ptr()
                            };
                            // SAFETY: w[:, block] is O×rows inside the O×CK row-major weight,
                            // col is rows×HWo row-major, out_n is O×HWo (with β = 0 sgemm only
                            // writes C; otherwise it holds the bias or earlier blocks' sums).
                            unsafe {
                                sgemm(
                                    g.o,
                                    rows,
                                    hwo,
                                    ws.as_ptr().add(cs.start * taps),
                                    (ck, 1),
                                    colp,
                                    (hwo, 1),
                                    beta,
                                    out_n.as_mut_ptr() as *mut f32,
                                    hwo,
                                );
                            }
                            beta = 1.0;
                        }
                    }
                },
            );
    });
    ArrayD::from_shape_vec(IxDyn(&[g.n, g.o, g.ho, g.wo]), out).expect("shape")
}
// ANCHOR_END: conv2d_kernel

/// ∂L/∂x = conv2d_input_grad(∂L/∂y, w), on the fastest kernel that applies.
fn input_grad_kernel(gy: &Storage, w: &Storage, g: &Geom) -> ArrayD<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = same_geometry(g) {
        return input_grad_same(gy, w, g, &s);
    }
    input_grad_im2col(gy, w, g)
}

// ANCHOR: input_grad_same
/// ∂L/∂x for a stride-1 "same" convolution, as a "same" convolution of ∂L/∂y:
///
/// ```text
/// ∂L/∂x[c, i, j] = Σ_{o,u,v} w[o, c, u, v] · ∂L/∂y[o, i + p − u·d, j + p − v·d]
///                = Σ_{o,u,v} w'[c, o, u, v] · ∂L/∂y[o, i − p + u·d, j − p + v·d],
/// ```
///
/// with w'[c, o, u, v] = w[o, c, kh − 1 − u, kw − 1 − v] (substitute u → kh − 1 − u and use
/// 2p = d·(kh − 1)): the weight transposed and flipped, packed once, and no `col2im`.
#[cfg(target_arch = "x86_64")]
fn input_grad_same(gy: &Storage, w: &Storage, g: &Geom, s: &conv_same::Same) -> ArrayD<f32> {
    let (gs, ws) = (contiguous(gy), contiguous(w));
    let (ck, taps) = (g.ck(), g.kh * g.kw);
    // Flipping both axes maps tap t = u·kw + v to (kh − 1 − u)·kw + (kw − 1 − v) = taps − 1 − t.
    let flipped = conv_same::PackedWeights::from_rows(g.c, g.o * taps, |c, row| {
        for (o, taps_o) in row.chunks_exact_mut(taps).enumerate() {
            let w_oc = &ws[o * ck + c * taps..][..taps];
            for (t, v) in taps_o.iter_mut().enumerate() {
                *v = w_oc[taps - 1 - t];
            }
        }
    });
    // The same geometry, read from ∂L/∂y's O channels.
    let sg = conv_same::Same { c: g.o, ..*s };
    let dx = same_conv_batch(g.n, &flipped, &sg, &gs, &[]);
    ArrayD::from_shape_vec(IxDyn(&[g.n, g.c, g.h, g.w]), dx).expect("shape")
}
// ANCHOR_END: input_grad_same

/// ∂L/∂x = conv2d_input_grad(∂L/∂y, w): per image, col = wᵀ·gₙ then `col2im`; images in parallel.
fn input_grad_im2col(gy: &Storage, w: &Storage, g: &Geom) -> ArrayD<f32> {
    let (gs, ws) = (contiguous(gy), contiguous(w));
    let (ck, hwo, chw) = (g.ck(), g.hwo(), g.c * g.hw());
    let per = images_per_task(g.n);
    // Every element is written: by the sgemm with β = 0 (1 × 1), or zeroed and then accumulated
    // into by `col2im`.
    let dx = super::filled(g.n * chw, |dx| {
        dx.par_chunks_mut(per * chw).enumerate().for_each_init(
            || col_buffer(g, g.c),
            |col, (t, dx_t)| {
                for (i, dx_n) in dx_t.chunks_exact_mut(chw).enumerate() {
                    let g_n = &gs[(t * per + i) * g.o * hwo..][..g.o * hwo];
                    let dst = if g.is_pointwise() {
                        dx_n.as_mut_ptr() as *mut f32
                    } else {
                        col.as_mut_ptr()
                    };
                    // SAFETY: wᵀ is CK×O (w read with strides (1, CK)), g_n is O×HWo, dst
                    // is CK×HWo.
                    unsafe {
                        sgemm(
                            ck,
                            g.o,
                            hwo,
                            ws.as_ptr(),
                            (1, ck),
                            g_n.as_ptr(),
                            (hwo, 1),
                            0.0,
                            dst,
                            hwo,
                        );
                    }
                    if !g.is_pointwise() {
                        col2im(col, super::zeroed(dx_n), g);
                    }
                }
            },
        );
    });
    ArrayD::from_shape_vec(IxDyn(&[g.n, g.c, g.h, g.w]), dx).expect("shape")
}

/// ∂L/∂w = Σₙ gₙ · x̂ₙᵀ, on the fastest kernel that applies.
fn weight_grad_kernel(x: &Storage, gy: &Storage, g: &Geom) -> ArrayD<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = same_geometry(g).filter(|_| g.kh * g.kw == conv_same::WG_TAPS) {
        let (xs, gs) = (contiguous(x), contiguous(gy));
        let (hw, chw) = (g.hw(), g.c * g.hw());
        let group = conv_same::WG_PIXELS.div_ceil(hw).max(1);
        let taps = conv_same::Taps::new(s);
        let dw = sum_task_partials(g, g.o * g.ck(), group, |n, images, dw, scratch| {
            // SAFETY: available() checked AVX-512F and the kernel is 3 × 3; images n.. of x are
            // C·H·W each, of ∂L/∂y O·H·W, and dw is O × C·9.
            unsafe {
                conv_same::weight_grad_images(
                    &taps,
                    images,
                    xs[n * chw..][..images * chw].as_ptr(),
                    gs[n * g.o * hw..][..images * g.o * hw].as_ptr(),
                    g.o,
                    dw.as_mut_ptr(),
                    scratch,
                )
            }
        });
        return ArrayD::from_shape_vec(IxDyn(&[g.o, g.c, g.kh, g.kw]), dw).expect("shape");
    }
    weight_grad_im2col(x, gy, g)
}

/// Σ over the batch of per-image terms, added `group` images at a time by
/// `add_images(first, count, partial, scratch)` into a partial sum of `len` floats: one partial
/// sum per task (the tasks in parallel, each rayon job with its own scratch buffers), then the
/// partial sums added in task order — the same bits whichever thread ran which task.
#[cfg(target_arch = "x86_64")]
fn sum_task_partials(
    g: &Geom,
    len: usize,
    group: usize,
    add_images: impl Fn(usize, usize, &mut [f32], &mut (super::avx512::Aligned, super::avx512::Aligned))
    + Sync,
) -> Vec<f32> {
    let per = images_per_task(g.n);
    let tasks = g.n.div_ceil(per);
    let partials: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map_init(
            || {
                (
                    super::avx512::Aligned::zeros(0),
                    super::avx512::Aligned::zeros(0),
                )
            },
            |scratch, t| {
                let mut part = vec![0.0f32; len];
                let end = ((t + 1) * per).min(g.n);
                for n in (t * per..end).step_by(group) {
                    add_images(n, group.min(end - n), &mut part, scratch);
                }
                part
            },
        )
        .collect();
    add_in_order(partials, len)
}

/// The sum of equally long partial sums, added in their order (so the same bits whichever thread
/// made which), in parallel over slices of the result. No partial sums: zeros.
fn add_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| vec![0.0; len]);
    let rest: Vec<Vec<f32>> = partials.collect();
    total
        .par_chunks_mut(PAR_CHUNK)
        .enumerate()
        .for_each(|(i, d)| {
            for p in &rest {
                for (a, b) in d.iter_mut().zip(&p[i * PAR_CHUNK..]) {
                    *a += b;
                }
            }
        });
    total
}

/// ∂L/∂w = Σₙ gₙ · colₙᵀ: each task accumulates its images into its own partial sum, and the
/// partial sums are added at the end.
///
/// Each task accumulates the transpose, ∂L/∂wᵀ = Σₙ colₙ · gₙᵀ (CK × O), and transposes once at
/// the end: sgemm packs its operands, and packing the large col (CK × HWo) row by row is a
/// stream copy, whereas reading it as colᵀ would gather one column at a time. Only the small
/// gₙ (O × HWo) is read transposed.
fn weight_grad_im2col(x: &Storage, gy: &Storage, g: &Geom) -> ArrayD<f32> {
    let (xs, gs) = (contiguous(x), contiguous(gy));
    let (ck, hwo, chw) = (g.ck(), g.hwo(), g.c * g.hw());
    let per = images_per_task(g.n);
    let tasks = g.n.div_ceil(per);
    let partials: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map_init(
            || col_buffer(g, g.c),
            |col, t| {
                let mut dwt = vec![0.0f32; ck * g.o];
                for (i, n) in (t * per..((t + 1) * per).min(g.n)).enumerate() {
                    let ximg = &xs[n * chw..][..chw];
                    let colp = if g.is_pointwise() {
                        ximg.as_ptr()
                    } else {
                        im2col(ximg, col, g);
                        col.as_ptr()
                    };
                    let g_n = &gs[n * g.o * hwo..][..g.o * hwo];
                    let beta = if i == 0 { 0.0 } else { 1.0 };
                    // SAFETY: col is CK×HWo row-major, gₙᵀ is HWo×O (gₙ read with strides
                    // (1, HWo)), dwt is CK×O.
                    unsafe {
                        sgemm(
                            ck,
                            hwo,
                            g.o,
                            colp,
                            (hwo, 1),
                            g_n.as_ptr(),
                            (1, hwo),
                            beta,
                            dwt.as_mut_ptr(),
                            g.o,
                        );
                    }
                }
                dwt
            },
        )
        .collect();
    let dwt = add_in_order(partials, ck * g.o);
    let mut dw = vec![0.0f32; g.o * ck];
    super::for_each_tiled(g.o, ck, |o, k| dw[o * ck + k] = dwt[k * g.o + o]);
    ArrayD::from_shape_vec(IxDyn(&[g.o, g.c, g.kh, g.kw]), dw).expect("shape")
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as `F.conv2d`) of x (N, C, H, W) with a weight
    /// (O, C, kh, kw) and an optional bias (O): output (N, O, Ho, Wo) with
    /// Ho = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, cfg: Conv2dConfig) -> Tensor {
        let g = Geom::new(
            dims4(self.shape(), "conv2d input"),
            dims4(weight.shape(), "conv2d weight"),
            cfg,
        );
        if let Some(b) = bias {
            assert_eq!(
                b.shape(),
                &[g.o],
                "conv2d: bias of shape {:?} for {} output channels",
                b.shape(),
                g.o
            );
        }
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::conv2d(self, weight, bias, cfg) {
            let (x, w, b) = (self.clone(), weight.clone(), bias.cloned());
            return Tensor::from_op(d, Op::Conv2d { x, w, b, cfg });
        }
        let out = conv2d_kernel(
            &self.storage(),
            &weight.storage(),
            bias.map(|b| b.storage()).as_ref(),
            &g,
        );
        Tensor::from_op(
            out,
            Op::Conv2d {
                x: self.clone(),
                w: weight.clone(),
                b: bias.cloned(),
                cfg,
            },
        )
    }

    /// The transposed convolution that maps a gradient ∂L/∂y of shape (N, O, Ho, Wo) to ∂L/∂x of
    /// shape (N, C, H, W) for `y = x.conv2d(weight, …, cfg)`, with `input_hw` = (H, W) (several
    /// input sizes give the same Ho when the stride exceeds 1). `F.conv_transpose2d` with the same
    /// stride, padding and dilation.
    pub fn conv2d_input_grad(
        &self,
        weight: &Tensor,
        cfg: Conv2dConfig,
        input_hw: (usize, usize),
    ) -> Tensor {
        let [n, o, ho, wo] = dims4(self.shape(), "conv2d_input_grad gradient");
        let [o2, c, kh, kw] = dims4(weight.shape(), "conv2d_input_grad weight");
        assert_eq!(
            o, o2,
            "conv2d_input_grad: gradient has {o} channels, weight has {o2} output channels"
        );
        let g = Geom::new([n, c, input_hw.0, input_hw.1], [o, c, kh, kw], cfg);
        assert_eq!(
            (g.ho, g.wo),
            (ho, wo),
            "conv2d_input_grad: gradient {:?} does not fit input size {input_hw:?}",
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::conv2d_input_grad(self, weight, input_hw, cfg) {
            let (gy, w) = (self.clone(), weight.clone());
            return Tensor::from_op(d, Op::Conv2dInputGrad { gy, w, cfg });
        }
        let out = input_grad_kernel(&self.storage(), &weight.storage(), &g);
        Tensor::from_op(
            out,
            Op::Conv2dInputGrad {
                gy: self.clone(),
                w: weight.clone(),
                cfg,
            },
        )
    }

    /// The gradient of a convolution's weight: from the input x (N, C, H, W) (`self`) and ∂L/∂y
    /// (N, O, Ho, Wo), ∂L/∂w of shape (O, C, kh, kw) with `kernel_hw` = (kh, kw).
    pub fn conv2d_weight_grad(
        &self,
        gy: &Tensor,
        cfg: Conv2dConfig,
        kernel_hw: (usize, usize),
    ) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "conv2d_weight_grad input");
        let [n2, o, ho, wo] = dims4(gy.shape(), "conv2d_weight_grad gradient");
        assert_eq!(n, n2, "conv2d_weight_grad: batch sizes {n} and {n2} differ");
        let g = Geom::new([n, c, h, w], [o, c, kernel_hw.0, kernel_hw.1], cfg);
        assert_eq!(
            (g.ho, g.wo),
            (ho, wo),
            "conv2d_weight_grad: gradient {:?} does not fit input {:?}",
            gy.shape(),
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::conv2d_weight_grad(self, gy, kernel_hw, cfg) {
            let (x, gy) = (self.clone(), gy.clone());
            return Tensor::from_op(d, Op::Conv2dWeightGrad { x, gy, cfg });
        }
        let out = weight_grad_kernel(&self.storage(), &gy.storage(), &g);
        Tensor::from_op(
            out,
            Op::Conv2dWeightGrad {
                x: self.clone(),
                gy: gy.clone(),
                cfg,
            },
        )
    }
}

// ANCHOR: conv2d_vjp
/// The VJPs of the convolution family. With T(x, w, y) = ⟨y, conv2d(x, w)⟩:
///
/// * `conv2d(x, w)`: ∂x = input_grad(ḡ, w), ∂w = weight_grad(x, ḡ), ∂b = Σ_{n,i,j} ḡ;
/// * `input_grad(gy, w)` (the adjoint in x): ∂gy = conv2d(ḡ, w), ∂w = weight_grad(ḡ, gy);
/// * `weight_grad(x, gy)` (the adjoint in w): ∂x = input_grad(gy, ḡ), ∂gy = conv2d(x, ḡ).
pub(crate) fn conv2d_vjp(op: &Op, g: &Tensor, need: &[bool]) -> Vec<Option<Tensor>> {
    let want = |i: usize, f: &dyn Fn() -> Tensor| if need[i] { Some(f()) } else { None };
    match op {
        Op::Conv2d { x, w, b, cfg } => {
            let (kh, kw) = (w.shape()[2], w.shape()[3]);
            let (h, wd) = (x.shape()[2], x.shape()[3]);
            let mut v = vec![
                want(0, &|| g.conv2d_input_grad(w, *cfg, (h, wd))),
                want(1, &|| x.conv2d_weight_grad(g, *cfg, (kh, kw))),
            ];
            if b.is_some() {
                v.push(want(2, &|| g.sum(&[2, 3], false).sum(&[0], false)));
            }
            v
        }
        Op::Conv2dInputGrad { gy, w, cfg, .. } => {
            let (kh, kw) = (w.shape()[2], w.shape()[3]);
            vec![
                want(0, &|| g.conv2d(w, None, *cfg)),
                want(1, &|| g.conv2d_weight_grad(gy, *cfg, (kh, kw))),
            ]
        }
        Op::Conv2dWeightGrad { x, gy, cfg, .. } => {
            let (h, wd) = (x.shape()[2], x.shape()[3]);
            vec![
                want(0, &|| gy.conv2d_input_grad(g, *cfg, (h, wd))),
                want(1, &|| x.conv2d(g, None, *cfg)),
            ]
        }
        _ => unreachable!("conv2d_vjp called on {}", op.name()),
    }
}
// ANCHOR_END: conv2d_vjp

/// The AVX-512 kernels of [`conv_same`] against the portable im2col + sgemm kernels they replace
/// on such CPUs (elsewhere only the portable ones run, and the tests in `tests/conv_ops.rs` check
/// them against the definitions).
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Each output of either kernel sums its products in chains of at most ~170 terms (C·9 or
    /// O·9 taps, or a row of pixels and then the images of a task), so each differs from the
    /// exact sum by less than 170·2⁻²⁴·Σ|terms| ≈ 1e-5·Σ|terms|, and the two by twice that.
    /// Σ|terms| is the same kernel applied to |x| and |w|. A misplaced tap or a pixel dropped at
    /// an edge moves an output by a whole term, ≳ 1e-3·Σ|terms| at these sizes.
    fn assert_same(name: &str, fast: &ArrayD<f32>, portable: &ArrayD<f32>, abs: &ArrayD<f32>) {
        assert_eq!(fast.shape(), portable.shape(), "{name}: shape");
        for (i, ((a, b), s)) in fast.iter().zip(portable).zip(abs).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * s + 1e-6,
                "{name}: element {i}: {a} (AVX-512) vs {b} (im2col), Σ|terms| {s}"
            );
        }
    }

    #[test]
    fn avx512_kernels_match_the_im2col_kernels() {
        if !crate::tensor::avx512::available() {
            eprintln!("no AVX-512F on this CPU: only the im2col kernels run here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // (batch, in, out, H, W, kernel, padding, dilation): panels and chunks with partial
        // tails (143 = 4·32 + 15 pixels), channel counts that fill no block (19 = 2·8 + 3 rows of
        // the forward tile, 6·3 + 1 of the weight gradient's), images grouped for the weight
        // gradient (⌈768/143⌉ = 6 at a time: a group of 6 and one of 1 in a batch of 7), large
        // dilations whose taps fall off the image, and a 1 × 1 convolution.
        for &(n, c, o, h, w, k, p, d) in &[
            (7, 5, 19, 13, 11, 3, 1, 1),
            (7, 5, 19, 13, 11, 3, 2, 2),
            (3, 2, 9, 9, 17, 3, 3, 3),
            (2, 3, 4, 5, 6, 3, 4, 4),
            (40, 1, 8, 4, 4, 3, 1, 1),
            (5, 6, 17, 13, 11, 1, 0, 1),
        ] {
            let cfg = Conv2dConfig::new(1, p, d);
            let g = Geom::new([n, c, h, w], [o, c, k, k], cfg);
            let s = same_geometry(&g).expect("a stride-1 same convolution");
            let x = Tensor::randn(&[n, c, h, w], &mut rng).storage();
            let wt = Tensor::randn(&[o, c, k, k], &mut rng).storage();
            let b = Tensor::randn(&[o], &mut rng).storage();
            let gy = Tensor::randn(&[n, o, h, w], &mut rng).storage();
            let abs = |t: &Storage| t.mapv(f32::abs).into_shared();
            let (xa, wa, ba, ga) = (abs(&x), abs(&wt), abs(&b), abs(&gy));
            let name = format!("{n}×{c}×{h}×{w}, {o} outputs, {k}×{k}, p {p}, d {d}");
            assert_same(
                &format!("conv2d {name}"),
                &conv2d_same(&x, &wt, Some(&b), &g, &s),
                &conv2d_im2col(&x, &wt, Some(&b), &g),
                &conv2d_im2col(&xa, &wa, Some(&ba), &g),
            );
            assert_same(
                &format!("input grad {name}"),
                &input_grad_same(&gy, &wt, &g, &s),
                &input_grad_im2col(&gy, &wt, &g),
                &input_grad_im2col(&ga, &wa, &g),
            );
            if k * k == conv_same::WG_TAPS {
                assert_same(
                    &format!("weight grad {name}"),
                    &weight_grad_kernel(&x, &gy, &g),
                    &weight_grad_im2col(&x, &gy, &g),
                    &weight_grad_im2col(&xa, &ga, &g),
                );
            }
        }
    }
}
