//! Movement ops: they rearrange or select elements without arithmetic. Each VJP is the adjoint
//! movement (reshape ↔ reshape, permute ↔ inverse permute, narrow ↔ pad, index_select ↔ index_add).

use super::{Op, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use std::sync::Arc;

/// The shape of `xs` joined along `axis`. Panics, naming the shapes, if they disagree off it.
#[cfg(feature = "vulkan")]
fn concat_shape(xs: &[Tensor], axis: usize) -> Vec<usize> {
    let mut shape = xs[0].shape().to_vec();
    shape[axis] = 0;
    for x in xs {
        let mut s = x.shape().to_vec();
        let ok = s.len() == shape.len() && {
            s[axis] = 0;
            s == shape
        };
        if !ok {
            let shapes: Vec<_> = xs.iter().map(|x| x.shape().to_vec()).collect();
            panic!("concat: shapes {shapes:?} do not agree off axis {axis}")
        }
    }
    shape[axis] = xs.iter().map(|x| x.shape()[axis]).sum();
    shape
}

/// The permutation that undoes `perm`.
pub(crate) fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

impl Tensor {
    /// The same elements (row-major order) in a new shape. Shares memory when the data is
    /// contiguous. Panics if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            self.numel(),
            "reshape: cannot view shape {:?} as {:?}",
            self.shape(),
            shape
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::reshape(self, shape) {
            return Tensor::from_op(d, Op::Reshape(self.clone()));
        }
        let data = self.storage();
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().into_owned().into_shared()
        };
        let out = data
            .into_shape_with_order(IxDyn(shape))
            .expect("contiguous reshape");
        Tensor::from_op(out, Op::Reshape(self.clone()))
    }

    /// Flattens all axes from `start` on into one: (N, C, H, W) → (N, C·H·W) for `start = 1`.
    pub fn flatten_from(&self, start: usize) -> Tensor {
        let mut shape = self.shape()[..start].to_vec();
        shape.push(self.shape()[start..].iter().product());
        self.reshape(&shape)
    }

    /// Inserts an axis of size 1 at `axis` (0 ≤ axis ≤ ndim).
    pub fn unsqueeze(&self, axis: usize) -> Tensor {
        let mut shape = self.shape().to_vec();
        assert!(
            axis <= shape.len(),
            "unsqueeze: axis {axis} out of range for shape {shape:?}"
        );
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Removes an axis of size 1.
    pub fn squeeze(&self, axis: isize) -> Tensor {
        let a = self.axis(axis);
        assert_eq!(
            self.shape()[a],
            1,
            "squeeze: axis {a} of shape {:?} is not 1",
            self.shape()
        );
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape(&shape)
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`. Costs nothing: the result is a
    /// strided view of the same memory.
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        assert!(
            sorted == (0..self.ndim()).collect::<Vec<_>>(),
            "permute: {perm:?} is not a permutation of the axes of shape {:?}",
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::permute(self, perm) {
            return Tensor::from_op(d, Op::Permute(self.clone(), perm.to_vec()));
        }
        let out = self.storage().permuted_axes(IxDyn(perm));
        Tensor::from_op(out, Op::Permute(self.clone(), perm.to_vec()))
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Tensor {
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(self.axis(a), self.axis(b));
        self.permute(&perm)
    }

    /// Swaps the last two axes (the matrix transpose).
    pub fn t(&self) -> Tensor {
        self.transpose(-2, -1)
    }

    /// Repeats the tensor along new leading axes and along its axes of size 1 (NumPy rules).
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        #[cfg(feature = "vulkan")]
        if !self.device().is_cpu() {
            // The CPU path's check and message.
            let ok = super::binary::broadcast_shape(self.shape(), shape, "broadcast_to") == shape;
            assert!(
                ok,
                "broadcast_to: shape {:?} does not broadcast to {:?}",
                self.shape(),
                shape
            );
            if let Some(d) = super::vulkan::broadcast_to(self, shape) {
                return Tensor::from_op(d, Op::BroadcastTo(self.clone()));
            }
        }
        let data = self.storage();
        let view = data.broadcast(IxDyn(shape)).unwrap_or_else(|| {
            panic!(
                "broadcast_to: shape {:?} does not broadcast to {:?}",
                self.shape(),
                shape
            )
        });
        // Common case: the input spans the leading axes and is repeated along trailing ones, e.g.
        // (N, C, 1, 1) → (N, C, H, W). Each input element then fills one contiguous run.
        let lead = shape.len() - self.ndim();
        let padded: Vec<usize> = std::iter::repeat_n(1, lead)
            .chain(self.shape().iter().copied())
            .collect();
        let split = (0..=shape.len())
            .rev()
            .find(|&k| k == 0 || padded[k - 1] != 1 || shape[k - 1] == 1)
            .unwrap_or(0);
        let run: usize = shape[split..].iter().product();
        let out = if lead == 0 && padded[..split] == shape[..split] && data.is_standard_layout() {
            let src = data.as_slice().expect("standard layout");
            let mut v = Vec::with_capacity(src.len() * run);
            for &x in src {
                v.extend(std::iter::repeat_n(x, run));
            }
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
        } else {
            let mut out = ArrayD::zeros(IxDyn(shape));
            out.assign(&view);
            out
        };
        Tensor::from_op(out, Op::BroadcastTo(self.clone()))
    }

    /// `len` entries of `axis` starting at `start` (a view; no copy).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor {
        let a = self.axis(axis);
        assert!(
            start + len <= self.shape()[a],
            "narrow: {start}..{} out of range for axis {a} of shape {:?}",
            start + len,
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::narrow(self, a, start, len) {
            let x = self.clone();
            return Tensor::from_op(d, Op::Narrow { x, axis: a, start });
        }
        let mut data = self.storage();
        data.slice_axis_inplace(Axis(a), Slice::from(start..start + len));
        Tensor::from_op(
            data,
            Op::Narrow {
                x: self.clone(),
                axis: a,
                start,
            },
        )
    }

    /// Pads `axis` with `before` zeros in front and `after` zeros behind.
    pub fn pad_axis(&self, axis: usize, before: usize, after: usize) -> Tensor {
        let mut shape = self.shape().to_vec();
        assert!(
            axis < shape.len(),
            "pad_axis: axis {axis} out of range for shape {shape:?}"
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::pad(self, axis, before, after) {
            let x = self.clone();
            return Tensor::from_op(d, Op::Pad { x, axis, before });
        }
        let len = shape[axis];
        shape[axis] += before + after;
        let mut out = ArrayD::zeros(IxDyn(&shape));
        out.slice_axis_mut(Axis(axis), Slice::from(before..before + len))
            .assign(&self.storage());
        Tensor::from_op(
            out,
            Op::Pad {
                x: self.clone(),
                axis,
                before,
            },
        )
    }

    /// Joins tensors along `axis`; all other sizes must agree.
    pub fn concat(xs: &[Tensor], axis: isize) -> Tensor {
        assert!(!xs.is_empty(), "concat: no tensors");
        let a = xs[0].axis(axis);
        #[cfg(feature = "vulkan")]
        if xs.iter().any(|x| !x.device().is_cpu()) {
            let shape = concat_shape(xs, a);
            if let Some(d) = super::vulkan::concat(xs, a, &shape) {
                return Tensor::from_op(d, Op::Concat(xs.to_vec(), a));
            }
        }
        let storages: Vec<_> = xs.iter().map(|x| x.storage()).collect();
        let views: Vec<_> = storages.iter().map(|s| s.view()).collect();
        let out = ndarray::concatenate(Axis(a), &views).unwrap_or_else(|_| {
            let shapes: Vec<_> = xs.iter().map(|x| x.shape().to_vec()).collect();
            panic!("concat: shapes {shapes:?} do not agree off axis {a}")
        });
        Tensor::from_op(out, Op::Concat(xs.to_vec(), a))
    }

    /// Stacks equally shaped tensors along a new axis.
    pub fn stack(xs: &[Tensor], axis: usize) -> Tensor {
        let expanded: Vec<Tensor> = xs.iter().map(|x| x.unsqueeze(axis)).collect();
        Tensor::concat(&expanded, axis as isize)
    }

    /// Picks entries `indices` of `axis`, in that order (repeats allowed): an embedding lookup is
    /// `weight.index_select(0, &labels)`. Panics on an index out of range.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Tensor {
        self.index_select_arc(self.axis(axis), Arc::new(indices.to_vec()))
    }

    pub(crate) fn index_select_arc(&self, axis: usize, indices: Arc<Vec<usize>>) -> Tensor {
        let n = self.shape()[axis];
        if let Some(bad) = indices.iter().find(|&&i| i >= n) {
            panic!(
                "index_select: index {bad} out of range for axis {axis} of shape {:?}",
                self.shape()
            );
        }
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::index_select(self, axis, &indices) {
            let x = self.clone();
            return Tensor::from_op(d, Op::IndexSelect { x, axis, indices });
        }
        let out = self.storage().select(Axis(axis), &indices);
        Tensor::from_op(
            out,
            Op::IndexSelect {
                x: self.clone(),
                axis,
                indices,
            },
        )
    }

    /// A tensor like `self` but with `size` entries along `axis`, zero except that entry
    /// `indices[i]` accumulates `self`'s entry `i`: the adjoint of [`Tensor::index_select`].
    pub fn index_add_into(&self, size: usize, axis: usize, indices: Arc<Vec<usize>>) -> Tensor {
        assert_eq!(
            indices.len(),
            self.shape()[axis],
            "index_add: {} indices for axis {axis} of shape {:?}",
            indices.len(),
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if !self.device().is_cpu() {
            if let Some(bad) = indices.iter().find(|&&i| i >= size) {
                panic!("index_add: index {bad} out of range for size {size}");
            }
            if let Some(d) = super::vulkan::index_add(self, size, axis, &indices) {
                let src = self.clone();
                return Tensor::from_op(d, Op::IndexAdd { src, axis, indices });
            }
        }
        let mut shape = self.shape().to_vec();
        shape[axis] = size;
        let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
        let src = self.storage();
        for (i, &dst) in indices.iter().enumerate() {
            assert!(
                dst < size,
                "index_add: index {dst} out of range for size {size}"
            );
            let mut row = out.index_axis_mut(Axis(axis), dst);
            row += &src.index_axis(Axis(axis), i);
        }
        Tensor::from_op(
            out,
            Op::IndexAdd {
                src: self.clone(),
                axis,
                indices,
            },
        )
    }
}
