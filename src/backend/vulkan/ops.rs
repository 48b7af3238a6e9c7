//! The kernels, as methods on [`Recorder`]: each checks shapes, allocates its output, and records
//! one dispatch. The matching shader is named in each method's docs.

use super::context::{DeviceBuffer, DeviceIndices, Recorder, groups_1d};
use super::shaders::Kernel;
use crate::Result;

/// The tile of C one GEMM workgroup computes (must match `BM`/`BN` in `shaders/gemm_tile.glsl`).
const GEMM_TILE: usize = 128;
/// How far along K one step of the GEMM tile loop goes (`BK` in `shaders/gemm_tile.glsl`).
const GEMM_BK: usize = 8;
/// Threads per workgroup of the one-dimensional kernels.
const LOCAL: usize = 256;
/// The rank the broadcast and reduction kernels index with (`RANK` in their shaders).
const RANK: usize = 6;

// ANCHOR: fast_div_magic
/// The multiplier and shift with which the convolution shaders divide by `d` (`fast_div` in
/// `shaders/conv_common.glsl`): with l = ⌈log₂ d⌉, m = ⌈2^(31+l) / d⌉ and s = l − 1, every
/// x < 2³¹ has x / d = ⌊x·m / 2^(31+l)⌋ = (high word of x·m) >> s. Why it is exact: write
/// m·d = 2^(31+l) + e with 0 ≤ e < d ≤ 2^l; then x·m / 2^(31+l) = x/d + x·e / (d·2^(31+l)), and
/// the second term is below x / (d·2³¹) < 1/d, too little to carry x/d, whose fraction is at
/// most (d − 1)/d, past the next integer. m < 2³² because d > 2^(l−1). d = 1 (and 0, never
/// divided by) give m = 0, which the shader reads as "x itself".
fn fast_div_magic(d: usize) -> [u32; 2] {
    if d <= 1 {
        return [0, 0];
    }
    let l = d.next_power_of_two().trailing_zeros(); // ⌈log₂ d⌉ for d ≥ 2
    let m = (1u128 << (31 + l)).div_ceil(d as u128);
    [u32_of(m as usize, "fast_div multiplier"), l - 1]
}
// ANCHOR_END: fast_div_magic

// ANCHOR: split_k
/// Workgroups a split-K GEMM aims for: enough to give every compute unit of a large GPU a few (an
/// H100 has 132 streaming multiprocessors).
const SPLIT_K_GROUPS: usize = 512;
/// The shortest stretch of K one split sums: below this the extra pass over the partial tiles
/// costs more than the parallelism gains.
const SPLIT_K_MIN_CHUNK: usize = 256;

/// How to split a GEMM with `tiles` output tiles and a sum of length `k`: `(splits, chunk)`, each
/// split summing `chunk` consecutive k (the last one what is left), with `chunk` a whole number of
/// the tile loop's `GEMM_BK`-deep steps.
/// `(1, k)` when the tiles alone give enough workgroups or `k` is short. The split depends only on
/// the shapes, so a given problem is summed in the same order on every device.
fn split_k(tiles: usize, k: usize) -> (usize, usize) {
    let wanted = SPLIT_K_GROUPS.div_ceil(tiles.max(1));
    let most = (k / SPLIT_K_MIN_CHUNK).max(1);
    let splits = wanted.min(most);
    if splits <= 1 {
        return (1, k);
    }
    let chunk = k.div_ceil(splits).next_multiple_of(GEMM_BK);
    (k.div_ceil(chunk), chunk)
}
// ANCHOR_END: split_k

fn u32_of(v: usize, what: &str) -> u32 {
    u32::try_from(v)
        .unwrap_or_else(|_| panic!("{what} = {v} does not fit the kernels' u32 indices"))
}

/// The workgroups of an implicit-GEMM convolution: one per 128 × 128 tile of its output, `cols`
/// pixels (N·H·W) by `rows` channels. A dispatch holds at most 65535 workgroups along each axis
/// (the least `maxComputeWorkGroupCount` Vulkan guarantees), so more than 65535 · 128 = 8,388,480
/// pixels in one call panic here, naming the op and what to do, rather than fail validation.
fn conv_groups(op: &str, cols: usize, rows: usize) -> [u32; 3] {
    let groups = [cols.div_ceil(GEMM_TILE), rows.div_ceil(GEMM_TILE)];
    assert!(
        groups[0] <= 65535 && groups[1] <= 65535,
        "{op}: {cols} output pixels (N·H·W) by {rows} channels need {groups:?} tiles of 128, \
         more than a dispatch's 65535 along one axis; split the batch"
    );
    [groups[0] as u32, groups[1] as u32, 1]
}

/// Panics, as the tensor ops do, when there are planes (`planes` > 0) but they have no pixels: a
/// plane's mean would be a mean of nothing, and the kernels would leave the outputs that do not
/// share the input's shape (the moments, ∂e) unwritten.
fn assert_pixels(planes: usize, h: usize, w: usize, op: &str) {
    assert!(
        planes == 0 || h * w > 0,
        "{op}: planes of {h}×{w} have no pixels to normalise"
    );
}

/// The bytes of `buffers` together: what a kernel moves that reads each of its inputs once and
/// writes each of its outputs once (the profile's [`KernelTime::bytes`](super::KernelTime::bytes)).
fn moved(buffers: &[&DeviceBuffer]) -> u64 {
    buffers.iter().map(|b| b.size_bytes()).sum()
}

/// Elementwise unary and tensor-scalar ops (`shaders/unary.comp`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// Natural logarithm; `-inf` at 0 and NaN below, as on the CPU (GLSL leaves both undefined).
    Log,
    /// Square root; NaN below 0, as on the CPU (GLSL leaves it undefined).
    Sqrt,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `max(x, 0)`
    Relu,
    /// `x` for `x > 0`, else `alpha (e^x - 1)` (PyTorch's `elu`; its default alpha is 1).
    Elu(f32),
    /// `log(1 + e^x)`, returning `x` above 20 as PyTorch's `softplus` does.
    Softplus,
    /// `|x|`
    Abs,
    /// `x²`
    Square,
    /// `1 / x`
    Recip,
    /// `sin x`
    Sin,
    /// `cos x`
    Cos,
    /// `x + c`
    AddScalar(f32),
    /// `x · c`
    MulScalar(f32),
    /// `x / c` (GLSL's division: within 2.5 ulp by the Vulkan spec, not correctly rounded)
    DivScalar(f32),
    /// `x` for `x > 0`, else `slope · x`.
    LeakyRelu(f32),
    /// `x^c` with C's `powf` rules for a negative base: `±|x|^c` for an integer `c` (negative
    /// for odd `c`), NaN otherwise; `x^0 = 1`.
    Powf(f32),
}

impl UnaryOp {
    /// The op code and scalar parameter the shader's `switch` expects.
    fn code(self) -> (u32, f32) {
        match self {
            UnaryOp::Neg => (0, 0.0),
            UnaryOp::Exp => (1, 0.0),
            UnaryOp::Log => (2, 0.0),
            UnaryOp::Sqrt => (3, 0.0),
            UnaryOp::Tanh => (4, 0.0),
            UnaryOp::Sigmoid => (5, 0.0),
            UnaryOp::Relu => (6, 0.0),
            UnaryOp::Elu(alpha) => (7, alpha),
            UnaryOp::Softplus => (8, 0.0),
            UnaryOp::Abs => (9, 0.0),
            UnaryOp::Square => (10, 0.0),
            UnaryOp::Recip => (11, 0.0),
            UnaryOp::Sin => (12, 0.0),
            UnaryOp::Cos => (13, 0.0),
            UnaryOp::AddScalar(c) => (14, c),
            UnaryOp::MulScalar(c) => (15, c),
            UnaryOp::LeakyRelu(slope) => (17, slope),
            UnaryOp::Powf(c) => (18, c),
            UnaryOp::DivScalar(c) => (19, c),
        }
    }
}

/// Elementwise binary ops with broadcasting (`shaders/binary.comp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`; a NaN operand gives NaN, as `torch.maximum`, where the kernels keep NaN
    /// ([`VulkanContext::preserves_nan`](super::VulkanContext::preserves_nan)); the plain variant
    /// may lose it.
    Max,
    /// `min(a, b)` (NaN as for `Max`).
    Min,
    /// `a^b` with C's `powf` rules for every `a` and `b`, as [`UnaryOp::Powf`] for each pair.
    Pow,
    /// `1.0` where `a > b`, else `0.0`.
    Gt,
    /// `1.0` where `a ≥ b`, else `0.0`.
    Ge,
    /// `1.0` where `a < b`, else `0.0`.
    Lt,
    /// `1.0` where `a ≤ b`, else `0.0`.
    Le,
    /// `1.0` where `a = b`, else `0.0`.
    Eq,
}

/// How a reduction combines elements (`shaders/reduce.comp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum (0 over no elements).
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum (−∞ over no elements).
    Max,
}

/// Stride, zero padding and dilation of a 2-d convolution, each as (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output pixels in the input.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
}

impl Default for Conv2dParams {
    /// Stride 1, no padding, dilation 1 (PyTorch's `Conv2d` defaults).
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
        }
    }
}

impl Conv2dParams {
    /// The output extent along one axis, as PyTorch computes it:
    /// `(in + 2 pad − dil (k − 1) − 1) / stride + 1`.
    ///
    /// # Panics
    /// If the dilated kernel does not fit in the padded input.
    pub fn out_size(input: usize, kernel: usize, stride: usize, pad: usize, dil: usize) -> usize {
        let span = dil * (kernel - 1) + 1;
        assert!(
            input + 2 * pad >= span && stride > 0,
            "conv2d: kernel span {span} larger than padded input {} (or stride 0)",
            input + 2 * pad
        );
        (input + 2 * pad - span) / stride + 1
    }

    /// The output (height, width) for an input (height, width) and kernel (height, width).
    pub fn out_hw(&self, input: (usize, usize), kernel: (usize, usize)) -> (usize, usize) {
        (
            Self::out_size(
                input.0,
                kernel.0,
                self.stride.0,
                self.padding.0,
                self.dilation.0,
            ),
            Self::out_size(
                input.1,
                kernel.1,
                self.stride.1,
                self.padding.1,
                self.dilation.1,
            ),
        )
    }

    /// The 29 push-constant words of the convolution shaders (`shaders/conv_common.glsl`);
    /// `k_chunk` is read by the weight gradient only (its split-K stretch).
    ///
    /// # Panics
    /// If an index the shaders divide (a pixel of the batch, a row of the unfolded input) could
    /// reach 2³¹, where their division without a divide instruction stops being exact.
    fn push(
        &self,
        x: [usize; 4],
        cout: usize,
        out: (usize, usize),
        k: (usize, usize),
        bias: bool,
        k_chunk: usize,
    ) -> [u32; 29] {
        let [n, cin, h, w] = x;
        let taps = k.0 * k.1;
        for (what, v) in [
            ("input pixels", n * h * w),
            ("output pixels", n * out.0 * out.1),
            ("input rows", cin * taps),
            ("output rows", cout * taps),
        ] {
            assert!(v < 1 << 31, "conv2d: {v} {what} reach 2^31");
        }
        // The divisors in the order of the shader's TAPS_M, TAPS_S, KW_M, ... W_S.
        let divisors = [taps, k.1, out.0 * out.1, out.1, h * w, w];
        let mut words = [0u32; 29];
        let sizes = [
            n,
            cin,
            h,
            w,
            cout,
            out.0,
            out.1,
            k.0,
            k.1,
            self.stride.0,
            self.stride.1,
            self.padding.0,
            self.padding.1,
            self.dilation.0,
            self.dilation.1,
            bias as usize,
            k_chunk,
        ]
        .map(|v| u32_of(v, "conv2d size"));
        words[..17].copy_from_slice(&sizes);
        for (pair, d) in words[17..].chunks_exact_mut(2).zip(divisors) {
            pair.copy_from_slice(&fast_div_magic(d));
        }
        words
    }
}

/// Adam's hyper-parameters (defaults as `torch.optim.Adam`: lr 1e-3, betas (0.9, 0.999),
/// eps 1e-8, no weight decay), in `f64` as [`crate::optim::AdamConfig`] for the same reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first-moment average.
    pub beta1: f64,
    /// Decay of the second-moment average.
    pub beta2: f64,
    /// Added to the denominator after the square root.
    pub eps: f64,
    /// L2 penalty, added to the gradient as `weight_decay · param` (not decoupled as in AdamW).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The NumPy broadcast of two shapes: align trailing axes; extents must be equal or one of them
/// 1. `None` if they do not broadcast.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// PyTorch's bilinear scale with `align_corners = true`: `(in − 1) / (out − 1)` in f32, 0 for a
/// one-pixel output.
fn bilinear_scale(input: usize, output: usize) -> f32 {
    if output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        0.0
    }
}

/// Row-major strides of `shape`, padded on the left to `RANK` axes, with stride 0 on every axis
/// where `shape` has extent 1 and `out` does not (the broadcast).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> [u32; RANK] {
    let mut strides = [0u32; RANK];
    let mut step = 1usize;
    for i in 0..shape.len() {
        let axis = RANK - 1 - i; // padded position
        let extent = shape[shape.len() - 1 - i];
        let out_extent = out[out.len() - 1 - i];
        strides[axis] = if extent == 1 && out_extent != 1 {
            0
        } else {
            u32_of(step, "stride")
        };
        step *= extent;
    }
    strides
}

/// The NCHW dims of a CondInstanceNorm++ input, checked against its parameters `e` (N, 3C).
fn cin_plus_dims(x: &DeviceBuffer, e: &DeviceBuffer) -> [usize; 4] {
    let [n, c, h, w] = nchw(x, "cond_instance_norm_plus");
    assert!(
        e.shape() == [n, 3 * c] && c >= 2,
        "cond_instance_norm_plus: parameters {:?} for input {:?} (want (N, 3C), C ≥ 2)",
        e.shape(),
        x.shape()
    );
    [n, c, h, w]
}

/// The four dimensions of an NCHW buffer; panics naming `op` otherwise.
fn nchw(x: &DeviceBuffer, op: &str) -> [usize; 4] {
    <[usize; 4]>::try_from(x.shape())
        .unwrap_or_else(|_| panic!("{op}: expected NCHW, got {:?}", x.shape()))
}

impl Recorder<'_> {
    // ANCHOR: matmul
    /// Batched matrix product `op(a) · op(b)`, with `op` a transpose when the flag is set
    /// (`shaders/gemm.comp`).
    ///
    /// Each operand is a matrix `[rows, cols]` or a batch `[batch, rows, cols]`; a matrix is
    /// reused for every entry of the other's batch. The result is `[m, n]` for two matrices and
    /// `[batch, m, n]` otherwise.
    ///
    /// # Panics
    /// If an operand is not rank 2 or 3, the inner extents differ, or the batches differ.
    pub fn matmul(
        &mut self,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<DeviceBuffer> {
        let split = |s: &[usize]| match *s {
            [r, c] => (None, r, c),
            [bt, r, c] => (Some(bt), r, c),
            _ => panic!(
                "matmul: operands must be rank 2 or 3, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        };
        let (ba, ra, ca) = split(a.shape());
        let (bb, rb, cb) = split(b.shape());
        let (m, k) = if trans_a { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if trans_b { (cb, rb) } else { (rb, cb) };
        assert_eq!(
            k,
            k2,
            "matmul: inner extents differ: {:?}{} · {:?}{}",
            a.shape(),
            if trans_a { "ᵀ" } else { "" },
            b.shape(),
            if trans_b { "ᵀ" } else { "" }
        );
        let batch = match (ba, bb) {
            (Some(x), Some(y)) => {
                assert_eq!(
                    x,
                    y,
                    "matmul: batches differ: {:?} · {:?}",
                    a.shape(),
                    b.shape()
                );
                Some(x)
            }
            (x, y) => x.or(y),
        };
        let out = match batch {
            Some(bt) => self.output(&[bt, m, n])?,
            None => self.output(&[m, n])?,
        };
        let batches = batch.unwrap_or(1);
        if out.is_empty() {
            return Ok(out);
        }
        let stride =
            |has_batch: Option<usize>, size: usize| if has_batch.is_some() { size } else { 0 };
        let push = [
            m,
            n,
            k,
            trans_a as usize,
            trans_b as usize,
            stride(ba, m * k),
            stride(bb, k * n),
            m * n,
        ]
        .map(|v| u32_of(v, "matmul size"));
        let groups = [
            u32_of(n.div_ceil(GEMM_TILE), "matmul groups"),
            u32_of(m.div_ceil(GEMM_TILE), "matmul groups"),
            u32_of(batches, "matmul batch"),
        ];
        assert!(
            groups[0] <= 65535 && groups[1] <= 65535 && groups[2] <= 65535,
            "matmul: too many tiles"
        );
        self.dispatch(
            Kernel::Gemm,
            &[a.bytes(), b.bytes(), out.bytes()],
            push,
            groups,
            moved(&[a, b, &out]),
        )?;
        Ok(out)
    }
    // ANCHOR_END: matmul

    /// `op(x)` elementwise (`shaders/unary.comp`).
    pub fn unary(&mut self, op: UnaryOp, x: &DeviceBuffer) -> Result<DeviceBuffer> {
        let out = self.output(x.shape())?;
        let n = x.len();
        if n == 0 {
            return Ok(out);
        }
        let (code, p) = op.code();
        let push = [u32_of(n, "unary length"), code, p.to_bits()];
        self.dispatch(
            Kernel::Unary,
            &[x.bytes(), out.bytes()],
            push,
            [groups_1d(n, LOCAL), 1, 1],
            moved(&[x, &out]),
        )?;
        Ok(out)
    }

    /// `a (op) b` elementwise with NumPy broadcasting (`shaders/binary.comp`); the result has the
    /// broadcast shape.
    ///
    /// # Panics
    /// If the shapes do not broadcast or have rank above 6.
    pub fn binary(
        &mut self,
        op: BinaryOp,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
    ) -> Result<DeviceBuffer> {
        let shape = broadcast_shape(a.shape(), b.shape()).unwrap_or_else(|| {
            panic!(
                "{op:?}: shapes {:?} and {:?} do not broadcast",
                a.shape(),
                b.shape()
            )
        });
        assert!(
            shape.len() <= RANK,
            "{op:?}: rank {} above {RANK}",
            shape.len()
        );
        let out = self.output(&shape)?;
        let n = out.len();
        if n == 0 {
            return Ok(out);
        }
        let mut padded = [1u32; RANK];
        for (i, &e) in shape.iter().enumerate() {
            padded[RANK - shape.len() + i] = u32_of(e, "extent");
        }
        let mut push = [0u32; 2 + 3 * RANK];
        push[0] = u32_of(n, "binary length");
        push[1] = op as u32;
        push[2..2 + RANK].copy_from_slice(&padded);
        push[2 + RANK..2 + 2 * RANK].copy_from_slice(&broadcast_strides(a.shape(), &shape));
        push[2 + 2 * RANK..].copy_from_slice(&broadcast_strides(b.shape(), &shape));
        self.dispatch(
            Kernel::Binary,
            &[a.bytes(), b.bytes(), out.bytes()],
            push,
            [groups_1d(n, LOCAL), 1, 1],
            moved(&[a, b, &out]),
        )?;
        Ok(out)
    }

    /// Reduces `x` over `axes` (`shaders/reduce.comp`). With `keepdim` the reduced axes stay with
    /// extent 1, as in PyTorch; otherwise they are removed.
    ///
    /// # Panics
    /// If an axis is out of range or repeated, or `axes` is empty.
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: &DeviceBuffer,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<DeviceBuffer> {
        let shape = x.shape();
        assert!(
            !axes.is_empty(),
            "reduce: no axes given for shape {shape:?}"
        );
        let mut reduced = vec![false; shape.len()];
        for &ax in axes {
            assert!(
                ax < shape.len(),
                "reduce: axis {ax} out of range for shape {shape:?}"
            );
            assert!(!reduced[ax], "reduce: axis {ax} repeated in {axes:?}");
            reduced[ax] = true;
        }
        let out_shape: Vec<usize> = (0..shape.len())
            .filter_map(|d| match (reduced[d], keepdim) {
                (false, _) => Some(shape[d]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let out = self.output(&out_shape)?;
        let n_out = out.len();
        if n_out == 0 {
            return Ok(out);
        }
        // Split axes into kept and reduced runs, merging neighbours of the same kind (a run of
        // adjacent row-major axes is one axis with the innermost stride) and skipping extent 1.
        let mut kept: Vec<(usize, usize)> = Vec::new();
        let mut red: Vec<(usize, usize)> = Vec::new();
        let mut stride = 1usize;
        let mut last_kind = None;
        for d in (0..shape.len()).rev() {
            let e = shape[d];
            if e != 1 {
                let list = if reduced[d] { &mut red } else { &mut kept };
                match list.last_mut() {
                    Some(run) if last_kind == Some(reduced[d]) => run.0 *= e,
                    _ => list.push((e, stride)),
                }
                last_kind = Some(reduced[d]);
            }
            stride *= e;
        }
        assert!(
            kept.len() <= RANK && red.len() <= RANK,
            "reduce: shape {shape:?} over {axes:?} needs more than {RANK} runs of axes"
        );
        let n_red: usize = red.iter().map(|r| r.0).product();
        // Runs were collected innermost first; the shader wants outermost first, padded in front.
        let pack = |runs: &[(usize, usize)]| {
            let mut ext = [1u32; RANK];
            let mut st = [0u32; RANK];
            for (i, &(e, s)) in runs.iter().enumerate() {
                ext[RANK - 1 - i] = u32_of(e, "extent");
                st[RANK - 1 - i] = u32_of(s, "stride");
            }
            (ext, st)
        };
        let (ke, ks) = pack(&kept);
        let (re, rs) = pack(&red);
        let mut push = [0u32; 3 + 4 * RANK];
        push[0] = u32_of(n_out, "reduce outputs");
        push[1] = u32_of(n_red, "reduce length");
        push[2] = op as u32;
        for (i, arr) in [ke, ks, re, rs].iter().enumerate() {
            push[3 + i * RANK..3 + (i + 1) * RANK].copy_from_slice(arr);
        }
        self.dispatch(
            Kernel::Reduce,
            &[x.bytes(), out.bytes()],
            push,
            [groups_1d(n_out, 1), 1, 1],
            moved(&[x, &out]),
        )?;
        Ok(out)
    }

    /// Sums over the last axis (which is removed).
    pub fn sum_last_axis(&mut self, x: &DeviceBuffer) -> Result<DeviceBuffer> {
        let rank = x.shape().len();
        assert!(rank > 0, "sum_last_axis: scalar input");
        self.reduce(ReduceOp::Sum, x, &[rank - 1], false)
    }

    /// Per-(n, c) mean and biased variance over (h, w) of an NCHW tensor, as InstanceNorm2d uses
    /// them (`shaders/instance_norm.comp`, mode 0). Returns `[n, c, 2]`: the mean, then the
    /// variance, of each plane.
    ///
    /// # Panics
    /// If `x` is not rank 4, or has planes without pixels.
    pub fn instance_norm_moments(&mut self, x: &DeviceBuffer) -> Result<DeviceBuffer> {
        let [n, c, _, _] = nchw(x, "instance_norm_moments");
        let out = self.output(&[n, c, 2])?;
        self.instance_norm_kernel(0, x, x, x, &out, 0.0)?;
        Ok(out)
    }

    /// Instance normalisation without affine parameters, `nn.InstanceNorm2d(affine=False)`:
    /// each (n, c) plane of `x` becomes `(x − μ)/√(σ² + eps)` with its own mean and biased
    /// variance (`shaders/instance_norm.comp`, mode 1: one dispatch).
    ///
    /// # Panics
    /// If `x` is not rank 4, or has planes without pixels.
    pub fn instance_norm(&mut self, x: &DeviceBuffer, eps: f32) -> Result<DeviceBuffer> {
        nchw(x, "instance_norm");
        let out = self.output(x.shape())?;
        self.instance_norm_kernel(1, x, x, x, &out, eps)?;
        Ok(out)
    }

    /// The first-order gradient of [`instance_norm`](Self::instance_norm) at `x`, whose output
    /// was `y`, for the output gradient `g`: per plane, `r·(g − mean(g) − y·mean(g·y))` with
    /// `r = 1/√(σ² + eps)` recomputed from `x` (`shaders/instance_norm.comp`, mode 2: one
    /// dispatch).
    ///
    /// # Panics
    /// If `x` is not rank 4, has planes without pixels, or the three shapes differ.
    pub fn instance_norm_backward(
        &mut self,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        g: &DeviceBuffer,
        eps: f32,
    ) -> Result<DeviceBuffer> {
        nchw(x, "instance_norm_backward");
        assert!(
            x.shape() == y.shape() && x.shape() == g.shape(),
            "instance_norm_backward: shapes {:?}, {:?} and {:?} differ",
            x.shape(),
            y.shape(),
            g.shape()
        );
        let out = self.output(x.shape())?;
        self.instance_norm_kernel(2, x, y, g, &out, eps)?;
        Ok(out)
    }

    /// CondInstanceNorm++ of `x` (N, C, H, W) with each sample's parameters `e` (N, 3C) =
    /// [γ | α | β] (`shaders/cin_plus.comp`, see `Tensor::cond_instance_norm_plus`): the plane
    /// statistics, four numbers per plane, one pass over x — three dispatches. Returns the output
    /// and the statistics `[n, c, 2]` (mean, biased variance), which the backward takes.
    ///
    /// # Panics
    /// If `x` is not rank 4, `e` is not (N, 3C), C < 2, or the planes have no pixels.
    pub fn cond_instance_norm_plus(
        &mut self,
        x: &DeviceBuffer,
        e: &DeviceBuffer,
        eps: f32,
    ) -> Result<(DeviceBuffer, DeviceBuffer)> {
        let [n, c, _, _] = cin_plus_dims(x, e);
        let stats = self.instance_norm_moments(x)?;
        let coef = self.output(&[n, c, 4])?;
        self.cin_plus_kernel(0, [x, x, &stats, e, &stats, &coef, &coef], eps)?;
        let y = self.output(x.shape())?;
        self.cin_plus_kernel(1, [x, x, &stats, e, &coef, &y, &y], eps)?;
        Ok((y, stats))
    }

    /// The first-order gradient of [`cond_instance_norm_plus`](Self::cond_instance_norm_plus)
    /// for the output gradient `g`, from the forward's statistics: the per-plane sums of `g`
    /// and `g·x̂`, the numbers per plane with ∂e, one pass for ∂x — three dispatches. Returns
    /// (∂x, ∂e).
    ///
    /// # Panics
    /// On shapes that do not match as in the forward, or planes without pixels.
    pub fn cond_instance_norm_plus_backward(
        &mut self,
        x: &DeviceBuffer,
        e: &DeviceBuffer,
        stats: &DeviceBuffer,
        g: &DeviceBuffer,
        eps: f32,
    ) -> Result<(DeviceBuffer, DeviceBuffer)> {
        let [n, c, _, _] = cin_plus_dims(x, e);
        assert!(
            g.shape() == x.shape() && stats.shape() == [n, c, 2],
            "cond_instance_norm_plus backward: gradient {:?} and statistics {:?} for input {:?}",
            g.shape(),
            stats.shape(),
            x.shape()
        );
        let sums = self.output(&[n, c, 2])?;
        self.cin_plus_kernel(2, [x, g, stats, e, stats, &sums, &sums], eps)?;
        let (coef, de) = (self.output(&[n, c, 4])?, self.output(e.shape())?);
        self.cin_plus_kernel(3, [x, g, stats, e, &sums, &coef, &de], eps)?;
        let dx = self.output(x.shape())?;
        self.cin_plus_kernel(4, [x, g, stats, e, &coef, &dx, &dx], eps)?;
        Ok((dx, de))
    }

    /// One dispatch of `shaders/cin_plus.comp` in `mode`, with its seven bindings (x, g, stats,
    /// e, the coefficients or sums it reads, the output, ∂e) and a grid for the mode: a workgroup
    /// per sample (0, 3), per plane (2), or per 256 pixels (1, 4).
    fn cin_plus_kernel(&mut self, mode: u32, b: [&DeviceBuffer; 7], eps: f32) -> Result<()> {
        let [n, c, h, w] = nchw(b[0], "cond_instance_norm_plus");
        assert_pixels(n * c, h, w, "cond_instance_norm_plus");
        if u32_of(n * c * h * w, "element count") == 0 {
            return Ok(());
        }
        let groups = match mode {
            0 | 3 => groups_1d(n, 1),
            2 => groups_1d(n * c, 1),
            _ => groups_1d(n * c * h * w, 256),
        };
        let push = [
            mode,
            u32_of(n, "batch"),
            u32_of(c, "channels"),
            u32_of(h * w, "plane size"),
            eps.to_bits(),
        ];
        // The bindings each mode reads or writes (see the shader's header); the rest are spares.
        let used: &[usize] = match mode {
            0 => &[2, 3, 5],
            1 => &[0, 4, 5],
            2 => &[0, 1, 2, 5],
            3 => &[2, 3, 4, 5, 6],
            _ => &[0, 1, 4, 5],
        };
        let bytes = used.iter().map(|&i| b[i].size_bytes()).sum();
        self.dispatch(
            Kernel::CinPlus,
            &b.map(|d| d.bytes()),
            push,
            [groups, 1, 1],
            bytes,
        )
    }

    fn instance_norm_kernel(
        &mut self,
        mode: u32,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        g: &DeviceBuffer,
        out: &DeviceBuffer,
        eps: f32,
    ) -> Result<()> {
        let [n, c, h, w] = nchw(x, "instance_norm");
        let rows = n * c;
        assert_pixels(rows, h, w, "instance_norm");
        if rows == 0 {
            return Ok(());
        }
        let push = [
            mode,
            u32_of(rows, "rows"),
            u32_of(h * w, "plane size"),
            eps.to_bits(),
        ];
        self.dispatch(
            Kernel::InstanceNorm,
            &[x.bytes(), y.bytes(), g.bytes(), out.bytes()],
            push,
            [groups_1d(rows, 1), 1, 1],
            // Modes 0 and 1 bind x in the places of y and g, and read only x.
            match mode {
                2 => moved(&[x, y, g, out]),
                _ => moved(&[x, out]),
            },
        )
    }

    /// 2-d convolution, NCHW: `x` `[n, cin, h, w]`, `weight` `[cout, cin, kh, kw]`, optional
    /// `bias` `[cout]`; returns `[n, cout, ho, wo]` (`shaders/conv2d.comp`, implicit GEMM).
    ///
    /// # Panics
    /// On mismatched shapes.
    pub fn conv2d(
        &mut self,
        x: &DeviceBuffer,
        weight: &DeviceBuffer,
        bias: Option<&DeviceBuffer>,
        p: Conv2dParams,
    ) -> Result<DeviceBuffer> {
        let (&[n, cin, h, w], &[cout, cin2, kh, kw]) = (x.shape(), weight.shape()) else {
            panic!(
                "conv2d: expected x NCHW and weight OIHW, got {:?} and {:?}",
                x.shape(),
                weight.shape()
            )
        };
        assert_eq!(
            cin,
            cin2,
            "conv2d: x {:?} and weight {:?} disagree on channels",
            x.shape(),
            weight.shape()
        );
        if let Some(b) = bias {
            assert_eq!(
                b.shape(),
                [cout],
                "conv2d: bias {:?} for weight {:?}",
                b.shape(),
                weight.shape()
            );
        }
        let (ho, wo) = p.out_hw((h, w), (kh, kw));
        let out = self.output(&[n, cout, ho, wo])?;
        if out.is_empty() {
            return Ok(out);
        }
        let push = p.push([n, cin, h, w], cout, (ho, wo), (kh, kw), bias.is_some(), 0);
        let bias_buf = bias.unwrap_or(weight).bytes(); // bound but unread without a bias
        let groups = conv_groups("conv2d", n * ho * wo, cout);
        self.dispatch(
            Kernel::Conv2d,
            &[x.bytes(), weight.bytes(), bias_buf, out.bytes()],
            push,
            groups,
            moved(&[x, weight, &out]) + bias.map_or(0, DeviceBuffer::size_bytes),
        )?;
        Ok(out)
    }

    /// Gradient of [`conv2d`](Self::conv2d) with respect to its input: from `dy`
    /// `[n, cout, ho, wo]` and `weight` `[cout, cin, kh, kw]`, returns `[n, cin, h, w]`, where
    /// `input_hw = (h, w)` is the forward input's size (the output size does not determine it when
    /// the stride is above 1). `shaders/conv2d_input_grad.comp`.
    ///
    /// # Panics
    /// On mismatched shapes.
    pub fn conv2d_input_grad(
        &mut self,
        dy: &DeviceBuffer,
        weight: &DeviceBuffer,
        input_hw: (usize, usize),
        p: Conv2dParams,
    ) -> Result<DeviceBuffer> {
        let (&[n, cout, ho, wo], &[cout2, cin, kh, kw]) = (dy.shape(), weight.shape()) else {
            panic!(
                "conv2d_input_grad: expected dy NCHW and weight OIHW, got {:?} and {:?}",
                dy.shape(),
                weight.shape()
            )
        };
        assert_eq!(
            cout,
            cout2,
            "conv2d_input_grad: dy {:?} and weight {:?}",
            dy.shape(),
            weight.shape()
        );
        let (h, w) = input_hw;
        assert_eq!(
            p.out_hw((h, w), (kh, kw)),
            (ho, wo),
            "conv2d_input_grad: dy {:?} is not the output of a {h}x{w} input",
            dy.shape()
        );
        let out = self.output(&[n, cin, h, w])?;
        if out.is_empty() {
            return Ok(out);
        }
        let push = p.push([n, cin, h, w], cout, (ho, wo), (kh, kw), false, 0);
        let groups = conv_groups("conv2d_input_grad", n * h * w, cin);
        self.dispatch(
            Kernel::Conv2dInputGrad,
            &[dy.bytes(), weight.bytes(), out.bytes()],
            push,
            groups,
            moved(&[dy, weight, &out]),
        )?;
        Ok(out)
    }

    /// Gradient of [`conv2d`](Self::conv2d) with respect to its weight: from the forward input
    /// `x` `[n, cin, h, w]` and `dy` `[n, cout, ho, wo]`, returns `[cout, cin, kh, kw]` for
    /// `kernel_hw = (kh, kw)`. The bias gradient is `reduce(Sum, dy, &[0, 2, 3])`.
    /// `shaders/conv2d_weight_grad.comp`.
    ///
    /// # Panics
    /// On mismatched shapes.
    pub fn conv2d_weight_grad(
        &mut self,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        kernel_hw: (usize, usize),
        p: Conv2dParams,
    ) -> Result<DeviceBuffer> {
        let (&[n, cin, h, w], &[n2, cout, ho, wo]) = (x.shape(), dy.shape()) else {
            panic!(
                "conv2d_weight_grad: expected x and dy NCHW, got {:?} and {:?}",
                x.shape(),
                dy.shape()
            )
        };
        let (kh, kw) = kernel_hw;
        assert!(
            n == n2 && p.out_hw((h, w), (kh, kw)) == (ho, wo),
            "conv2d_weight_grad: dy {:?} is not the output of x {:?} with a {kh}x{kw} kernel",
            dy.shape(),
            x.shape()
        );
        if n == 0 {
            // An empty batch: a sum over no terms.
            return self.zeros(&[cout, cin, kh, kw]);
        }
        let out = self.output(&[cout, cin, kh, kw])?;
        if out.is_empty() {
            return Ok(out);
        }
        let tiles = [
            (cin * kh * kw).div_ceil(GEMM_TILE),
            cout.div_ceil(GEMM_TILE),
        ];
        assert!(
            tiles[0] <= 65535 && tiles[1] <= 65535,
            "conv2d_weight_grad: a weight of {cout} × {} needs {tiles:?} tiles of 128, more than \
             a dispatch's 65535 along one axis",
            cin * kh * kw
        );
        let (splits, k_chunk) = split_k(tiles[0] * tiles[1], n * ho * wo);
        // One split writes dW directly; more write partial slices that a second kernel adds.
        let partial = if splits == 1 {
            out.view(out.shape())
        } else {
            self.output(&[splits, cout, cin * kh * kw])?
        };
        let push = p.push([n, cin, h, w], cout, (ho, wo), (kh, kw), false, k_chunk);
        let groups = [
            u32_of(tiles[0], "conv2d groups"),
            u32_of(tiles[1], "conv2d groups"),
            u32_of(splits, "conv2d groups"),
        ];
        self.dispatch(
            Kernel::Conv2dWeightGrad,
            &[x.bytes(), dy.bytes(), partial.bytes()],
            push,
            groups,
            moved(&[x, dy, &partial]),
        )?;
        if splits > 1 {
            let len = out.len();
            self.dispatch(
                Kernel::SplitKSum,
                &[partial.bytes(), out.bytes()],
                [
                    u32_of(len, "split-K length"),
                    u32_of(splits, "split-K splits"),
                ],
                [groups_1d(len, LOCAL), 1, 1],
                moved(&[&partial, &out]),
            )?;
        }
        Ok(out)
    }

    /// 2-d average pooling of an NCHW tensor with zero padding counted in the divisor (PyTorch's
    /// `AvgPool2d` with `count_include_pad = true`, `ceil_mode = false`),
    /// `shaders/avg_pool2d.comp`.
    ///
    /// # Panics
    /// If `x` is not rank 4 or the window does not fit.
    pub fn avg_pool2d(
        &mut self,
        x: &DeviceBuffer,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<DeviceBuffer> {
        let &[n, c, h, w] = x.shape() else {
            panic!("avg_pool2d: expected NCHW, got {:?}", x.shape())
        };
        let ho = Conv2dParams::out_size(h, kernel.0, stride.0, padding.0, 1);
        let wo = Conv2dParams::out_size(w, kernel.1, stride.1, padding.1, 1);
        let out = self.output(&[n, c, ho, wo])?;
        let window = [kernel, stride, padding];
        self.pool_dispatch(Kernel::AvgPool2d, x, out, [n * c, h, w, ho, wo], window)
    }

    /// Runs `kernel`, average pooling or its adjoint, from `src` into `out` (returned): both
    /// shaders take the same push constants, `[planes, h, w, ho, wo]` and the window's size,
    /// stride and padding.
    fn pool_dispatch(
        &mut self,
        kernel: Kernel,
        src: &DeviceBuffer,
        out: DeviceBuffer,
        sizes: [usize; 5],
        [size, stride, padding]: [(usize, usize); 3],
    ) -> Result<DeviceBuffer> {
        if out.is_empty() {
            return Ok(out);
        }
        let [planes, h, w, ho, wo] = sizes;
        let push = [
            planes, h, w, ho, wo, size.0, size.1, stride.0, stride.1, padding.0, padding.1,
        ]
        .map(|v| u32_of(v, "avg_pool2d size"));
        self.dispatch(
            kernel,
            &[src.bytes(), out.bytes()],
            push,
            [groups_1d(out.len(), LOCAL), 1, 1],
            moved(&[src, &out]),
        )?;
        Ok(out)
    }

    /// The adjoint (vector-Jacobian product) of [`avg_pool2d`](Self::avg_pool2d): from `g`
    /// `[n, c, ho, wo]`, the gradient of the pooled output, returns the gradient of the input
    /// `[n, c, h, w]` for `input_hw = (h, w)` (`shaders/avg_pool2d_adjoint.comp`).
    ///
    /// # Panics
    /// If `g` is not rank 4 or is not the pooled size of a `(h, w)` input.
    pub fn avg_pool2d_adjoint(
        &mut self,
        g: &DeviceBuffer,
        input_hw: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<DeviceBuffer> {
        let &[n, c, ho, wo] = g.shape() else {
            panic!("avg_pool2d_adjoint: expected NCHW, got {:?}", g.shape())
        };
        let (h, w) = input_hw;
        assert_eq!(
            (
                Conv2dParams::out_size(h, kernel.0, stride.0, padding.0, 1),
                Conv2dParams::out_size(w, kernel.1, stride.1, padding.1, 1)
            ),
            (ho, wo),
            "avg_pool2d_adjoint: g {:?} is not the pooled size of a {h}x{w} input",
            g.shape()
        );
        let out = self.output(&[n, c, h, w])?;
        let window = [kernel, stride, padding];
        self.pool_dispatch(
            Kernel::AvgPool2dAdjoint,
            g,
            out,
            [n * c, h, w, ho, wo],
            window,
        )
    }

    /// The adjoint (vector-Jacobian product) of [`resize_bilinear`](Self::resize_bilinear): from
    /// `g` `[n, c, ho, wo]` returns the gradient of the `[n, c, h, w]` input, `input_hw = (h, w)`
    /// (`shaders/resize_bilinear_adjoint.comp`, the exact transpose of the forward kernel).
    ///
    /// # Panics
    /// If `g` is not rank 4 or the input plane is empty.
    pub fn resize_bilinear_adjoint(
        &mut self,
        g: &DeviceBuffer,
        input_hw: (usize, usize),
    ) -> Result<DeviceBuffer> {
        let &[n, c, ho, wo] = g.shape() else {
            panic!(
                "resize_bilinear_adjoint: expected NCHW, got {:?}",
                g.shape()
            )
        };
        let (h, w) = input_hw;
        assert!(h > 0 && w > 0, "resize_bilinear_adjoint: empty input plane");
        let out = self.output(&[n, c, h, w])?;
        if out.is_empty() {
            return Ok(out);
        }
        let mut push = [n * c, h, w, ho, wo, 0, 0].map(|v| u32_of(v, "resize size"));
        push[5] = bilinear_scale(h, ho).to_bits();
        push[6] = bilinear_scale(w, wo).to_bits();
        self.dispatch(
            Kernel::ResizeBilinearAdjoint,
            &[g.bytes(), out.bytes()],
            push,
            [groups_1d(out.len(), LOCAL), 1, 1],
            moved(&[g, &out]),
        )?;
        Ok(out)
    }

    /// Bilinear resize of an NCHW tensor to `(ho, wo)` with `align_corners = true`
    /// (`F.interpolate(mode='bilinear', align_corners=True)`), `shaders/resize_bilinear.comp`.
    ///
    /// # Panics
    /// If `x` is not rank 4 or has an empty plane.
    pub fn resize_bilinear(
        &mut self,
        x: &DeviceBuffer,
        size: (usize, usize),
    ) -> Result<DeviceBuffer> {
        let &[n, c, h, w] = x.shape() else {
            panic!("resize_bilinear: expected NCHW, got {:?}", x.shape())
        };
        assert!(
            h > 0 && w > 0,
            "resize_bilinear: empty input plane {:?}",
            x.shape()
        );
        let (ho, wo) = size;
        let out = self.output(&[n, c, ho, wo])?;
        if out.is_empty() {
            return Ok(out);
        }
        let mut push = [n * c, h, w, ho, wo, 0, 0].map(|v| u32_of(v, "resize size"));
        push[5] = bilinear_scale(h, ho).to_bits();
        push[6] = bilinear_scale(w, wo).to_bits();
        self.dispatch(
            Kernel::ResizeBilinear,
            &[x.bytes(), out.bytes()],
            push,
            [groups_1d(out.len(), LOCAL), 1, 1],
            moved(&[x, &out]),
        )?;
        Ok(out)
    }

    /// Embedding gather: row `idx[i]` of `table` `[rows, dim]` for each index; returns
    /// `[idx.len(), dim]` (`shaders/embedding.comp`). The indices are checked on the host against
    /// the largest one seen at their upload ([`DeviceIndices`]), so no kernel reads past the table.
    ///
    /// # Panics
    /// If `table` is not rank 2, or an index is not below its number of rows.
    pub fn embedding(&mut self, table: &DeviceBuffer, idx: &DeviceIndices) -> Result<DeviceBuffer> {
        let &[rows, dim] = table.shape() else {
            panic!("embedding: table must be rank 2, got {:?}", table.shape())
        };
        idx.assert_below(rows, "embedding", &"a table of rows");
        let out = self.output(&[idx.len(), dim])?;
        if out.is_empty() {
            return Ok(out);
        }
        let push = [idx.len(), dim, rows].map(|v| u32_of(v, "embedding size"));
        self.dispatch(
            Kernel::Embedding,
            &[table.bytes(), idx.buf.as_bytes().clone(), out.bytes()],
            push,
            [groups_1d(out.len(), LOCAL), 1, 1],
            // The rows it looks up (the size of the output, at most), the indices, the output.
            idx.size_bytes() + 2 * out.size_bytes(),
        )?;
        Ok(out)
    }

    /// One Adam step in place on `param` and its moment buffers `m`, `v` (zeros before the first
    /// step), with gradient `grad`; `step` is the 1-based step count `t` of the bias corrections
    /// (`shaders/adam.comp`, formula of `torch.optim.Adam`).
    ///
    /// # Panics
    /// If the four shapes differ or `step` is 0.
    pub fn adam_step(
        &mut self,
        param: &DeviceBuffer,
        grad: &DeviceBuffer,
        m: &DeviceBuffer,
        v: &DeviceBuffer,
        cfg: AdamConfig,
        step: u64,
    ) -> Result<()> {
        self.adam(param, grad, m, v, None, cfg, step)
    }

    /// [`Recorder::adam_step`] with AMSGrad (`amsgrad=True`): `vmax` (zeros before the first
    /// step) keeps the running maximum of the second moment, and the denominator uses it
    /// (`shaders/adam_amsgrad.comp`).
    ///
    /// # Panics
    /// If the five shapes differ or `step` is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_amsgrad_step(
        &mut self,
        param: &DeviceBuffer,
        grad: &DeviceBuffer,
        m: &DeviceBuffer,
        v: &DeviceBuffer,
        vmax: &DeviceBuffer,
        cfg: AdamConfig,
        step: u64,
    ) -> Result<()> {
        self.adam(param, grad, m, v, Some(vmax), cfg, step)
    }

    #[allow(clippy::too_many_arguments)]
    fn adam(
        &mut self,
        param: &DeviceBuffer,
        grad: &DeviceBuffer,
        m: &DeviceBuffer,
        v: &DeviceBuffer,
        vmax: Option<&DeviceBuffer>,
        cfg: AdamConfig,
        step: u64,
    ) -> Result<()> {
        assert!(step >= 1, "adam_step: step counts from 1");
        for (name, t) in [
            ("grad", Some(grad)),
            ("m", Some(m)),
            ("v", Some(v)),
            ("vmax", vmax),
        ] {
            let Some(t) = t else { continue };
            assert_eq!(
                t.shape(),
                param.shape(),
                "adam_step: {name} {:?} vs param {:?}",
                t.shape(),
                param.shape()
            );
        }
        let n = param.len();
        if n == 0 {
            return Ok(());
        }
        // The f32 numbers of the step, rounded where PyTorch rounds them (as the CPU path).
        let w = crate::optim::AdamWeights::new(
            &crate::optim::AdamConfig {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
                amsgrad: vmax.is_some(),
            },
            step,
        );
        let push = [
            u32_of(n, "adam length"),
            w.step_size.to_bits(),
            w.one_minus_beta1.to_bits(),
            w.beta2.to_bits(),
            w.one_minus_beta2.to_bits(),
            w.eps.to_bits(),
            w.weight_decay.to_bits(),
            w.bias2_sqrt.to_bits(),
        ];
        let mut buffers = vec![param.bytes(), grad.bytes(), m.bytes(), v.bytes()];
        let kernel = match vmax {
            None => Kernel::Adam,
            Some(vmax) => {
                buffers.push(vmax.bytes());
                Kernel::AdamAmsgrad
            }
        };
        // The gradient is read; the parameter and the moments are read and written back.
        let updated = buffers.len() as u64 - 1;
        let bytes = (2 * updated + 1) * param.size_bytes();
        self.dispatch(kernel, &buffers, push, [groups_1d(n, LOCAL), 1, 1], bytes)
    }

    /// Raw Philox4x32-10 output: `n` words, block `j` (words `4j..4j+4`) from counter
    /// `(counter[0] + j, counter[1], counter[2], counter[3])` and `key`. Read it back with
    /// [`VulkanContext::download_bits`](super::VulkanContext::download_bits).
    /// `shaders/philox.comp`, mode 0.
    pub fn philox_bits(
        &mut self,
        n: usize,
        counter: [u32; 4],
        key: [u32; 2],
    ) -> Result<DeviceBuffer> {
        self.philox(n, 0, counter, key, &[n])
    }

    /// Standard normals of `shape`, a pure function of `(seed, counter)`: block `j` of four
    /// values comes from Philox4x32-10 with key `seed` and counter `(j, 0, counter_lo,
    /// counter_hi)`, through Box–Muller. These are exactly the `z` that
    /// [`langevin_step`](Self::langevin_step) uses for `(seed, step = counter)`.
    pub fn randn(&mut self, shape: &[usize], seed: u64, counter: u64) -> Result<DeviceBuffer> {
        let n = shape.iter().product();
        let ctr = [0, 0, counter as u32, (counter >> 32) as u32];
        self.philox(n, 1, ctr, [seed as u32, (seed >> 32) as u32], shape)
    }

    fn philox(
        &mut self,
        n: usize,
        mode: u32,
        c: [u32; 4],
        k: [u32; 2],
        shape: &[usize],
    ) -> Result<DeviceBuffer> {
        let out = self.output(shape)?;
        if n == 0 {
            return Ok(out);
        }
        let push = [
            u32_of(n, "philox length"),
            mode,
            c[0],
            c[1],
            c[2],
            c[3],
            k[0],
            k[1],
        ];
        self.dispatch(
            Kernel::Philox,
            &[out.bytes()],
            push,
            [groups_1d(n.div_ceil(4), LOCAL), 1, 1],
            4 * n as u64,
        )?;
        Ok(out)
    }

    // ANCHOR: langevin_step
    /// One Langevin step in place: `x ← x + (α/2)·score + √α·z`, with `z` drawn on the device
    /// from Philox keyed by `(seed, step)` (the same `z` as `randn(x.shape(), seed, step)`).
    /// `shaders/langevin.comp`.
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn langevin_step(
        &mut self,
        x: &DeviceBuffer,
        score: &DeviceBuffer,
        alpha: f32,
        seed: u64,
        step: u64,
    ) -> Result<()> {
        assert_eq!(
            x.shape(),
            score.shape(),
            "langevin_step: x {:?} vs score {:?}",
            x.shape(),
            score.shape()
        );
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let push = [
            u32_of(n, "langevin length"),
            alpha.to_bits(),
            seed as u32,
            (seed >> 32) as u32,
            step as u32,
            (step >> 32) as u32,
        ];
        self.dispatch(
            Kernel::Langevin,
            &[x.bytes(), score.bytes()],
            push,
            [groups_1d(n.div_ceil(4), LOCAL), 1, 1],
            // x is read and written back in place, the score read.
            2 * x.size_bytes() + score.size_bytes(),
        )
    }
    // ANCHOR_END: langevin_step
}

/// Drops the axes of extent 1 (they add nothing to an index) and pads the rest to `RANK` axes in
/// front: `(extents, strides…)` for the strided kernels. Panics above `RANK` axes of extent > 1.
fn pack_axes<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    what: &str,
) -> ([u32; RANK], [[u32; RANK]; K]) {
    let keep: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
    assert!(
        keep.len() <= RANK,
        "{what}: shape {shape:?} has more than {RANK} axes of extent above 1"
    );
    let mut ext = [1u32; RANK];
    let mut st = [[0u32; RANK]; K];
    let off = RANK - keep.len();
    for (i, &d) in keep.iter().enumerate() {
        ext[off + i] = u32_of(shape[d], "extent");
        for k in 0..K {
            st[k][off + i] = u32_of(strides[k][d], "stride");
        }
    }
    (ext, st)
}

/// Row-major strides of `shape`, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![0; shape.len()];
    let mut step = 1;
    for d in (0..shape.len()).rev() {
        st[d] = step;
        step *= shape[d];
    }
    st
}

/// Where a [`Recorder::strided_copy`] reads or writes: an element offset and one stride per axis
/// of the copied shape (0 to repeat along an axis when reading).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strided {
    /// Element offset of coordinate 0.
    pub offset: usize,
    /// Elements to step per unit of each axis.
    pub strides: Vec<usize>,
}

impl Strided {
    /// The row-major layout of a buffer of `shape`, from its start.
    pub fn contiguous(shape: &[usize]) -> Strided {
        Strided {
            offset: 0,
            strides: contiguous_strides(shape),
        }
    }
}

impl Recorder<'_> {
    /// Records a buffer of `shape` with every element `value` (a fill command: the value travels
    /// in the command buffer, no staging copy).
    pub fn fill(&mut self, shape: &[usize], value: f32) -> Result<DeviceBuffer> {
        let out = self.output(shape)?;
        self.fill_words(&out, value.to_bits())?;
        Ok(out)
    }

    /// Records `dst[dst_layout(c)] = src[src_layout(c)]` for every coordinate `c` of `shape`
    /// (`shaders/strided.comp`): the one kernel behind broadcast, permute, narrow, pad and concat.
    /// `dst` is written in place; elements no coordinate maps to keep their contents.
    ///
    /// # Panics
    /// If a layout's rank differs from `shape`'s, an index can fall outside its buffer, or more
    /// than 6 axes have extent above 1.
    pub fn strided_copy(
        &mut self,
        src: &DeviceBuffer,
        src_layout: &Strided,
        dst: &DeviceBuffer,
        dst_layout: &Strided,
        shape: &[usize],
    ) -> Result<()> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(());
        }
        for (name, l, buf) in [
            ("source", src_layout, src),
            ("destination", dst_layout, dst),
        ] {
            assert_eq!(
                l.strides.len(),
                shape.len(),
                "strided_copy: {name} layout {l:?} for shape {shape:?}"
            );
            let last = l.offset
                + shape
                    .iter()
                    .zip(&l.strides)
                    .map(|(&e, &s)| (e - 1) * s)
                    .sum::<usize>();
            assert!(
                last < buf.len(),
                "strided_copy: {name} layout {l:?} over shape {shape:?} reads past {} elements",
                buf.len()
            );
        }
        let (ext, [ss, ds]) = pack_axes(
            shape,
            [&src_layout.strides, &dst_layout.strides],
            "strided_copy",
        );
        let mut push = [0u32; 3 + 3 * RANK];
        push[0] = u32_of(n, "copy length");
        push[1] = u32_of(src_layout.offset, "offset");
        push[2] = u32_of(dst_layout.offset, "offset");
        push[3..3 + RANK].copy_from_slice(&ext);
        push[3 + RANK..3 + 2 * RANK].copy_from_slice(&ss);
        push[3 + 2 * RANK..].copy_from_slice(&ds);
        self.dispatch(
            Kernel::Strided,
            &[src.bytes(), dst.bytes()],
            push,
            [groups_1d(n, LOCAL), 1, 1],
            // The n elements it reads and the n it writes, wherever they lie in the buffers.
            8 * n as u64,
        )
    }

    /// `mask ≠ 0 ? a : b` elementwise, the three broadcast NumPy-style (`shaders/select.comp`).
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn select(
        &mut self,
        mask: &DeviceBuffer,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
    ) -> Result<DeviceBuffer> {
        let shape = broadcast_shape(mask.shape(), a.shape())
            .and_then(|s| broadcast_shape(&s, b.shape()))
            .unwrap_or_else(|| {
                panic!(
                    "select: shapes {:?}, {:?} and {:?} do not broadcast",
                    mask.shape(),
                    a.shape(),
                    b.shape()
                )
            });
        let out = self.output(&shape)?;
        let n = out.len();
        if n == 0 {
            return Ok(out);
        }
        // Strides of each operand against the output shape, in the output's axes.
        let along = |s: &[usize]| -> Vec<usize> {
            let padded = broadcast_strides(s, &shape);
            padded[RANK - shape.len()..]
                .iter()
                .map(|&v| v as usize)
                .collect()
        };
        assert!(shape.len() <= RANK, "select: rank above {RANK}");
        let (sm, sa, sb) = (along(mask.shape()), along(a.shape()), along(b.shape()));
        let (ext, [pm, pa, pb]) = pack_axes(&shape, [&sm, &sa, &sb], "select");
        let mut push = [0u32; 1 + 4 * RANK];
        push[0] = u32_of(n, "select length");
        for (i, arr) in [ext, pm, pa, pb].iter().enumerate() {
            push[1 + i * RANK..1 + (i + 1) * RANK].copy_from_slice(arr);
        }
        self.dispatch(
            Kernel::Select,
            &[mask.bytes(), a.bytes(), b.bytes(), out.bytes()],
            push,
            [groups_1d(n, LOCAL), 1, 1],
            moved(&[mask, a, b, &out]),
        )?;
        Ok(out)
    }

    /// Entries `idx` of axis `axis` of `x`, in that order (`shaders/index.comp`, mode 0).
    ///
    /// # Panics
    /// If an index is not below the extent of `axis` (checked on the host, from the upload).
    pub fn index_select(
        &mut self,
        x: &DeviceBuffer,
        axis: usize,
        idx: &DeviceIndices,
    ) -> Result<DeviceBuffer> {
        let shape = x.shape();
        assert!(axis < shape.len(), "index_select: axis {axis} of {shape:?}");
        idx.assert_below(
            shape[axis],
            "index_select",
            &format_args!("axis {axis} of {shape:?}"),
        );
        let mut out_shape = shape.to_vec();
        out_shape[axis] = idx.len();
        let out = self.output(&out_shape)?;
        let inner: usize = shape[axis + 1..].iter().product();
        self.index_kernel(0, x, idx, &out, shape[axis], inner)?;
        Ok(out)
    }

    /// The adjoint of [`index_select`](Self::index_select): a tensor like `src` with `size`
    /// entries along `axis`, entry `j` the sum of the entries `i` of `src` with `idx[i] = j`
    /// (`shaders/index.comp`, mode 1).
    ///
    /// # Panics
    /// If `idx` does not have one index per entry of `src` along `axis`, or an index is not below
    /// `size`.
    pub fn index_add(
        &mut self,
        src: &DeviceBuffer,
        axis: usize,
        idx: &DeviceIndices,
        size: usize,
    ) -> Result<DeviceBuffer> {
        let shape = src.shape();
        assert!(axis < shape.len(), "index_add: axis {axis} of {shape:?}");
        assert_eq!(
            shape[axis],
            idx.len(),
            "index_add: {} indices for axis {axis} of {shape:?}",
            idx.len()
        );
        idx.assert_below(size, "index_add", &"an output axis");
        let mut out_shape = shape.to_vec();
        out_shape[axis] = size;
        let out = self.output(&out_shape)?;
        let inner: usize = shape[axis + 1..].iter().product();
        self.index_kernel(1, src, idx, &out, size, inner)?;
        Ok(out)
    }

    fn index_kernel(
        &mut self,
        mode: u32,
        x: &DeviceBuffer,
        idx: &DeviceIndices,
        out: &DeviceBuffer,
        size: usize,
        inner: usize,
    ) -> Result<()> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let push = [
            mode,
            u32_of(n, "index length"),
            u32_of(size, "index size"),
            u32_of(idx.len(), "index count"),
            u32_of(inner, "index inner"),
        ];
        self.dispatch(
            Kernel::Index,
            &[x.bytes(), idx.buf.as_bytes().clone(), out.bytes()],
            push,
            [groups_1d(n, LOCAL), 1, 1],
            // Selecting reads the rows it copies, as many as it writes; adding reads all of x.
            idx.size_bytes()
                + match mode {
                    0 => 2 * out.size_bytes(),
                    _ => moved(&[x, out]),
                },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{fast_div_magic, split_k};

    /// `fast_div` of `shaders/conv_common.glsl`, step for step.
    fn fast_div(x: u32, [m, s]: [u32; 2]) -> u32 {
        let hi = ((x as u64 * m as u64) >> 32) as u32;
        if m == 0 { x } else { hi >> s }
    }

    /// Exact for every x < 2³¹: all x up to 3000 for every divisor up to 300 (a convolution's
    /// widths and tap counts), and for divisors up to 2³¹ − 1 the dividends where an error would
    /// show first — the multiples of d, one less, and the top of the range.
    #[test]
    fn division_without_a_divide_is_exact() {
        for d in 1..=300u32 {
            for x in 0..3000u32 {
                assert_eq!(fast_div(x, fast_div_magic(d as usize)), x / d, "{x} / {d}");
            }
        }
        let top = (1u32 << 31) - 1;
        let mut d = 2u32;
        while d < top {
            for dd in [d - 1, d, d + 1, d.wrapping_mul(3) / 2 + 1] {
                let dd = dd.clamp(1, top);
                let magic = fast_div_magic(dd as usize);
                let q_top = top / dd;
                for q in [0, 1, 2, q_top / 2, q_top.saturating_sub(1), q_top] {
                    for x in [q * dd, (q * dd).saturating_sub(1), q * dd + dd - 1] {
                        if x <= top {
                            assert_eq!(fast_div(x, magic), x / dd, "{x} / {dd}");
                        }
                    }
                }
                assert_eq!(fast_div(top, magic), top / dd, "{top} / {dd}");
            }
            d = d.saturating_mul(2).max(d + 1);
        }
    }

    /// A convolution's grid holds up to 65,535 tiles of 128 along each axis, the most workgroups
    /// Vulkan guarantees a dispatch: exactly that many pass, one pixel or channel more is refused
    /// (tests/vulkan_tensor.rs checks the message). A device test at the limit would run 65,535
    /// workgroups of a 128 × 128 tile each: 18 s on lavapipe.
    #[test]
    fn conv_grids_reach_the_dispatch_limit_exactly() {
        let limit = 65535 * 128;
        assert_eq!(super::conv_groups("conv2d", limit, 128), [65535, 1, 1]);
        assert_eq!(super::conv_groups("conv2d", 1, limit), [1, 65535, 1]);
        for (cols, rows) in [(limit + 1, 1), (1, limit + 1)] {
            let refused = std::panic::catch_unwind(|| super::conv_groups("conv2d", cols, rows));
            assert!(refused.is_err(), "{cols} × {rows}");
        }
    }

    /// The splits cover K exactly once, in chunks of whole k-tiles (all but the last, which holds
    /// the rest), no shorter than the minimum.
    #[test]
    fn split_k_covers_k_in_tile_multiples() {
        for tiles in [1, 2, 36, 144, 511, 512, 4096] {
            for k in [
                1, 15, 16, 255, 256, 511, 512, 1156, 1157, 10_250, 32768, 131_072,
            ] {
                let (splits, chunk) = split_k(tiles, k);
                assert!(splits >= 1 && (splits - 1) * chunk < k && splits * chunk >= k);
                if splits > 1 {
                    assert_eq!(chunk % super::GEMM_BK, 0, "tiles {tiles}, k {k}");
                    assert!(chunk >= super::SPLIT_K_MIN_CHUNK, "tiles {tiles}, k {k}");
                    assert!(
                        tiles * splits <= 2 * super::SPLIT_K_GROUPS,
                        "tiles {tiles}, k {k}"
                    );
                }
            }
        }
        // The CIFAR-10 RefineNet's 128 -> 128 channel 3 x 3 convolution at batch 128: 9 tiles
        // of dW, K = 128·32·32; and the test case in tests/vulkan.rs with K = 4·17·17.
        assert_eq!(split_k(9, 131_072), (57, 2304));
        assert_eq!(split_k(1, 1156), (4, 296));
        // 40 splits of K = 10,250 would be 257 deep, rounded up to 264: 39 of those cover K, and
        // a 40th would sum nothing.
        assert_eq!(split_k(1, 10_250), (39, 264));
        // Enough tiles already: no split.
        assert_eq!(split_k(512, 131_072), (1, 131_072));
    }
}
