//! Reductions: sum and max are primitives; mean, var and logsumexp are built from them, so their
//! derivatives of any order come for free.

use super::{Op, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

#[cfg(feature = "vulkan")]
use crate::backend::vulkan::ReduceOp;

/// Resolves, sorts and de-duplicates a list of possibly negative axes.
fn norm_axes(t: &Tensor, axes: &[isize]) -> Vec<usize> {
    let mut v: Vec<usize> = axes.iter().map(|&a| t.axis(a)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The shape of a reduction's result.
fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keepdim.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

// ANCHOR: tree_fold
/// Folds a contiguous run with an associative `f` (a sum, a maximum) as a tree: 16 interleaved
/// lanes within blocks of at most 512 numbers, the lanes combined pairwise, and the blocks
/// combined pairwise by recursive halving. For a sum this is pairwise summation (NumPy's
/// `np.sum` does the same): the rounding error grows like log n rather than like n, so summing
/// 2²³ (8,388,608) copies of 1.5 gives 12,582,912 exactly. A running f32 total drifts instead:
/// past 2²³ the spacing of f32 is 1, each + 1.5 is a tie that rounds to even and adds 2, and it
/// returns 13,981,012 (past 2²⁵ it would stop growing altogether). The lanes also let the loop
/// vectorise. For a maximum any order gives the same result.
fn tree_fold(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32 + Copy) -> f32 {
    const LANES: usize = 16;
    const BLOCK: usize = 512;
    if v.len() > BLOCK {
        let mid = (v.len() / 2).next_multiple_of(LANES);
        return f(tree_fold(&v[..mid], init, f), tree_fold(&v[mid..], init, f));
    }
    let mut lanes = [init; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &b| f(a, b));
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = f(*l, x);
        }
    }
    f(super::fastmath::combine_lanes(lanes, f), tail)
}
// ANCHOR_END: tree_fold

/// Folds `axes` of `x` with `f`, starting from `init`. When the axes are consecutive (the common
/// case: all of a channel's pixels, a row's columns) the array is viewed as (outer, reduced, inner)
/// and folded in one pass.
fn fold_axes(
    x: &Tensor,
    axes: &[usize],
    init: f32,
    f: impl Fn(f32, f32) -> f32 + Copy + Sync,
) -> ArrayD<f32> {
    let data = x.storage();
    let shape = x.shape();
    let out_shape = reduced_shape(shape, axes, false);
    if axes.is_empty() {
        return data.as_standard_layout().into_owned();
    }
    let consecutive = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if consecutive {
        let outer: usize = shape[..axes[0]].iter().product();
        let red: usize = axes.iter().map(|&a| shape[a]).product();
        let inner: usize = shape[axes[axes.len() - 1] + 1..].iter().product();
        let std = data.as_standard_layout();
        let v = std.as_slice().expect("standard layout");
        let mut out = vec![init; outer * inner];
        if inner == 1 {
            // Reducing trailing axes (a plane's pixels): each output folds one contiguous run,
            // and the runs are independent, so large inputs are split across threads.
            let fold_run = |(o, d): (usize, &mut f32)| {
                *d = tree_fold(&v[o * red..(o + 1) * red], init, f);
            };
            if v.len() >= super::unary::PAR_THRESHOLD {
                use rayon::prelude::*;
                let min = (super::unary::PAR_THRESHOLD / red.max(1)).max(1);
                out.par_iter_mut()
                    .enumerate()
                    .with_min_len(min)
                    .for_each(fold_run);
            } else {
                out.iter_mut().enumerate().for_each(fold_run);
            }
            return ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("shape");
        }
        for o in 0..outer {
            let dst = &mut out[o * inner..(o + 1) * inner];
            for r in 0..red {
                let src = &v[(o * red + r) * inner..(o * red + r + 1) * inner];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = f(*d, s);
                }
            }
        }
        return ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("shape");
    }
    let mut acc = data.to_owned();
    for &a in axes.iter().rev() {
        acc = acc.fold_axis(Axis(a), init, |&m, &v| f(m, v));
    }
    acc.into_shape_with_order(IxDyn(&out_shape)).expect("shape")
}

impl Tensor {
    /// Sum over `axes` (negative values count from the end); with `keepdim` the reduced axes stay
    /// as size 1. As in NumPy (`axis=()`), and so for every reduction here, an empty `axes`
    /// reduces nothing and returns the values as they are; PyTorch's `dim=()` reduces every axis.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let axes = norm_axes(self, axes);
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::reduce(ReduceOp::Sum, self, &axes, keepdim) {
            let x = self.clone();
            return Tensor::from_op(d, Op::Sum { x, axes, keepdim });
        }
        let out = fold_axes(self, &axes, 0.0, |a, b| a + b);
        let out = out
            .into_shape_with_order(IxDyn(&reduced_shape(self.shape(), &axes, keepdim)))
            .expect("shape");
        Tensor::from_op(
            out,
            Op::Sum {
                x: self.clone(),
                axes,
                keepdim,
            },
        )
    }

    /// Sum of all elements, as a 0-dimensional tensor.
    pub fn sum_all(&self) -> Tensor {
        let all: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&all, false)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let n: usize = norm_axes(self, axes)
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        self.sum(axes, keepdim).mul_scalar(1.0 / n as f32)
    }

    /// Mean of all elements, as a 0-dimensional tensor.
    pub fn mean_all(&self) -> Tensor {
        self.sum_all().mul_scalar(1.0 / self.numel() as f32)
    }

    /// Variance over `axes`: Σ(x − x̄)² / (n − 1) when `unbiased` (PyTorch's default for
    /// `torch.var`), / n otherwise (what `InstanceNorm2d` uses).
    pub fn var(&self, axes: &[isize], unbiased: bool, keepdim: bool) -> Tensor {
        let n: usize = norm_axes(self, axes)
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        let centred = self.sub(&self.mean(axes, true));
        // n − 1 < 1 gives 0/0 = NaN for one element (and for none), as torch.var does.
        let denom = if unbiased {
            (n as f32 - 1.0).max(0.0)
        } else {
            n as f32
        };
        centred.square().sum(axes, keepdim).mul_scalar(1.0 / denom)
    }

    /// Maximum over `axes`. Where several elements share the maximum the gradient is split among
    /// them equally, and a NaN among the elements gives NaN (both as `torch.amax`). Over an empty
    /// axis it gives −∞, the identity of max (`torch.amax` raises), which lets `logsumexp` of
    /// nothing be −∞ as in PyTorch.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let axes = norm_axes(self, axes);
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::reduce(ReduceOp::Max, self, &axes, keepdim) {
            let x = self.clone();
            return Tensor::from_op(d, Op::Max { x, axes, keepdim });
        }
        let out = fold_axes(self, &axes, f32::NEG_INFINITY, super::binary::nan_max);
        let out = out
            .into_shape_with_order(IxDyn(&reduced_shape(self.shape(), &axes, keepdim)))
            .expect("shape");
        Tensor::from_op(
            out,
            Op::Max {
                x: self.clone(),
                axes,
                keepdim,
            },
        )
    }

    /// log Σ exp(x) over `axes`, computed as m + log Σ exp(x − m) with m the (detached) maximum,
    /// so that it neither overflows nor underflows. Where the maximum is infinite, m = 0 instead,
    /// as `torch.logsumexp` does: all −∞ gives −∞ and a +∞ gives +∞, where x − m would be NaN.
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let m = self.max(axes, true).detach();
        let finite = m.abs().lt_scalar(f32::INFINITY); // false for ±∞ and for NaN, which stays NaN
        let m = Tensor::where_(&finite, &m, &m.zeros_like());
        let out = self.sub(&m).exp().sum(axes, true).log().add(&m);
        if keepdim {
            out
        } else {
            out.reshape(&reduced_shape(self.shape(), &norm_axes(self, axes), false))
        }
    }

    /// Sums a broadcast gradient back to `shape`: over the leading axes `shape` lacks and over the
    /// axes where `shape` has size 1. The adjoint of [`Tensor::broadcast_to`].
    pub fn sum_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        let lead = self.ndim().checked_sub(shape.len()).unwrap_or_else(|| {
            panic!(
                "sum_to: cannot reduce shape {:?} to {:?}",
                self.shape(),
                shape
            )
        });
        let axes: Vec<isize> = (0..self.ndim())
            .filter(|&i| i < lead || (shape[i - lead] == 1 && self.shape()[i] != 1))
            .map(|i| i as isize)
            .collect();
        self.sum(&axes, true).reshape(shape)
    }
}

/// The VJP of a sum: the gradient is copied to every summed element.
pub(crate) fn sum_vjp(x: &Tensor, axes: &[usize], keepdim: bool, g: &Tensor) -> Tensor {
    let g = if keepdim {
        g.clone()
    } else {
        g.reshape(&reduced_shape(x.shape(), axes, true))
    };
    g.broadcast_to(x.shape())
}

/// The VJP of a max: the gradient goes to the elements equal to the maximum, split among ties.
pub(crate) fn max_vjp(
    x: &Tensor,
    out: &Tensor,
    axes: &[usize],
    keepdim: bool,
    g: &Tensor,
) -> Tensor {
    let kept = reduced_shape(x.shape(), axes, true);
    let (out, g) = if keepdim {
        (out.detach(), g.clone())
    } else {
        (out.detach().reshape(&kept), g.reshape(&kept))
    };
    let is_max = x.detach().eq(&out);
    let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
    let count = is_max.sum(&ax, true);
    g.mul(&is_max.div(&count))
}
