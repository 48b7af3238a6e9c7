//! Per-plane ops on (N, C, H, W) tensors: instance normalisation, a per-(n, c) affine map, a
//! per-(n, c) inner product, and CondInstanceNorm++ as one op. The first three and a few (N, C)
//! ops make CondInstanceNorm++ in plain tensor ops (`CondInstanceNorm2dPlus::forward_unfused`),
//! which is its definition; the fused op computes the same in three passes.
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

/// Σ f(a_i, b_i) with 16 partial sums, as [`lane_sum`].
#[inline]
fn lane_sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += f(x, y);
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
        assert!(
            h >= 1 && w >= 1,
            "instance_norm: planes of {h}×{w} have no pixels to normalise (shape {:?})",
            self.shape()
        );
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
        Op::CondInstanceNormPlus { x, e, eps, stats } => {
            let [dx, de] = cin_plus_vjp(x, e, *eps, stats, g);
            vec![need[0].then_some(dx), need[1].then_some(de)]
        }
        _ => unreachable!("norm_vjp called on {}", op.name()),
    }
}

// ANCHOR: cin_plus
impl Tensor {
    /// CondInstanceNorm++ (Song & Ermon 2019, appendix A) as one op, with each sample's
    /// parameters already looked up: `e` (N, 3C) holds γ, α and β side by side, and for x of
    /// shape (N, C, H, W)
    ///
    /// ```text
    /// out_c = γ_c · ( (x_c − μ_c)/√(σ_c² + eps)  +  α_c · (μ_c − m)/√(v + eps) ) + β_c
    /// ```
    ///
    /// with μ_c, σ_c² the mean and biased variance of plane c, and m, v the mean and *unbiased*
    /// variance of the μ_c over the channels of one sample.
    /// [`CondInstanceNorm2dPlus::forward_unfused`](crate::nn::CondInstanceNorm2dPlus::forward_unfused)
    /// is the same layer in plain tensor ops; this op computes it in three passes — the plane
    /// statistics, a few numbers per plane, one affine pass over the planes — and so does its
    /// first-order gradient (`shaders/cin_plus.comp` on a device). With a graph being recorded
    /// the gradient is the formula in tensor ops, so it can be differentiated again.
    ///
    /// # Panics
    /// If x is not 4-D, `e` is not (N, 3C), C < 2 (v needs two channels) or H·W = 0.
    pub fn cond_instance_norm_plus(&self, e: &Tensor, eps: f32) -> Tensor {
        let [n, c, h, w] = dims4(self.shape(), "cond_instance_norm_plus");
        assert_eq!(
            e.shape(),
            &[n, 3 * c],
            "cond_instance_norm_plus: parameters of shape {:?} for input {:?} (want (N, 3C))",
            e.shape(),
            self.shape()
        );
        assert!(
            c >= 2 && h * w >= 1,
            "cond_instance_norm_plus: input {:?}: the variance across channels needs 2 channels, \
             and a plane's mean at least one pixel",
            self.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some((y, stats)) = super::vulkan::cond_instance_norm_plus(self, e, eps) {
            let (x, e, stats) = (self.clone(), e.clone(), Tensor::make(stats, None, false));
            return Tensor::from_op(y, Op::CondInstanceNormPlus { x, e, eps, stats });
        }
        let hw = h * w;
        let xs = self.storage();
        let x = contiguous(&xs);
        let stats = plane_stats(&x, hw);
        let est = e.storage();
        let coef = cin_plus_coefficients(&stats, &contiguous(&est), c, eps);
        let out = super::filled(x.len(), |out| {
            out.par_chunks_mut(hw)
                .enumerate()
                .with_min_len(min_planes(hw))
                .for_each(|(pl, dst)| {
                    let [mu, a, b] = coef[pl];
                    for (d, &v) in dst.iter_mut().zip(&x[pl * hw..][..hw]) {
                        d.write((v - mu) * a + b);
                    }
                });
        });
        let stats = Tensor::from_vec(stats, &[n, c, 2]);
        Tensor::from_op(
            ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), out).expect("shape"),
            Op::CondInstanceNormPlus {
                x: self.clone(),
                e: e.clone(),
                eps,
                stats,
            },
        )
    }
}

// ANCHOR_END: cin_plus

/// Each plane's mean and biased variance, two passes (no cancellation): `[μ, σ²]` per plane.
fn plane_stats(x: &[f32], hw: usize) -> Vec<f32> {
    let mut stats = vec![0.0f32; x.len() / hw * 2];
    stats
        .par_chunks_mut(2)
        .enumerate()
        .with_min_len(min_planes(hw))
        .for_each(|(pl, s)| {
            let src = &x[pl * hw..][..hw];
            let mean = lane_sum(src, |v| v) / hw as f32;
            s[0] = mean;
            s[1] = lane_sum(src, |v| (v - mean) * (v - mean)) / hw as f32;
        });
    stats
}

/// For one sample's plane means μ (C of them): z_c = (μ_c − m)/s, with m their mean and
/// s = √(v + eps), v their unbiased variance (two passes, in f64). Returns s.
fn standardise_across_channels(mu: impl Fn(usize) -> f32, z: &mut [f32], eps: f32) -> f32 {
    let c = z.len();
    let m = (0..c).map(|i| mu(i) as f64).sum::<f64>() / c as f64;
    let v = (0..c).map(|i| (mu(i) as f64 - m).powi(2)).sum::<f64>() / (c - 1) as f64;
    let s = (v + eps as f64).sqrt();
    for (i, zi) in z.iter_mut().enumerate() {
        *zi = ((mu(i) as f64 - m) / s) as f32;
    }
    s as f32
}

// ANCHOR: cin_plus_coefficients
/// The forward's numbers per plane, `[μ, a, b]` with out = (x − μ)·a + b: a = γ·r and
/// b = γ·α·z + β, where r = 1/√(σ² + eps) and z the standardised plane mean.
fn cin_plus_coefficients(stats: &[f32], e: &[f32], c: usize, eps: f32) -> Vec<[f32; 3]> {
    let mut coef = vec![[0.0; 3]; stats.len() / 2];
    let mut z = vec![0.0; c];
    for (i, (co, e)) in coef.chunks_mut(c).zip(e.chunks(3 * c)).enumerate() {
        let st = &stats[2 * c * i..][..2 * c];
        standardise_across_channels(|k| st[2 * k], &mut z, eps);
        for k in 0..c {
            let (gamma, alpha, beta) = (e[k], e[c + k], e[2 * c + k]);
            let r = 1.0 / (st[2 * k + 1] + eps).sqrt();
            co[k] = [st[2 * k], gamma * r, gamma * alpha * z[k] + beta];
        }
    }
    coef
}

// ANCHOR_END: cin_plus_coefficients

// ANCHOR: cin_plus_backward
/// The first-order VJP of [`Tensor::cond_instance_norm_plus`], per sample, from each plane's
/// statistics and the sums S₁ = Σ ḡ, S₂ = Σ ḡ·x̂ over its n = H·W pixels (x̂ = (x − μ)·r, the
/// plane normalised). With u_c = γ_c·α_c·S₁_c, the gradient reaching z:
///
/// ```text
/// ∂β = S₁    ∂γ = S₂ + α·z·S₁    ∂α = γ·z·S₁
/// ∂μ_c = (u_c − mean(u) − z_c · Σ_k u_k z_k / (C − 1)) / s            (through z)
/// ∂x = γ·r·(ḡ − S₁/n − x̂·S₂/n) + ∂μ_c/n                               (instance norm + z)
///    = p·ḡ + q·(x − μ) + t,  p = γr,  q = −γr²·S₂/n,  t = −γr·S₁/n + ∂μ_c/n
/// ```
///
/// Fills `de` (N, 3C) and returns `[μ, p, q, t]` per plane.
fn cin_plus_backward_coefficients(
    stats: &[f32],
    sums: &[f32],
    e: &[f32],
    c: usize,
    hw: usize,
    eps: f32,
    de: &mut [f32],
) -> Vec<[f32; 4]> {
    let mut coef = vec![[0.0; 4]; stats.len() / 2];
    let (mut z, mut u) = (vec![0.0; c], vec![0.0f32; c]);
    let n = hw as f32; // pixels per plane
    for (i, ((co, e), de)) in coef
        .chunks_mut(c)
        .zip(e.chunks(3 * c))
        .zip(de.chunks_mut(3 * c))
        .enumerate()
    {
        let (st, sm) = (&stats[2 * c * i..][..2 * c], &sums[2 * c * i..][..2 * c]);
        let s = standardise_across_channels(|k| st[2 * k], &mut z, eps);
        for k in 0..c {
            u[k] = e[k] * e[c + k] * sm[2 * k];
        }
        let mean_u = u.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let uz = u.iter().zip(&z).map(|(&a, &b)| (a * b) as f64).sum::<f64>() / (c - 1) as f64;
        for k in 0..c {
            let (gamma, alpha) = (e[k], e[c + k]);
            let (s1, s2) = (sm[2 * k], sm[2 * k + 1]);
            de[k] = s2 + alpha * z[k] * s1;
            de[c + k] = gamma * z[k] * s1;
            de[2 * c + k] = s1;
            let dmu = ((u[k] as f64 - mean_u - z[k] as f64 * uz) / s as f64) as f32;
            let r = 1.0 / (st[2 * k + 1] + eps).sqrt();
            let p = gamma * r;
            co[k] = [st[2 * k], p, -p * r * s2 / n, (dmu - p * s1) / n];
        }
    }
    coef
}

// ANCHOR_END: cin_plus_backward

/// The VJP of [`Tensor::cond_instance_norm_plus`] with respect to x and e.
fn cin_plus_vjp(x: &Tensor, e: &Tensor, eps: f32, stats: &Tensor, g: &Tensor) -> [Tensor; 2] {
    if is_grad_enabled() {
        return cin_plus_vjp_graph(x, e, eps, g);
    }
    #[cfg(feature = "vulkan")]
    if let Some((dx, de)) = super::vulkan::cond_instance_norm_plus_backward(x, e, stats, g, eps) {
        return [Tensor::make(dx, None, false), Tensor::make(de, None, false)];
    }
    let [n, c, h, w] = dims4(x.shape(), "cond_instance_norm_plus");
    let hw = h * w;
    let (xst, gst, sst, est) = (x.storage(), g.storage(), stats.storage(), e.storage());
    let (xs, gs, st) = (contiguous(&xst), contiguous(&gst), contiguous(&sst));
    // Pass 1: S₁ = Σ ḡ and S₂ = Σ ḡ·x̂ over each plane.
    let mut sums = vec![0.0f32; n * c * 2];
    sums.par_chunks_mut(2)
        .enumerate()
        .with_min_len(min_planes(hw))
        .for_each(|(pl, s)| {
            let (gp, xp) = (&gs[pl * hw..][..hw], &xs[pl * hw..][..hw]);
            let (mu, r) = (st[2 * pl], 1.0 / (st[2 * pl + 1] + eps).sqrt());
            s[0] = lane_sum(gp, |v| v);
            s[1] = lane_sum_zip(gp, xp, |gv, xv| gv * (xv - mu)) * r;
        });
    // The numbers per plane and ∂e, then pass 2: ∂x = p·ḡ + q·(x − μ) + t.
    let mut de = vec![0.0f32; n * 3 * c];
    let coef = cin_plus_backward_coefficients(&st, &sums, &contiguous(&est), c, hw, eps, &mut de);
    let dx = super::filled(xs.len(), |dx| {
        dx.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(min_planes(hw))
            .for_each(|(pl, dst)| {
                let [mu, p, q, t] = coef[pl];
                let (gp, xp) = (&gs[pl * hw..][..hw], &xs[pl * hw..][..hw]);
                for ((d, &gv), &xv) in dst.iter_mut().zip(gp).zip(xp) {
                    d.write(p * gv + q * (xv - mu) + t);
                }
            });
    });
    [
        Tensor::from_array(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("shape")),
        Tensor::from_vec(de, &[n, 3 * c]),
    ]
}

/// The same VJP in tensor ops, for a graph being recorded (`create_graph`): every quantity is
/// recomputed from x and e, so the second derivative sees how it depends on them.
fn cin_plus_vjp_graph(x: &Tensor, e: &Tensor, eps: f32, g: &Tensor) -> [Tensor; 2] {
    let [n, c, h, w] = dims4(x.shape(), "cond_instance_norm_plus");
    let (gamma, alpha) = (e.narrow(1, 0, c), e.narrow(1, c, c));
    let mu = x.mean(&[2, 3], false);
    let s = mu.var(&[1], true, true).add_scalar(eps).sqrt();
    let z = mu.sub(&mu.mean(&[1], true)).div(&s);
    let xh = x.instance_norm(eps);
    let s1 = g.sum(&[2, 3], false);
    let s2 = g.channel_dot(&xh);
    let dgamma = s2.add(&alpha.mul(&z).mul(&s1));
    let dalpha = gamma.mul(&z).mul(&s1);
    let u = gamma.mul(&alpha).mul(&s1);
    let uz = u.mul(&z).sum(&[1], true).div_scalar((c - 1) as f32);
    let dmu = u.sub(&u.mean(&[1], true)).sub(&z.mul(&uz)).div(&s);
    let dx = instance_norm_vjp(x, &xh, eps, &[], &g.channel_affine(&gamma, None));
    let dx = dx.add(&dmu.div_scalar((h * w) as f32).reshape(&[n, c, 1, 1]));
    [dx, Tensor::concat(&[dgamma, dalpha, s1], 1)]
}
