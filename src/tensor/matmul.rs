//! Matrix products: through `matrixmultiply::sgemm`, which takes arbitrary row and column strides
//! (a transposed operand, a permuted view, is multiplied without being copied first); products
//! with at most four rows or columns as dot products ([`thin_product`]); and, with AVX-512, the
//! other products too small to split across threads through the kernel of
//! [`small_gemm`](super::small_gemm) ([`small_product`]). Also the linear layer's x·wᵀ + b as one
//! op, [`Tensor::linear`].

use super::binary::broadcast_shape;
use super::fastmath;
use super::{Op, Storage, Tensor};
use ndarray::{Array2, ArrayD, ArrayView2, IxDyn};
use rayon::prelude::*;

/// Multiply-adds above which a product is split across threads.
const PAR_MACS: usize = 1 << 21;

/// A raw pointer that may cross threads: the blocks of C that the threads write are disjoint,
/// and A and B are only read.
#[derive(Clone, Copy)]
struct SendPtr(*const f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *const f32 {
        self.0
    }
}

/// The shapes of C = A·B: (broadcast batch axes, m, k, n). Panics, naming both shapes, unless
/// both operands have at least two axes, their inner sizes agree and their batch axes broadcast.
/// Shared by the CPU kernel and the Vulkan path.
pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> (Vec<usize>, usize, usize, usize) {
    let (ad, bd) = (a.len(), b.len());
    assert!(
        ad >= 2 && bd >= 2,
        "matmul: need at least 2-D operands, got {a:?} and {b:?}"
    );
    let (m, k) = (a[ad - 2], a[ad - 1]);
    let (k2, n) = (b[bd - 2], b[bd - 1]);
    assert_eq!(k, k2, "matmul: inner sizes differ in {a:?} · {b:?}");
    (
        broadcast_shape(&a[..ad - 2], &b[..bd - 2], "matmul"),
        m,
        k,
        n,
    )
}

/// C = A·B over the last two axes, broadcasting the leading (batch) axes.
pub(crate) fn matmul_kernel(a: &Storage, b: &Storage) -> ArrayD<f32> {
    let (batch, m, k, n) = matmul_dims(a.shape(), b.shape());
    let with = |rows: usize, cols: usize| -> Vec<usize> {
        batch.iter().copied().chain([rows, cols]).collect()
    };
    let av = a.broadcast(IxDyn(&with(m, k))).expect("broadcast checked");
    let bv = b.broadcast(IxDyn(&with(k, n))).expect("broadcast checked");
    if m == 0 || n == 0 || k == 0 {
        return ArrayD::<f32>::zeros(IxDyn(&with(m, n)));
    }
    if batch.is_empty() && (n <= THIN || m <= THIN) && m * k * n < PAR_MACS {
        let (a2, b2) = (
            av.view().into_dimensionality().expect("2-D"),
            bv.view().into_dimensionality().expect("2-D"),
        );
        return thin_product(a2, b2).into_dyn();
    }
    #[cfg(target_arch = "x86_64")]
    if batch.is_empty()
        && m * k * n < PAR_MACS
        && let Some(c) = small_product(&av, &bv)
    {
        return c;
    }
    // sgemm with β = 0 never reads C, so C need not be zeroed first.
    let mut c = ArrayD::<f32>::uninit(IxDyn(&with(m, n)));
    let (sa, sb) = (av.strides(), bv.strides());
    let nb = batch.len();
    let batches: usize = batch.iter().product();
    // The offsets of batch entry `flat` in A and B (broadcast axes have stride 0).
    let offsets = |flat: usize| {
        let (mut rest, mut off_a, mut off_b) = (flat, 0isize, 0isize);
        for ax in (0..nb).rev() {
            let i = (rest % batch[ax]) as isize;
            rest /= batch[ax];
            off_a += i * sa[ax];
            off_b += i * sb[ax];
        }
        (off_a, off_b)
    };
    let (pa, pb) = (SendPtr(av.as_ptr()), SendPtr(bv.as_ptr()));
    let (rsa, csa, rsb, csb) = (sa[nb], sa[nb + 1], sb[nb], sb[nb + 1]);
    // C rows [r0, r1) of batch entry `flat` = A rows [r0, r1) · B.
    let rows = |flat: usize, r0: usize, c_rows: &mut [std::mem::MaybeUninit<f32>]| {
        let (off_a, off_b) = offsets(flat);
        let r1 = r0 + c_rows.len() / n;
        // SAFETY: the offsets and strides come from ndarray views of `a` and `b` (in bounds for
        // every index below m, k, n) and `c_rows` holds (r1 − r0)·n elements.
        unsafe {
            matrixmultiply::sgemm(
                r1 - r0,
                k,
                n,
                1.0,
                pa.get().offset(off_a + r0 as isize * rsa),
                rsa,
                csa,
                pb.get().offset(off_b),
                rsb,
                csb,
                0.0,
                c_rows.as_mut_ptr() as *mut f32,
                n as isize,
                1,
            );
        }
    };
    let data = c.as_slice_mut().expect("fresh array");
    // Work is split across rayon's threads (matrixmultiply itself runs single-threaded, so that
    // it composes with the convolutions, which parallelise over images): over batch entries when
    // there are several, otherwise over blocks of rows of a large product.
    let threads = rayon::current_num_threads();
    if batches >= threads && batches * m * n * k >= PAR_MACS {
        data.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(flat, cb)| rows(flat, 0, cb));
    } else if m * n * k >= PAR_MACS && m >= 2 * 16 {
        let block = m.div_ceil(threads).next_multiple_of(16);
        for (flat, cb) in data.chunks_mut(m * n).enumerate() {
            cb.par_chunks_mut(block * n)
                .enumerate()
                .for_each(|(i, cr)| rows(flat, i * block, cr));
        }
    } else {
        for (flat, cb) in data.chunks_mut(m * n).enumerate() {
            rows(flat, 0, cb);
        }
    }
    // SAFETY: every one of the batches·m·n entries was written by an sgemm call above.
    unsafe { c.assume_init() }
}

/// The deepest product [`small_product`] takes: `sgemm`'s own depth block (its `kc`), so that
/// both compute each entry as one multiply-add chain over k in order, with the same bits.
#[cfg(target_arch = "x86_64")]
const SMALL_K: usize = 256;

/// C = A·B for a 2-D product too small to split across threads, through the AVX-512 kernel of
/// [`small_gemm`](super::small_gemm), which packs only B and reads A in place. Returns `None` —
/// leaving the product to `sgemm` — without AVX-512 and for k > [`SMALL_K`].
#[cfg(target_arch = "x86_64")]
fn small_product(
    a: &ndarray::ArrayViewD<f32>,
    b: &ndarray::ArrayViewD<f32>,
) -> Option<ArrayD<f32>> {
    use super::small_gemm;
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let (sa, sb) = (a.strides(), b.strides());
    if k > SMALL_K || !super::avx512::available() {
        return None;
    }
    let mut c = Array2::<f32>::uninit((m, n));
    PACKED_B.with_borrow_mut(|packed| {
        // SAFETY: AVX-512F is present; A and B are m × k and k × n views with these strides,
        // and C has room for m·n floats.
        unsafe {
            packed.pack((k, n), b.as_ptr(), (sb[0], sb[1]));
            small_gemm::gemm(
                m,
                a.as_ptr(),
                (sa[0], sa[1]),
                packed,
                c.as_mut_ptr() as *mut f32,
            );
        }
    });
    // SAFETY: `gemm` wrote all m·n entries.
    Some(unsafe { c.assume_init() }.into_dyn())
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The packed B of [`small_product`], kept between calls.
    static PACKED_B: std::cell::RefCell<super::small_gemm::PackedB> =
        const { std::cell::RefCell::new(super::small_gemm::PackedB::new()) };
}

/// Products with at most this many rows or columns go to [`thin_product`].
const THIN: usize = 4;

// ANCHOR: thin_product
/// C = A·B when C has at most [`THIN`] columns or rows — a layer with 2 inputs or 2 outputs (the
/// toy score networks), and its gradients. sgemm packs both operands into panels and runs a
/// 16-wide micro-kernel over C's tiles; with two columns most of each tile is masked off, and
/// packing costs more than the arithmetic. Here each entry is one dot product of contiguous
/// vectors, or each column one sum of scaled columns, whichever the layout of A allows.
fn thin_product(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    if a.nrows() <= THIN && b.ncols() > THIN {
        // Cᵀ = Bᵀ·Aᵀ has few columns.
        return thin_product(b.t(), a.t())
            .reversed_axes()
            .as_standard_layout()
            .into_owned();
    }
    let (m, n) = (a.nrows(), b.ncols());
    // The columns of B, each contiguous (n ≤ THIN copies of k numbers).
    let cols: Vec<Vec<f32>> = b.columns().into_iter().map(|c| c.to_vec()).collect();
    let mut c = Array2::<f32>::zeros((m, n));
    // One dispatch for all the loops, so that `dot` and `axpy` inline with this CPU's vectors.
    // The closure must be inlined too: left to itself the compiler outlines a closure this
    // large, compiled for the baseline CPU, and its loops run four lanes wide.
    fastmath::dispatch(
        #[inline(always)]
        || {
            if let Some(rows) = a.as_slice() {
                // A row-major: C[i, j] = ⟨A[i, :], B[:, j]⟩.
                let c = c.as_slice_mut().expect("fresh array");
                match cols.as_slice() {
                    [b0] => row_dots(rows, [b0], c),
                    [b0, b1] => row_dots(rows, [b0, b1], c),
                    [b0, b1, b2] => row_dots(rows, [b0, b1, b2], c),
                    [b0, b1, b2, b3] => row_dots(rows, [b0, b1, b2, b3], c),
                    _ => unreachable!("at most THIN columns"),
                }
            } else if let Some(acols) = a.t().as_slice() {
                // A column-major: C[:, j] = Σₚ B[p, j]·A[:, p], accumulated column by column.
                let mut ct = vec![0.0f32; n * m]; // Cᵀ, row-major
                for (p, ap) in acols.chunks_exact(m).enumerate() {
                    for (ctj, bj) in ct.chunks_exact_mut(m).zip(&cols) {
                        fastmath::axpy(bj[p], ap, ctj);
                    }
                }
                for (j, ctj) in ct.chunks_exact(m).enumerate() {
                    c.column_mut(j).assign(&ndarray::ArrayView1::from(ctj));
                }
            } else {
                // Any other strides: rows copied out first.
                for (ai, ci) in a.rows().into_iter().zip(c.rows_mut()) {
                    let ai = ai.to_vec();
                    for (cij, bj) in ci.into_iter().zip(&cols) {
                        *cij = fastmath::dot(&ai, bj);
                    }
                }
            }
        },
    );
    c
}
// ANCHOR_END: thin_product

// ANCHOR: row_dots
/// C = A·B for a row-major A (`rows`, m × k) and the N columns of B, into the row-major m × N
/// `c`: the dot products of [`fastmath::dots`], four rows at a time.
#[inline(always)]
fn row_dots<const N: usize>(rows: &[f32], b: [&Vec<f32>; N], c: &mut [f32]) {
    let k = b[0].len();
    let b = b.map(|v| v.as_slice());
    let done = (c.len() / N) / 4 * 4;
    let mut blocks = c.chunks_exact_mut(4 * N);
    for (i, ci) in blocks.by_ref().enumerate() {
        let a: [&[f32]; 4] = std::array::from_fn(|r| &rows[(4 * i + r) * k..][..k]);
        for (ci, d) in ci.chunks_exact_mut(N).zip(fastmath::dots(a, b)) {
            ci.copy_from_slice(&d);
        }
    }
    for (r, ci) in blocks.into_remainder().chunks_exact_mut(N).enumerate() {
        let [d] = fastmath::dots([&rows[(done + r) * k..][..k]], b);
        ci.copy_from_slice(&d);
    }
}
// ANCHOR_END: row_dots

impl Tensor {
    /// The matrix product of the last two axes, `(…, m, k) · (…, k, n) → (…, m, n)`, with the
    /// leading axes broadcast (like `torch.matmul` for operands of two or more dimensions).
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::matmul(self, other) {
            return Tensor::from_op(d, Op::Matmul(self.clone(), other.clone()));
        }
        let out = matmul_kernel(&self.storage(), &other.storage());
        Tensor::from_op(out, Op::Matmul(self.clone(), other.clone()))
    }

    // ANCHOR: linear
    /// The affine map of a linear layer, `x·wᵀ + b`, for x of shape (N, in), `weight` (out, in)
    /// and `bias` (out): one op — like PyTorch's `addmm` — where `x.matmul(&weight.t())`
    /// followed by `.add(bias)` would record three (the transposed view, the product and the
    /// sum), each with its own node, gradient and, in a backward pass that records a graph,
    /// derivative of its own. The numbers are the same: the product is the same kernel call on
    /// the same strided view of the weight, and the bias is added to each entry once.
    ///
    /// Other ranks of x, and tensors on a Vulkan device, take the three-op composite.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let on_cpu = |t: &Tensor| t.device() == super::Device::Cpu;
        if self.ndim() != 2 || !on_cpu(self) || !on_cpu(weight) || !bias.is_none_or(on_cpu) {
            let y = self.matmul(&weight.t());
            return match bias {
                Some(b) => y.add(b),
                None => y,
            };
        }
        let (n_in, n_out) = (self.shape()[1], weight.shape()[0]);
        assert!(
            weight.shape() == [n_out, n_in] && bias.is_none_or(|b| b.shape() == [n_out]),
            "linear: input {:?}, weight {:?} and bias {:?} do not fit (N, in), (out, in), (out)",
            self.shape(),
            weight.shape(),
            bias.map(|b| b.shape().to_vec())
        );
        let mut y = matmul_kernel(&self.storage(), &weight.storage().reversed_axes());
        if let Some(b) = bias {
            let b = b.storage();
            let b = super::contiguous(&b);
            let rows = y.as_slice_mut().expect("fresh array");
            fastmath::dispatch(
                #[inline(always)]
                || {
                    for row in rows.chunks_exact_mut(n_out) {
                        for (y, b) in row.iter_mut().zip(b.iter()) {
                            *y += b;
                        }
                    }
                },
            );
        }
        let op = Op::Linear {
            x: self.clone(),
            w: weight.clone(),
            b: bias.cloned(),
        };
        Tensor::from_op(y, op)
    }
    // ANCHOR_END: linear
}

/// The VJP of C = A·B: ∂A = ∂C·Bᵀ and ∂B = Aᵀ·∂C, each summed over broadcast batch axes.
// ANCHOR: matmul_vjp
pub(crate) fn vjp(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    need: &[bool],
) -> (Option<Tensor>, Option<Tensor>) {
    let ga = need[0].then(|| g.matmul(&b.t()).sum_to(a.shape()));
    let gb = need[1].then(|| {
        if b.is_column_major() && a.ndim() == 2 {
            // (gᵀ·a)ᵀ = aᵀ·g, computed so that the result is laid out like b: for a weight
            // used as `w.t()` (Linear), the gradient that reaches w is then row-major like w,
            // and accumulating it or applying it in the optimizer needs no transposing copy.
            g.t().matmul(a).t()
        } else {
            a.t().matmul(g).sum_to(b.shape())
        }
    });
    (ga, gb)
}
// ANCHOR_END: matmul_vjp

// ANCHOR: linear_vjp
/// The VJP of y = x·wᵀ + b: ∂x = ∂y·w, ∂w = ∂yᵀ·x (laid out like w) and ∂b = Σₙ ∂y[n, :].
pub(crate) fn linear_vjp(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &Tensor,
    need: &[bool],
) -> Vec<Option<Tensor>> {
    let mut grads = vec![
        need[0].then(|| g.matmul(w)),
        need[1].then(|| g.t().matmul(x)),
    ];
    if let Some(b) = b {
        grads.push(need[2].then(|| g.sum_to(b.shape())));
    }
    grads
}
// ANCHOR_END: linear_vjp
