//! Elementwise functions of two tensors with NumPy broadcasting, comparisons and `where_`.
//!
//! Broadcasting follows NumPy (and PyTorch): shapes are aligned at their last axis, and each pair
//! of sizes must be equal or one of them 1. In the backward pass a gradient of the broadcast shape
//! is summed back to each input's own shape ([`Tensor::sum_to`]).

use super::fastmath;
use super::unary::{PAR_CHUNK, PAR_THRESHOLD};
use super::{Op, Storage, Tensor};
use ndarray::{ArrayD, IxDyn, ShapeBuilder, Zip};
use rayon::prelude::*;

#[cfg(feature = "vulkan")]
use crate::backend::vulkan::BinaryOp;

/// The device kernel's code of a comparison.
#[cfg(feature = "vulkan")]
fn compare_code(op: &str) -> BinaryOp {
    match op {
        "gt" => BinaryOp::Gt,
        "ge" => BinaryOp::Ge,
        "lt" => BinaryOp::Lt,
        "le" => BinaryOp::Le,
        "eq" => BinaryOp::Eq,
        _ => unreachable!("no comparison `{op}`"),
    }
}

/// The shape two shapes broadcast to. Panics, naming `op` and both shapes, if they do not.
pub fn broadcast_shape(a: &[usize], b: &[usize], op: &str) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => panic!("{op}: shapes {a:?} and {b:?} do not broadcast"),
            }
        })
        .collect()
}

/// max(a, b) that propagates NaN, as `torch.maximum` and `torch.amax` do: b where b is greater or
/// NaN, a otherwise (so a NaN a stays). `f32::max` returns the operand that is not NaN instead.
#[inline]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// min(a, b) that propagates NaN, as `torch.minimum` does.
#[inline]
pub(crate) fn nan_min(a: f32, b: f32) -> f32 {
    if b < a || b.is_nan() { b } else { a }
}

/// Applies `f` elementwise over two broadcast arrays.
// ANCHOR: zip_with
pub(crate) fn zip_with(
    a: &Storage,
    b: &Storage,
    op: &str,
    f: impl Fn(f32, f32) -> f32 + Copy + Sync + Send,
) -> ArrayD<f32> {
    let shape = if a.shape() == b.shape() {
        a.shape().to_vec()
    } else {
        broadcast_shape(a.shape(), b.shape(), op)
    };
    // The common cases on row-major data, as vectorised loops over slices: same shapes, a scalar,
    // or one operand repeated along the leading axes of the other (a bias added to every row).
    if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
        if a.shape() == shape.as_slice() && repeats_along_leading_axes(b.shape(), &shape) {
            return zip_slices(x, y, &shape, f);
        }
        if b.shape() == shape.as_slice() && repeats_along_leading_axes(a.shape(), &shape) {
            return zip_slices(y, x, &shape, move |q, p| f(p, q));
        }
    }
    // Two operands with one and the same layout over contiguous memory (two transposed weight
    // gradients, say): elementwise over memory order, and the result in that layout too.
    if a.shape() == b.shape()
        && a.strides() == b.strides()
        && a.strides().iter().all(|&s| s >= 0)
        && let (Some(x), Some(y)) = (a.as_slice_memory_order(), b.as_slice_memory_order())
    {
        let out = zip_slices(x, y, &[x.len()], f).into_raw_vec_and_offset().0;
        let strides: Vec<usize> = a.strides().iter().map(|&s| s as usize).collect();
        let layout = IxDyn(&shape).strides(IxDyn(&strides));
        return ArrayD::from_shape_vec(layout, out).expect("layout of a contiguous operand");
    }
    let av = a.broadcast(IxDyn(&shape)).expect("broadcast checked");
    let bv = b.broadcast(IxDyn(&shape)).expect("broadcast checked");
    let zip = Zip::from(&av).and(&bv);
    if av.len() >= PAR_THRESHOLD {
        zip.par_map_collect(|&x, &y| f(x, y))
    } else {
        zip.map_collect(|&x, &y| f(x, y))
    }
}
// ANCHOR_END: zip_with

/// Whether an operand of shape `small` broadcast to `full` is its data repeated end to end: true
/// when, after dropping leading 1s, `small` is a suffix of `full` (a scalar included).
fn repeats_along_leading_axes(small: &[usize], full: &[usize]) -> bool {
    let lead = small.iter().take_while(|&&d| d == 1).count();
    let core = &small[lead..];
    core.len() <= full.len() && full.ends_with(core)
}

/// `f(x[i], y[i mod y.len()])` into a new array of `shape` (the shape of `x`), across threads
/// for large arrays.
fn zip_slices(
    x: &[f32],
    y: &[f32],
    shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Copy + Sync + Send,
) -> ArrayD<f32> {
    let out = super::filled(x.len(), |out| {
        if y.len() == 1 {
            let c = y[0];
            if x.len() >= PAR_THRESHOLD {
                out.par_chunks_mut(PAR_CHUNK)
                    .zip(x.par_chunks(PAR_CHUNK))
                    .for_each(|(o, x)| fastmath::map_into(x, o, move |v| f(v, c)));
            } else {
                fastmath::map_into(x, out, move |v| f(v, c));
            }
        } else if x.len() >= PAR_THRESHOLD {
            // Chunks that are whole repeats of y, so that each starts at y[0].
            let chunk = PAR_CHUNK.next_multiple_of(y.len());
            out.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(o, x)| fastmath::zip_into(x, y, o, f));
        } else if !x.is_empty() {
            fastmath::zip_into(x, y, out, f);
        }
    });
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("shape")
}

impl Tensor {
    /// a + b
    pub fn add(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Add, self, other, "add") {
            return Tensor::from_op(d, Op::Add(self.clone(), other.clone()));
        }
        let out = zip_with(&self.storage(), &other.storage(), "add", |x, y| x + y);
        Tensor::from_op(out, Op::Add(self.clone(), other.clone()))
    }

    /// a − b
    pub fn sub(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Sub, self, other, "sub") {
            return Tensor::from_op(d, Op::Sub(self.clone(), other.clone()));
        }
        let out = zip_with(&self.storage(), &other.storage(), "sub", |x, y| x - y);
        Tensor::from_op(out, Op::Sub(self.clone(), other.clone()))
    }

    /// a · b (elementwise)
    pub fn mul(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Mul, self, other, "mul") {
            return Tensor::from_op(d, Op::Mul(self.clone(), other.clone()));
        }
        let out = zip_with(&self.storage(), &other.storage(), "mul", |x, y| x * y);
        Tensor::from_op(out, Op::Mul(self.clone(), other.clone()))
    }

    /// a / b (elementwise)
    pub fn div(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Div, self, other, "div") {
            return Tensor::from_op(d, Op::Div(self.clone(), other.clone()));
        }
        let out = zip_with(&self.storage(), &other.storage(), "div", |x, y| x / y);
        Tensor::from_op(out, Op::Div(self.clone(), other.clone()))
    }

    /// Elementwise maximum. Where a = b the gradient is split equally, as PyTorch does; a NaN in
    /// either operand gives NaN (`torch.maximum`; `f32::max` would return the other operand).
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Max, self, other, "maximum") {
            let (a, b) = (self.clone(), other.clone());
            return Tensor::from_op(d, Op::Extremum { a, b, min: false });
        }
        let out = zip_with(&self.storage(), &other.storage(), "maximum", nan_max);
        Tensor::from_op(
            out,
            Op::Extremum {
                a: self.clone(),
                b: other.clone(),
                min: false,
            },
        )
    }

    /// Elementwise minimum. Where a = b the gradient is split equally, as PyTorch does; a NaN in
    /// either operand gives NaN.
    pub fn minimum(&self, other: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(BinaryOp::Min, self, other, "minimum") {
            let (a, b) = (self.clone(), other.clone());
            return Tensor::from_op(d, Op::Extremum { a, b, min: true });
        }
        let out = zip_with(&self.storage(), &other.storage(), "minimum", nan_min);
        Tensor::from_op(
            out,
            Op::Extremum {
                a: self.clone(),
                b: other.clone(),
                min: true,
            },
        )
    }

    fn compare(
        &self,
        other: &Tensor,
        op: &str,
        f: impl Fn(f32, f32) -> bool + Sync + Send,
    ) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::binary(compare_code(op), self, other, op) {
            return Tensor::make(d, None, false);
        }
        Tensor::from_array(zip_with(&self.storage(), &other.storage(), op, |x, y| {
            if f(x, y) { 1.0 } else { 0.0 }
        }))
    }

    /// The mask a > b (1.0 where true, 0.0 elsewhere). Masks are constants: they record nothing.
    pub fn gt(&self, other: &Tensor) -> Tensor {
        self.compare(other, "gt", |x, y| x > y)
    }
    /// The mask a ≥ b.
    pub fn ge(&self, other: &Tensor) -> Tensor {
        self.compare(other, "ge", |x, y| x >= y)
    }
    /// The mask a < b.
    pub fn lt(&self, other: &Tensor) -> Tensor {
        self.compare(other, "lt", |x, y| x < y)
    }
    /// The mask a ≤ b.
    pub fn le(&self, other: &Tensor) -> Tensor {
        self.compare(other, "le", |x, y| x <= y)
    }
    /// The mask a = b.
    pub fn eq(&self, other: &Tensor) -> Tensor {
        self.compare(other, "eq", |x, y| x == y)
    }
    /// The mask a > c for a constant c.
    pub fn gt_scalar(&self, c: f32) -> Tensor {
        self.gt(&Tensor::scalar(c))
    }
    /// The mask a < c for a constant c.
    pub fn lt_scalar(&self, c: f32) -> Tensor {
        self.lt(&Tensor::scalar(c))
    }

    /// `mask ? a : b` elementwise, broadcasting all three; `mask` is read as true where non-zero
    /// and carries no gradient.
    pub fn where_(mask: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::select(mask, a, b) {
            let (mask, a, b) = (mask.detach(), a.clone(), b.clone());
            return Tensor::from_op(d, Op::Where { mask, a, b });
        }
        let (m, x, y) = (mask.storage(), a.storage(), b.storage());
        let shape = broadcast_shape(
            &broadcast_shape(m.shape(), x.shape(), "where"),
            y.shape(),
            "where",
        );
        let d = IxDyn(&shape);
        let (mv, xv, yv) = (
            m.broadcast(d.clone()).unwrap(),
            x.broadcast(d.clone()).unwrap(),
            y.broadcast(d).unwrap(),
        );
        let out = Zip::from(&mv)
            .and(&xv)
            .and(&yv)
            .map_collect(|&m, &x, &y| if m != 0.0 { x } else { y });
        Tensor::from_op(
            out,
            Op::Where {
                mask: mask.detach(),
                a: a.clone(),
                b: b.clone(),
            },
        )
    }
}

impl std::ops::Add for &Tensor {
    type Output = Tensor;
    fn add(self, rhs: &Tensor) -> Tensor {
        Tensor::add(self, rhs)
    }
}
impl std::ops::Sub for &Tensor {
    type Output = Tensor;
    fn sub(self, rhs: &Tensor) -> Tensor {
        Tensor::sub(self, rhs)
    }
}
impl std::ops::Mul for &Tensor {
    type Output = Tensor;
    fn mul(self, rhs: &Tensor) -> Tensor {
        Tensor::mul(self, rhs)
    }
}
impl std::ops::Div for &Tensor {
    type Output = Tensor;
    fn div(self, rhs: &Tensor) -> Tensor {
        Tensor::div(self, rhs)
    }
}
impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

/// The VJP of maximum/minimum: the gradient goes to the larger (smaller) input, half to each on a tie.
pub(crate) fn extremum_vjp(
    a: &Tensor,
    b: &Tensor,
    min: bool,
    g: &Tensor,
    need: &[bool],
) -> (Option<Tensor>, Option<Tensor>) {
    let wins = if min { a.lt(b) } else { a.gt(b) };
    let weight_a = wins.add(&a.eq(b).mul_scalar(0.5)); // constant: [a wins] + ½[tie]
    let ga = need[0].then(|| g.mul(&weight_a).sum_to(a.shape()));
    let gb = need[1].then(|| g.mul(&weight_a.neg().add_scalar(1.0)).sum_to(b.shape()));
    (ga, gb)
}
