//! Matrix products through `matrixmultiply::sgemm`, which takes arbitrary row and column strides:
//! a transposed operand (a permuted view) is multiplied without being copied.

use super::binary::broadcast_shape;
use super::{Op, Storage, Tensor};
use ndarray::{ArrayD, IxDyn};

/// C = A·B over the last two axes, broadcasting the leading (batch) axes.
// ANCHOR: matmul_kernel
pub(crate) fn matmul_kernel(a: &Storage, b: &Storage) -> ArrayD<f32> {
    let (ad, bd) = (a.ndim(), b.ndim());
    assert!(
        ad >= 2 && bd >= 2,
        "matmul: need at least 2-D operands, got {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let (m, k) = (a.shape()[ad - 2], a.shape()[ad - 1]);
    let (k2, n) = (b.shape()[bd - 2], b.shape()[bd - 1]);
    assert_eq!(
        k,
        k2,
        "matmul: inner sizes differ in {:?} · {:?}",
        a.shape(),
        b.shape()
    );
    let batch = broadcast_shape(&a.shape()[..ad - 2], &b.shape()[..bd - 2], "matmul");
    let with = |rows: usize, cols: usize| -> Vec<usize> {
        batch.iter().copied().chain([rows, cols]).collect()
    };
    let av = a.broadcast(IxDyn(&with(m, k))).expect("broadcast checked");
    let bv = b.broadcast(IxDyn(&with(k, n))).expect("broadcast checked");
    if m == 0 || n == 0 || k == 0 {
        return ArrayD::<f32>::zeros(IxDyn(&with(m, n)));
    }
    // sgemm with β = 0 never reads C, so C need not be zeroed first.
    let mut c = ArrayD::<f32>::uninit(IxDyn(&with(m, n)));
    let (sa, sb) = (av.strides(), bv.strides());
    let nb = batch.len();
    let c_ptr = c.as_mut_ptr() as *mut f32;
    let batches: usize = batch.iter().product();
    for flat in 0..batches {
        // The offsets of this batch entry in A and B (broadcast axes have stride 0).
        let (mut rest, mut off_a, mut off_b) = (flat, 0isize, 0isize);
        for ax in (0..nb).rev() {
            let i = (rest % batch[ax]) as isize;
            rest /= batch[ax];
            off_a += i * sa[ax];
            off_b += i * sb[ax];
        }
        // SAFETY: the offsets and strides come from ndarray views of `a` and `b` (in bounds for
        // every index below m, k, n) and C is a fresh standard-layout array of batches·m·n.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                av.as_ptr().offset(off_a),
                sa[nb],
                sa[nb + 1],
                bv.as_ptr().offset(off_b),
                sb[nb],
                sb[nb + 1],
                0.0,
                c_ptr.add(flat * m * n),
                n as isize,
                1,
            );
        }
    }
    // SAFETY: every one of the batches·m·n entries was written by an sgemm call above.
    unsafe { c.assume_init() }
}
// ANCHOR_END: matmul_kernel

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
    let gb = need[1].then(|| a.t().matmul(g).sum_to(b.shape()));
    (ga, gb)
}
// ANCHOR_END: matmul_vjp
