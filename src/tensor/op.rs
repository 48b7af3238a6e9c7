//! The record of how a tensor was made. One variant per primitive; composite ops (mean, var,
//! logsumexp, stack, …) are built from these and need no entry of their own.

use super::conv::Conv2dConfig;
use super::pool::Pool2dConfig;
use super::{Tensor, UnaryOp};
use std::sync::Arc;

/// A primitive op together with its inputs (and whatever else its VJP needs).
// ANCHOR: op_enum
pub(crate) enum Op {
    /// Elementwise function of one tensor; for a softplus, also its derivative σ(x), which the
    /// forward pass computes on the way (see `unary::softplus_and_sigmoid`).
    Unary(UnaryOp, Tensor, Option<Tensor>),
    /// `g ⊙ f′(x)` for an activation f with `out = f(x)`: the VJP of `Unary(f, x)` as one op,
    /// recorded when a backward pass builds a graph (see `unary::activation_grad`). `out` and
    /// `dfdx` (f′(x), when the forward pass saved it) are kept for the derivatives; they are not
    /// inputs.
    ActivationGrad {
        kind: UnaryOp,
        x: Tensor,
        out: Tensor,
        g: Tensor,
        dfdx: Option<Tensor>,
    },
    /// `a + b` with broadcasting.
    Add(Tensor, Tensor),
    /// `a - b` with broadcasting.
    Sub(Tensor, Tensor),
    /// `a * b` with broadcasting.
    Mul(Tensor, Tensor),
    /// `a / b` with broadcasting.
    Div(Tensor, Tensor),
    /// Elementwise maximum (`min = false`) or minimum (`min = true`).
    Extremum { a: Tensor, b: Tensor, min: bool },
    /// `mask ? a : b`; the mask carries no gradient.
    Where { mask: Tensor, a: Tensor, b: Tensor },
    /// Sum over `axes` (sorted, unique), keeping them as size 1 when `keepdim`.
    Sum {
        x: Tensor,
        axes: Vec<usize>,
        keepdim: bool,
    },
    /// Maximum over `axes`; ties share the gradient equally (like `torch.amax`).
    Max {
        x: Tensor,
        axes: Vec<usize>,
        keepdim: bool,
    },
    /// Same data, new shape.
    Reshape(Tensor),
    /// Axes reordered: output axis `i` is input axis `perm[i]`.
    Permute(Tensor, Vec<usize>),
    /// Repeated along new leading axes and along axes of size 1.
    BroadcastTo(Tensor),
    /// `len` entries of `axis` starting at `start`.
    Narrow {
        x: Tensor,
        axis: usize,
        start: usize,
    },
    /// Zeros added before and after along `axis`.
    Pad {
        x: Tensor,
        axis: usize,
        before: usize,
    },
    /// Tensors joined along `axis`.
    Concat(Vec<Tensor>, usize),
    /// Rows `indices` of `axis` (an embedding lookup when `axis = 0`).
    IndexSelect {
        x: Tensor,
        axis: usize,
        indices: Arc<Vec<usize>>,
    },
    /// `zeros(shape).index_add(axis, indices, src)`: the VJP of `IndexSelect`.
    IndexAdd {
        src: Tensor,
        axis: usize,
        indices: Arc<Vec<usize>>,
    },
    /// Matrix product of the last two axes, broadcasting the leading ones.
    Matmul(Tensor, Tensor),
    /// The affine map x·wᵀ + b of a linear layer: x (N, in), w (out, in), b (out).
    Linear {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
    },
    /// 2-D convolution of x (N, C, H, W) with w (O, C, kh, kw) and an optional bias (O).
    Conv2d {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        cfg: Conv2dConfig,
    },
    /// The transposed convolution: ∂L/∂x of a convolution from ∂L/∂y (`gy`) and the weight (the
    /// input size is the output's shape).
    Conv2dInputGrad {
        gy: Tensor,
        w: Tensor,
        cfg: Conv2dConfig,
    },
    /// ∂L/∂w of a convolution from its input x and ∂L/∂y (`gy`).
    Conv2dWeightGrad {
        x: Tensor,
        gy: Tensor,
        cfg: Conv2dConfig,
    },
    /// Average pooling with `count_include_pad`.
    AvgPool2d { x: Tensor, cfg: Pool2dConfig },
    /// The adjoint of average pooling (back to the output's spatial size).
    AvgPool2dAdjoint { g: Tensor, cfg: Pool2dConfig },
    /// Bilinear resizing with aligned corners (the output size is the output's shape).
    ResizeBilinear { x: Tensor },
    /// The adjoint of bilinear resizing (back to the output's spatial size).
    ResizeBilinearAdjoint { g: Tensor },
    /// Per-plane normalisation (x − μ)/√(σ² + eps); `rstd` holds 1/√(σ² + eps) per plane.
    InstanceNorm {
        x: Tensor,
        eps: f32,
        rstd: Arc<Vec<f32>>,
    },
    /// x·a + b with a, b of shape (N, C) applied to the planes of x (N, C, H, W).
    ChannelAffine {
        x: Tensor,
        a: Tensor,
        b: Option<Tensor>,
    },
    /// The per-plane inner product of two (N, C, H, W) tensors, of shape (N, C).
    ChannelDot(Tensor, Tensor),
    /// CondInstanceNorm++ with per-sample parameters `e` = [γ | α | β] of shape (N, 3C);
    /// `stats` (N, C, 2) holds each plane's mean and biased variance, kept for the backward.
    CondInstanceNormPlus {
        x: Tensor,
        e: Tensor,
        eps: f32,
        stats: Tensor,
    },
}
// ANCHOR_END: op_enum

/// The inputs of one op (see [`Op::inputs`]): up to three, or a list (a concatenation).
pub(crate) struct Inputs<'a> {
    few: [Option<&'a Tensor>; 3],
    many: &'a [Tensor],
}

impl<'a> Inputs<'a> {
    /// The inputs in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Tensor> + '_ {
        self.few.iter().flatten().copied().chain(self.many)
    }
}

impl Op {
    /// The tensors this op read, in the order of [`Op::vjp`]'s results. Walks over the graph ask
    /// every node for its inputs, several times per backward pass, so the answer borrows them
    /// and allocates nothing.
    pub(crate) fn inputs(&self) -> Inputs<'_> {
        use Op::*;
        fn few<'a>(ts: &[&'a Tensor]) -> [Option<&'a Tensor>; 3] {
            let mut f = [None; 3];
            for (slot, t) in f.iter_mut().zip(ts) {
                *slot = Some(*t);
            }
            f
        }
        let inputs = match self {
            Unary(_, x, _) | Reshape(x) | Permute(x, _) | BroadcastTo(x) => few(&[x]),
            ActivationGrad { x, g, .. } => few(&[x, g]),
            Add(a, b) | Sub(a, b) | Mul(a, b) | Div(a, b) | Matmul(a, b) => few(&[a, b]),
            Extremum { a, b, .. } => few(&[a, b]),
            Where { mask, a, b } => few(&[mask, a, b]),
            Sum { x, .. }
            | Max { x, .. }
            | Narrow { x, .. }
            | Pad { x, .. }
            | IndexSelect { x, .. } => few(&[x]),
            IndexAdd { src, .. } => few(&[src]),
            Concat(xs, _) => {
                return Inputs {
                    few: [None; 3],
                    many: xs,
                };
            }
            Conv2d { x, w, b, .. } | Linear { x, w, b } => [Some(x), Some(w), b.as_ref()],
            Conv2dInputGrad { gy, w, .. } => few(&[gy, w]),
            Conv2dWeightGrad { x, gy, .. } => few(&[x, gy]),
            AvgPool2d { x, .. } | ResizeBilinear { x } | InstanceNorm { x, .. } => few(&[x]),
            AvgPool2dAdjoint { g, .. } | ResizeBilinearAdjoint { g, .. } => few(&[g]),
            ChannelAffine { x, a, b } => [Some(x), Some(a), b.as_ref()],
            ChannelDot(a, b) | CondInstanceNormPlus { x: a, e: b, .. } => few(&[a, b]),
        };
        Inputs {
            few: inputs,
            many: &[],
        }
    }

    /// A short name for debugging output.
    pub(crate) fn name(&self) -> &'static str {
        use Op::*;
        match self {
            Unary(u, ..) => u.name(),
            ActivationGrad { .. } => "activation_grad",
            Add(..) => "add",
            Sub(..) => "sub",
            Mul(..) => "mul",
            Div(..) => "div",
            Extremum { min: false, .. } => "maximum",
            Extremum { min: true, .. } => "minimum",
            Where { .. } => "where",
            Sum { .. } => "sum",
            Max { .. } => "max",
            Reshape(_) => "reshape",
            Permute(..) => "permute",
            BroadcastTo(_) => "broadcast_to",
            Narrow { .. } => "narrow",
            Pad { .. } => "pad",
            Concat(..) => "concat",
            IndexSelect { .. } => "index_select",
            IndexAdd { .. } => "index_add",
            Matmul(..) => "matmul",
            Linear { .. } => "linear",
            Conv2d { .. } => "conv2d",
            Conv2dInputGrad { .. } => "conv2d_input_grad",
            Conv2dWeightGrad { .. } => "conv2d_weight_grad",
            AvgPool2d { .. } => "avg_pool2d",
            AvgPool2dAdjoint { .. } => "avg_pool2d_adjoint",
            ResizeBilinear { .. } => "resize_bilinear",
            ResizeBilinearAdjoint { .. } => "resize_bilinear_adjoint",
            InstanceNorm { .. } => "instance_norm",
            ChannelAffine { .. } => "channel_affine",
            ChannelDot(..) => "channel_dot",
            CondInstanceNormPlus { .. } => "cond_instance_norm_plus",
        }
    }

    /// The vector-Jacobian product: given the output `out` of this op and the gradient `g` of some
    /// scalar with respect to it, the gradient with respect to each input (`None` where `need` says
    /// the input's gradient is not wanted). Every VJP is written with tensor ops, so when the
    /// backward pass records a graph it can be differentiated again.
    pub(crate) fn vjp(&self, out: &Tensor, g: &Tensor, need: &[bool]) -> Vec<Option<Tensor>> {
        use Op::*;
        // ANCHOR: vjp_arms
        let want = |i: usize, f: &dyn Fn() -> Tensor| if need[i] { Some(f()) } else { None };
        match self {
            Unary(kind, x, dfdx) => vec![want(0, &|| {
                super::unary::vjp(*kind, x, out, g, dfdx.as_ref())
            })],
            Add(a, b) => vec![
                want(0, &|| g.sum_to(a.shape())),
                want(1, &|| g.sum_to(b.shape())),
            ],
            Sub(a, b) => vec![
                want(0, &|| g.sum_to(a.shape())),
                want(1, &|| g.neg().sum_to(b.shape())),
            ],
            Mul(a, b) => vec![
                want(0, &|| g.mul(b).sum_to(a.shape())),
                want(1, &|| g.mul(a).sum_to(b.shape())),
            ],
            Div(a, b) => {
                vec![
                    want(0, &|| g.div(b).sum_to(a.shape())),
                    want(1, &|| g.mul(out).div(b).neg().sum_to(b.shape())),
                ]
            }
            Extremum { a, b, min } => {
                let (ga, gb) = super::binary::extremum_vjp(a, b, *min, g, need);
                vec![ga, gb]
            }
            // ANCHOR_END: vjp_arms
            Where { mask, a, b } => vec![
                None,
                want(1, &|| {
                    Tensor::where_(mask, g, &Tensor::scalar(0.0)).sum_to(a.shape())
                }),
                want(2, &|| {
                    Tensor::where_(mask, &Tensor::scalar(0.0), g).sum_to(b.shape())
                }),
            ],
            ActivationGrad {
                kind,
                x,
                out: y,
                g: gy,
                dfdx,
            } => super::unary::activation_grad_vjp(*kind, (x, y, gy, dfdx.as_ref()), g, need),
            Sum { x, axes, keepdim } => {
                vec![want(0, &|| super::reduce::sum_vjp(x, axes, *keepdim, g))]
            }
            Max { x, axes, keepdim } => vec![want(0, &|| {
                super::reduce::max_vjp(x, out, axes, *keepdim, g)
            })],
            Reshape(x) => vec![want(0, &|| g.reshape(x.shape()))],
            Permute(_, perm) => vec![want(0, &|| {
                g.permute(&super::shape::inverse_permutation(perm))
            })],
            BroadcastTo(x) => vec![want(0, &|| g.sum_to(x.shape()))],
            Narrow { x, axis, start } => {
                vec![want(0, &|| {
                    g.pad_axis(*axis, *start, x.shape()[*axis] - start - g.shape()[*axis])
                })]
            }
            Pad { x, axis, before } => vec![want(0, &|| {
                g.narrow(*axis as isize, *before, x.shape()[*axis])
            })],
            Concat(xs, axis) => {
                let mut start = 0;
                xs.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let len = x.shape()[*axis];
                        let gi = want(i, &|| g.narrow(*axis as isize, start, len));
                        start += len;
                        gi
                    })
                    .collect()
            }
            IndexSelect { x, axis, indices } => {
                vec![want(0, &|| {
                    g.index_add_into(x.shape()[*axis], *axis, indices.clone())
                })]
            }
            IndexAdd { axis, indices, .. } => {
                vec![want(0, &|| g.index_select_arc(*axis, indices.clone()))]
            }
            Matmul(a, b) => {
                let (ga, gb) = super::matmul::vjp(a, b, g, need);
                vec![ga, gb]
            }
            Linear { x, w, b } => super::matmul::linear_vjp(x, w, b.as_ref(), g, need),
            Conv2d { .. } | Conv2dInputGrad { .. } | Conv2dWeightGrad { .. } => {
                super::conv::conv2d_vjp(self, g, need)
            }
            AvgPool2d { .. }
            | AvgPool2dAdjoint { .. }
            | ResizeBilinear { .. }
            | ResizeBilinearAdjoint { .. } => vec![want(0, &|| super::pool::pool_vjp(self, g))],
            InstanceNorm { .. }
            | ChannelAffine { .. }
            | ChannelDot(..)
            | CondInstanceNormPlus { .. } => super::norm::norm_vjp(self, out, g, need),
        }
    }
}
