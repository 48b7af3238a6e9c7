//! Per-plane ops on (N, C, H, W) tensors: instance normalisation, a per-(n, c) affine map and a
//! per-(n, c) inner product. CondInstanceNorm++ is built from these three and a few (N, C) ops.
//!
//! Each is a primitive because a chain of broadcasting tensor ops would pass over the activations
//! several times; here the forward is one pass per plane (two for the statistics), parallel over
//! planes. Their VJPs are written with tensor ops, so that they can be differentiated again; the
//! instance norm's VJP also has a fused kernel, used when no graph is recorded (a first-order
//! training step), which computes the same formula in two passes.

use super::{Op, Tensor, is_grad_enabled};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::sync::Arc;

fn dims4(t: &[usize], what: &str) -> [usize; 4] {
    <[usize; 4]>::try_from(t)
        .unwrap_or_else(|_| panic!("{what}: expected 4-D (N, C, H, W), got {t:?}"))
}

fn data(t: &Tensor) -> Vec<f32> {
    t.storage()
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0
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
        let hw = h * w;
        let x = data(self);
        let mut out = vec![0.0f32; x.len()];
        let mut rstd = vec![0.0f32; n * c];
        out.par_chunks_mut(hw)
            .zip(rstd.par_iter_mut())
            .enumerate()
            .with_min_len(min_planes(hw))
            .for_each(|(pl, (dst, r))| {
                let src = &x[pl * hw..][..hw];
                // Two passes (mean, then centred squares) in f64 accumulators: no cancellation.
                let mean = src.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
                let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / hw as f64;
                let rs = 1.0 / (var + eps as f64).sqrt();
                *r = rs as f32;
                let (mean, rs) = (mean as f32, rs as f32);
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (v - mean) * rs;
                }
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
    if is_grad_enabled() {
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
    let (gs, xh) = (data(g), data(out));
    let mut dx = vec![0.0f32; gs.len()];
    dx.par_chunks_mut(hw)
        .enumerate()
        .with_min_len(min_planes(hw))
        .for_each(|(pl, dst)| {
            let (gp, xp) = (&gs[pl * hw..][..hw], &xh[pl * hw..][..hw]);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for (&gv, &xv) in gp.iter().zip(xp) {
                sg += gv as f64;
                sgx += (gv * xv) as f64;
            }
            let (mg, mgx, r) = ((sg / hw as f64) as f32, (sgx / hw as f64) as f32, rstd[pl]);
            for ((d, &gv), &xv) in dst.iter_mut().zip(gp).zip(xp) {
                *d = r * (gv - mg - xv * mgx);
            }
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
        let hw = h * w;
        let (x, av) = (data(self), data(a));
        let bv = b.map(data);
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(min_planes(hw))
            .for_each(|(pl, dst)| {
                let (s, t) = (av[pl], bv.as_ref().map_or(0.0, |b| b[pl]));
                for (d, &v) in dst.iter_mut().zip(&x[pl * hw..][..hw]) {
                    *d = v * s + t;
                }
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
        let hw = h * w;
        let (x, y) = (data(self), data(other));
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
