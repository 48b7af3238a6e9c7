//! Per-plane ops on (N, C, H, W) tensors: instance normalisation, a per-(n, c) affine map and a
//! per-(n, c) inner product. CondInstanceNorm++ is built from these three and a few (N, C) ops.
//!
//! Each is a primitive because a chain of broadcasting tensor ops would pass over the activations
//! several times; here the forward is one pass per plane (two for the statistics), parallel over
//! planes. Their VJPs are written with tensor ops, so that they can be differentiated again; the
//! instance norm's VJP also has a fused kernel, used when no graph is recorded (a first-order
//! training step), which computes the same formula in two passes — on the CPU, and on a Vulkan
//! device as one dispatch (`shaders/instance_norm.comp`).

use super::{Op, Tensor, contiguous, is_grad_enabled};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::sync::Arc;

fn dims4(t: &[usize], what: &str) -> [usize; 4] {
    <[usize; 4]>::try_from(t)
        .unwrap_or_else(|_| panic!("{what}: expected 4-D (N, C, H, W), got {t:?}"))
}

/// Σ f(v) over a slice with 16 independent partial sums: the compiler vectorises it (a single
/// running sum cannot be reordered), and the partial sums make the rounding error grow like
/// n/16 rather than n.
#[inline]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Planes per rayon task: at least ~16k elements, so that small tensors do not pay for threads.
fn min_planes(hw: usize) -> usize {
    (16384 / hw.max(1)).max(1)
}

// ANCHOR: instance_norm
impl Tensor {
    /// Instance normalisation without affine parameters, `nn.InstanceNorm2d(affine=False)`: each
    /// (n, c) plane becomes (x − μ)/√(σ² + eps) with its own mean μ and *biased* variance σ².
    pub fn instance_norm(&self, eps: f32) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "instance_norm");
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::instance_norm(self, eps) {
            // The device's VJP uses the tensor-op formula below, which needs no saved 1/σ.
            let (x, rstd) = (self.clone(), Arc::new(Vec::new()));
            return Tensor::from_op(d, Op::InstanceNorm { x, eps, rstd });
        }
        let hw = h * w;
        let xs = self.storage();
        let x = contiguous(&xs);
        let mut rstd = vec![0.0f32; n * c];
        let out = super::filled(x.len(), |out| {
            out.par_chunks_mut(hw)
                .zip(rstd.par_iter_mut())
                .enumerate()
                .with_min_len(min_planes(hw))
                .for_each(|(pl, (dst, r))| {
                    let src = &x[pl * hw..][..hw];
                    // Two passes (mean, then centred squares): no cancellation.
                    let mean = lane_sum(src, |v| v) / hw as f32;
                    let var = lane_sum(src, |v| (v - mean) * (v - mean)) / hw as f32;
                    let rs = 1.0 / (var + eps).sqrt();
                    *r = rs;
                    for (d, &v) in dst.iter_mut().zip(src) {
                        d.write((v - mean) * rs);
                    }
                });
        });
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), out).expect("shape"),
            Op::InstanceNorm {
                x: self.clone(),
                eps,
                rstd: Arc::new(rstd),
            },
        )
    }
}

/// The VJP of x̂ = (x − μ)·r with r = 1/√(σ² + eps), per plane of m pixels:
/// ∂x = r · (ḡ − mean(ḡ) − x̂ · mean(ḡ ⊙ x̂)).
fn instance_norm_vjp(x: &Tensor, out: &Tensor, eps: f32, rstd: &[f32], g: &Tensor) -> Tensor {
    // On a device, without a graph to record: the fused kernel, which recomputes r from x.
    #[cfg(feature = "vulkan")]
    if !is_grad_enabled()
        && let Some(d) = super::vulkan::instance_norm_backward(x, out, g, eps)
    {
        return Tensor::make(d, None, false);
    }
    if is_grad_enabled() || !x.device().is_cpu() {
        // Recording a graph (create_graph): the formula in tensor ops, with r recomputed from x so
        // that the second derivative sees its dependence on x.
        let r = x.var(&[2, 3], false, true).add_scalar(eps).powf(-0.5);
        let mg = g.mean(&[2, 3], true);
        let mgx = g.mul(out).mean(&[2, 3], true);
        return g.sub(&mg).sub(&out.mul(&mgx)).mul(&r);
    }
    // The same formula fused: two passes over each plane.
    let [n, c, h, w] = dims4(x.shape(), "instance_norm");
    let hw = h * w;
    let (gst, ost) = (g.storage(), out.storage());
    let (gs, xh) = (contiguous(&gst), contiguous(&ost));
    let dx = super::filled(gs.len(), |dx| {
        dx.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(min_planes(hw))
            .for_each(|(pl, dst)| {
                let (gp, xp) = (&gs[pl * hw..][..hw], &xh[pl * hw..][..hw]);
                let mg = lane_sum(gp, |v| v) / hw as f32;
                let mgx = super::fastmath::dot(gp, xp) / hw as f32;
                let r = rstd[pl];
                for ((d, &gv), &xv) in dst.iter_mut().zip(gp).zip(xp) {
                    d.write(r * (gv - mg - xv * mgx));
                }
            });
    });
    Tensor::from_array(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("shape"))
}
// ANCHOR_END: instance_norm

impl Tensor {
    /// y[n, c, i, j] = x[n, c, i, j]·a[n, c] + b[n, c] for x of shape (N, C, H, W) and a, b of
    /// shape (N, C): a per-sample, per-channel affine map in one pass.
    pub fn channel_affine(&self, a: &Tensor, b: Option<&Tensor>) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "channel_affine");
        for t in std::iter::once(a).chain(b) {
            assert_eq!(
                t.shape(),
                &[n, c],
                "channel_affine: coefficients of shape {:?} for input {:?}",
                t.shape(),
                self.shape()
            );
        }
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::channel_affine(self, a, b) {
            let (x, a, b) = (self.clone(), a.clone(), b.cloned());
            return Tensor::from_op(d, Op::ChannelAffine { x, a, b });
        }
        let hw = h * w;
        let (xst, ast) = (self.storage(), a.storage());
        let bst = b.map(|b| b.storage());
        let (x, av) = (contiguous(&xst), contiguous(&ast));
        let bv = bst.as_ref().map(contiguous);
        let out = super::filled(x.len(), |out| {
            out.par_chunks_mut(hw)
                .enumerate()
                .with_min_len(min_planes(hw))
                .for_each(|(pl, dst)| {
                    let (s, t) = (av[pl], bv.as_ref().map_or(0.0, |b| b[pl]));
                    for (d, &v) in dst.iter_mut().zip(&x[pl * hw..][..hw]) {
                        d.write(v * s + t);
                    }
                });
        });
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), out).expect("shape"),
            Op::ChannelAffine {
                x: self.clone(),
                a: a.clone(),
                b: b.cloned(),
            },
        )
    }

    /// The per-plane inner product Σ_{i,j} x[n, c, i, j]·y[n, c, i, j], of shape (N, C).
    pub fn channel_dot(&self, other: &Tensor) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "channel_dot");
        assert_eq!(
            self.shape(),
            other.shape(),
            "channel_dot: shapes {:?} and {:?} differ",
            self.shape(),
            other.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::channel_dot(self, other) {
            return Tensor::from_op(d, Op::ChannelDot(self.clone(), other.clone()));
        }
        let hw = h * w;
        let (xst, yst) = (self.storage(), other.storage());
        let (x, y) = (contiguous(&xst), contiguous(&yst));
        let mut out = vec![0.0f32; n * c];
        out.par_iter_mut()
            .enumerate()
            .with_min_len(min_planes(hw))
            .for_each(|(pl, d)| {
                let (xp, yp) = (&x[pl * hw..][..hw], &y[pl * hw..][..hw]);
                *d = xp
                    .iter()
                    .zip(yp)
                    .map(|(&a, &b)| (a * b) as f64)
                    .sum::<f64>() as f32;
            });
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c]), out).expect("shape"),
            Op::ChannelDot(self.clone(), other.clone()),
        )
    }
}

/// The VJPs of the per-plane ops.
pub(crate) fn norm_vjp(op: &Op, out: &Tensor, g: &Tensor, need: &[bool]) -> Vec<Option<Tensor>> {
    let want = |i: usize, f: &dyn Fn() -> Tensor| if need[i] { Some(f()) } else { None };
    match op {
        Op::InstanceNorm { x, eps, rstd } => {
            vec![want(0, &|| instance_norm_vjp(x, out, *eps, rstd, g))]
        }
        // y = x·a + b: ∂x = ḡ·a, ∂a = Σ_{ij} ḡ·x, ∂b = Σ_{ij} ḡ
        Op::ChannelAffine { x, a, b } => {
            let mut v = vec![
                want(0, &|| g.channel_affine(a, None)),
                want(1, &|| g.channel_dot(x)),
            ];
            if b.is_some() {
                v.push(want(2, &|| g.sum(&[2, 3], false)));
            }
            v
        }
        // y = Σ_{ij} x·z: ∂x = ḡ·z, ∂z = ḡ·x (ḡ of shape (N, C) scales each plane)
        Op::ChannelDot(x, z) => vec![
            want(0, &|| z.channel_affine(g, None)),
            want(1, &|| x.channel_affine(g, None)),
        ],
        _ => unreachable!("norm_vjp called on {}", op.name()),
    }
}
